"""The part of PromQL that deploy/grafana/dashboard.json uses, evaluated over recorded scrapes.

deploy/grafana/render.py draws the dashboard from a real gateway's `/metrics` without a Prometheus
or a Grafana (neither installs here); this module turns each panel's query into numbers. It knows
selectors with `=`, `!=`, `=~`, `!~`; `rate` and `increase` over a range; `sum` and `max` with
`by`; `histogram_quantile`; `/` and `*` between vectors and numbers. Anything else raises
`Unsupported`, and the picture says "n/a" rather than show invented data.

Where it differs from Prometheus, so nobody reads more into the picture: `rate` divides the
increase between the first and last sample in the window by the time between them (Prometheus
also extrapolates to the window's edges), and queries are evaluated at each scrape, not on a step.

A scrape is `(unix time, {labels: value})`, labels a sorted tuple of pairs with `__name__`.
"""

from __future__ import annotations

import json
import math
import re


class Unsupported(ValueError):
    """An expression outside the subset this evaluator implements: the panel says "n/a"."""


TOKEN = re.compile(r'\s*(?:(?P<num>\d+(?:\.\d+)?)(?![\w])|(?P<range>\[[^\]]*\])|(?P<str>"(?:[^"\\]|\\.)*")'
                   r'|(?P<op>=~|!~|!=|=|[(){},/*])|(?P<id>[A-Za-z_:][\w:]*))')
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
AGGREGATIONS = {"sum": sum, "max": max}
COUNTER_FUNCTIONS = ("rate", "increase")


def tokenize(expr: str, variables: dict[str, str]) -> list[tuple[str, str]]:
    expr = re.sub(r"\$(\w+)", lambda m: _variable(m.group(1), variables), expr)
    tokens, pos = [], 0
    while pos < len(expr.rstrip()):
        match = TOKEN.match(expr, pos)
        if not match or match.end() == pos:
            raise Unsupported(f"cannot read {expr[pos:pos + 20]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return tokens


def _variable(name: str, variables: dict[str, str]) -> str:
    if name not in variables:
        raise Unsupported(f"variable ${name}")
    return variables[name]


def seconds(text: str) -> float:
    parts = DURATION.findall(text.strip("[]"))
    if not parts or "".join(a + b for a, b in parts) != text.strip("[]"):
        raise Unsupported(f"range {text}")
    return sum(float(n) * UNITS[u] for n, u in parts)


class Parser:
    """Recursive descent over the tokens; nodes are tuples whose first item names their kind.
    A range (`[5m]`) is read only by rate/increase: anywhere else it is left over, so Unsupported."""

    def __init__(self, expr: str, variables: dict[str, str]) -> None:
        self.tokens, self.pos = tokenize(expr, variables), 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, want: str | None = None, kind: str | None = None) -> str:
        got = self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)
        if (want and got[1] != want) or (kind and got[0] != kind) or got[0] is None:
            raise Unsupported(f"expected {want or kind or 'more'}, got {got[1]!r}")
        self.pos += 1
        return got[1]

    def parse(self) -> tuple:
        node = self.binary()
        if self.pos != len(self.tokens):
            raise Unsupported(f"unexpected {self.peek()!r}")
        return node

    def binary(self, closer: str | None = None) -> tuple:
        node = self.unary()
        while self.peek() in ("/", "*"):
            node = ("binary", self.take(), node, self.unary())
        if closer:
            self.take(closer)
        return node

    def unary(self) -> tuple:
        if self.tokens[self.pos:self.pos + 1] and self.tokens[self.pos][0] == "num":
            return ("num", float(self.take()))
        name = self.take(kind="id")
        if name in AGGREGATIONS:
            by = self.names() if self.peek() == "by" else ()
            self.take("(")
            return ("agg", name, by, self.binary(")"))
        if name in COUNTER_FUNCTIONS:
            self.take("(")
            selector = self.selector(self.take(kind="id"))
            window = seconds(self.take(kind="range"))
            self.take(")")
            return ("counter", name, selector, window)
        if name == "histogram_quantile":
            self.take("(")
            q = float(self.take(kind="num"))
            self.take(",")
            return ("quantile", q, self.binary(")"))
        if self.peek() == "(":
            raise Unsupported(f"function {name}")
        return self.selector(name)

    def names(self) -> tuple[str, ...]:
        self.take("by")
        self.take("(")
        names = [self.take(kind="id")]
        while self.peek() == ",":
            self.take(",")
            names.append(self.take(kind="id"))
        self.take(")")
        return tuple(names)

    def selector(self, name: str) -> tuple:
        matchers = [("__name__", "=", name)]
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                label, op, value = self.take(kind="id"), self.take(kind="op"), self.take(kind="str")
                if op not in ("=", "!=", "=~", "!~"):
                    raise Unsupported(f"matcher {label}{op}{value}")
                matchers.append((label, op, json.loads(value)))
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        return ("select", tuple(matchers))


