// Numbers, money, durations, times and CSV for the dashboard. Pure functions, no DOM.

const COUNT = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const SHORT = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** 1234567 → "1,234,567" (the reader's own separators). */
export function count(n) {
  return COUNT.format(n ?? 0);
}

/** 1234567 → "1.2M", 12345 → "12K", 999 → "999". */
export function compact(n) {
  return Math.abs(n ?? 0) < 1000 ? count(n) : SHORT.format(n);
}

/** Dollars: cents above $1, four significant digits below it, "$1.2M" when `short` and large. */
export function usd(n, short = false) {
  const value = n ?? 0;
  const abs = Math.abs(value);
  if (abs === 0) return "$0.00";
  if (short && abs >= 10000) return "$" + SHORT.format(value);
  if (abs >= 1) {
    return "$" + value.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  return "$" + value.toLocaleString(undefined, { maximumSignificantDigits: 4, maximumFractionDigits: 8 });
}

/** Milliseconds: "—" for none, "850 ms", "1.25 s". */
export function ms(n) {
  if (n === null || n === undefined) return "—";
  if (n >= 1000) return (n / 1000).toLocaleString(undefined, { maximumFractionDigits: 2 }) + " s";
  return n.toLocaleString(undefined, { maximumFractionDigits: n < 10 ? 1 : 0 }) + " ms";
}

export function percent(part, whole) {
  if (!whole) return "0%";
  const p = (100 * part) / whole;
  return (p > 0 && p < 0.1 ? "<0.1" : p.toLocaleString(undefined, { maximumFractionDigits: 1 })) + "%";
}

/** A UTC time for an axis: "14:30" within a day, "Jan 5" for day buckets or at midnight. */
export function axisTime(iso, daily) {
  const d = new Date(iso);
  const hm = d.toISOString().slice(11, 16);
  return daily || hm === "00:00" ? `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}` : hm;
}

const UNITS = { s: "second", m: "minute", h: "hour", d: "day" };

/** An interval in words: "1m" → "minute", "30m" → "30 minutes", "1d" → "day". */
export function every(interval) {
  const [, n, unit] = /^(\d+)([smhd])$/.exec(interval) || [null, interval, ""];
  if (!unit) return interval;
  return n === "1" ? UNITS[unit] : `${n} ${UNITS[unit]}s`;
}

/** "2025-01-04 14:30 UTC" */
export function utc(iso) {
  return new Date(iso).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function cell(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  // A spreadsheet would run a cell starting with = + - @ as a formula: model names come from callers.
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
  return /[",\r\n]/.test(text) ? '"' + text.replaceAll('"', '""') + '"' : text;
}

/** RFC 4180 text from rows of cells (the first row is the header). */
export function csv(rows) {
  return rows.map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
}