def matches(labels: tuple, matchers: tuple) -> bool:
    got = dict(labels)
    for label, op, want in matchers:
        value = got.get(label, "")
        hit = value == want if op in ("=", "!=") else re.fullmatch(want, value) is not None
        if hit != (op in ("=", "=~")):
            return False
    return True


def without_name(labels: tuple) -> tuple:
    return tuple(item for item in labels if item[0] != "__name__")


def evaluate(node: tuple, scrapes: list, at: int):
    """The node's value at scrape `at`: a float, or a vector {labels: value}."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "select":
        return {k: v for k, v in scrapes[at][1].items() if matches(k, node[1])}
    if kind == "counter":
        return counter(node, scrapes, at)
    if kind == "agg":
        return aggregate(node[1], node[2], evaluate(node[3], scrapes, at))
    if kind == "quantile":
        return quantiles(node[1], evaluate(node[2], scrapes, at))
    return binary(node[1], evaluate(node[2], scrapes, at), evaluate(node[3], scrapes, at))


def counter(node: tuple, scrapes: list, at: int) -> dict:
    _, fn, selector, window = node
    seen: dict[tuple, list] = {}
    start = at
    while start > 0 and scrapes[start - 1][0] > scrapes[at][0] - window:
        start -= 1
    for t, samples in scrapes[start:at + 1]:
        for k, v in samples.items():
            if matches(k, selector[1]):
                seen.setdefault(without_name(k), []).append((t, v))
    out = {}
    for labels, points in seen.items():
        if len(points) < 2:
            continue
        # A drop means the counter restarted from zero: its new value is all increase.
        grown = sum(b if b < a else b - a for (_, a), (_, b) in zip(points, points[1:], strict=False))
        out[labels] = grown / (points[-1][0] - points[0][0]) if fn == "rate" else grown
    return out


def aggregate(fn: str, by: tuple, vector: dict) -> dict:
    groups: dict[tuple, list] = {}
    for labels, v in vector.items():
        key = tuple((k, val) for k, val in labels if k in by)
        groups.setdefault(key, []).append(v)
    return {key: AGGREGATIONS[fn](values) for key, values in groups.items()}


def quantiles(q: float, vector: dict) -> dict:
    groups: dict[tuple, list] = {}
    for labels, v in vector.items():
        le = dict(labels).get("le")
        if le is not None:
            groups.setdefault(tuple(i for i in labels if i[0] != "le"), []).append((float(le), v))
    out = {}
    for key, buckets in groups.items():
        buckets.sort()
        total = buckets[-1][1]
        if total <= 0 or not math.isinf(buckets[-1][0]):
            continue  # no observations in the window: no point, as in Prometheus
        rank, lower, below = q * total, 0.0, 0.0
        for upper, count in buckets:
            if count >= rank:
                # Inside the +Inf bucket the best answer is the highest finite bound.
                out[key] = lower if math.isinf(upper) else lower + (upper - lower) * (rank - below) / (count - below)
                break
            lower, below = upper, count
    return out


def binary(op: str, left, right):
    apply = (lambda a, b: a * b) if op == "*" else _divide
    if not isinstance(left, dict) and not isinstance(right, dict):
        return apply(left, right)
    if not isinstance(left, dict):
        return {k: apply(left, v) for k, v in right.items()}
    if not isinstance(right, dict):
        return {k: apply(v, right) for k, v in left.items()}
    rhs = {without_name(k): v for k, v in right.items()}  # one-to-one, on every label
    return {without_name(k): apply(v, rhs[without_name(k)]) for k, v in left.items() if without_name(k) in rhs}


def _divide(a: float, b: float) -> float:
    return a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a))


def series(expr: str, legend: str, scrapes: list, variables: dict[str, str]) -> dict[str, list]:
    """{legend: [(t, value), ...]} for one target over every scrape; Unsupported if it cannot."""
    node, out = Parser(expr, variables).parse(), {}
    for at, (t, _) in enumerate(scrapes):
        value = evaluate(node, scrapes, at)
        for labels, v in (value.items() if isinstance(value, dict) else [((), value)]):
            if math.isfinite(v):
                out.setdefault(legend_name(legend, dict(labels)), []).append((t, v))
    return out


def legend_name(legend: str, labels: dict) -> str:
    """Grafana's `{{label}}` substitution; with no legend, the label set, as Grafana shows it."""
    name = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend or "").strip()
    return name or "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def parse_scrape(text: str, job: str, instance: str) -> dict:
    """One /metrics text as {labels: value}, with the `job` and `instance` Prometheus would add."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {**s.labels, "__name__": s.name, "job": job, "instance": instance}
            out[tuple(sorted(labels.items()))] = float(s.value)
    return out
