"""Metrics shared by the workers of one `serve --workers N`: a memory-mapped slab per worker.

A worker's numbers live in a slab: a file mapped into memory (anonymous memory with one worker),
an array of doubles plus an append-only index that says which family and labels each slot
holds. Counting stays an add into memory, no lock and no system call, so the per-request
counters keep their speed. The worker that answers a scrape reads every slab of the group and
sums them, so each scrape reports the whole group whichever worker the kernel picked.

A dead worker's slab stays in the directory: its counters stay in the sum (a restarted worker
writes a new slab, so nothing is lost or counted twice and the group's counters never go
back), its gauges are left out. A dead worker's slab that counted nothing (`idle`) is removed
by the scrape that finds it: a worker crash-looping at start-up would otherwise leave one per
restart, each costing memory and scrape time for good; removing zeros changes no sum. The supervisor creates the directory before it starts the
workers and removes it when it exits (`share_across_workers`).

Index entries are written before the header's `used` mark moves past them; a reader on a CPU
that reorders stores may still see a half-written entry, so it stops at the first entry that
does not decode and reads it again on the next scrape.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import shutil
import struct
import tempfile

import msgspec
import structlog

log = structlog.get_logger("proxy.metrics.prometheus")

ENV = "AIGW_METRICS_DIR"  # set by the supervisor; each worker puts its slab there
MAGIC = b"AIGWMET1"
SLOTS = 1 << 16  # 512 KiB of doubles; bounded labels keep real use far below
SINK = 32  # slots 0-31: where a series that found the slab full counts (wider than any series)
INDEX_BYTES = 1 << 20
_VALUES = 4096  # header page, then the values, then the index
_INDEX = _VALUES + 8 * SLOTS
SIZE = _INDEX + INDEX_BYTES
# header: magic, pid, process start (clock ticks), index bytes used, CPU seconds at the last
# publish, the group's CPU seconds last reported, the worker's name
_HEAD = struct.Struct("<8sIQIdd16s")
_LEN = struct.Struct("<I")
_USED_AT = struct.calcsize("<8sIQ")  # where the header keeps `used`
_encode = msgspec.json.encode
_decode = msgspec.json.decode


def share_across_workers() -> str | None:
    """In the supervisor, before starting workers: a fresh directory for their slabs, named in
    the environment the workers inherit, removed at exit. Memory-backed /dev/shm when usable."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    try:
        path = tempfile.mkdtemp(prefix="aigw-metrics-", dir=base)
    except OSError as exc:  # metrics stay per worker; serving is not worth refusing for it
        log.warning("metrics_not_shared", error=str(exc))
        return None
    os.environ[ENV] = path
    atexit.register(shutil.rmtree, path, True)
    return path


class Slab:
    """This worker's slab: the writer side."""

    def __init__(self, directory: str | None, worker: str) -> None:
        self.pid = os.getpid()
        self.path = None
        if directory:
            # never a dead worker's file, whose pid this process may have been given again
            self.path = os.path.join(directory, f"{self.pid}-{os.urandom(4).hex()}.slab")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, SIZE)  # sparse: only pages written take memory
                self.map = mmap.mmap(fd, SIZE)
            finally:
                os.close(fd)
        else:
            self.map = mmap.mmap(-1, SIZE)
        self.values = memoryview(self.map)[_VALUES:_INDEX].cast("d")
        self.worker = worker
        self.start = start_ticks(self.pid)
        self.used = 0
        self.next_slot = SINK  # slots below take what does not fit, read by nobody
        self.families: dict[str, int] = {}
        self.full = self.warned = False
        self.group_cpu = 0.0  # the group's CPU seconds this worker last reported
        self.write_header()

    def write_header(self) -> None:
        times = os.times()
        _HEAD.pack_into(self.map, 0, MAGIC, self.pid, self.start, self.used, times.user + times.system,
                        self.group_cpu, self.worker.encode()[:16])

    def family(self, name: str, kind: str, doc: str, merge: str = "sum", buckets=None) -> int:
        fid = self.families.get(name)
        if fid is None:
            fid = self.families[name] = len(self.families)
            self._append(["f", name, kind, doc, merge, buckets])
        return fid

    def slot(self, fid: int, labels: tuple, width: int = 1) -> int:
        """Slots for one series (`labels`: name-value pairs); 0 (the sink) once the slab is full."""
        base = self.next_slot
        if self.full or base + width > SLOTS or not self.index(fid, labels, base):
            self._overflow()
            return 0
        self.next_slot = base + width
        return base

    def index(self, fid: int, labels: tuple, slot: int) -> bool:
        """Name a slot already taken (a block holding several families' series)."""
        return bool(slot) and self._append(["s", fid, labels, slot])

    def _append(self, entry: list) -> bool:
        data = _encode(entry)
        end = self.used + 4 + len(data)
        if self.full or end > INDEX_BYTES:  # nothing after the first miss: readers number families in order
            self.full = True
            return False
        at = _INDEX + self.used
        self.map[at + 4:at + 4 + len(data)] = data
        _LEN.pack_into(self.map, at, len(data))
        self.used = end
        _LEN.pack_into(self.map, _USED_AT, end)  # the `used` field, after the entry is in place
        return True

    def _overflow(self) -> None:
        if not self.warned:
            self.full = self.warned = True
            log.warning("metrics_slab_full", detail="new label values are no longer counted")


class View:
    """A slab as a reader sees it; the index is parsed once, then only what was appended."""

    __slots__ = ("map", "values", "pid", "start", "worker", "cpu", "group_cpu", "read", "used", "families",
                 "series")

    def __init__(self, source) -> None:
        self.map = source
        self.values = memoryview(source)[_VALUES:_INDEX].cast("d")
        self.read = self.used = 0
        self.families: list[tuple] = []
        self.series: list[tuple] = []
        self.refresh()

    def refresh(self) -> None:
        magic, self.pid, self.start, used, self.cpu, self.group_cpu, worker = _HEAD.unpack_from(self.map, 0)
        self.worker = worker.rstrip(b"\0").decode(errors="replace")
        if magic != MAGIC:
            return
        self.used = used
        at = self.read
        while at + 4 <= used:
            (length,) = _LEN.unpack_from(self.map, _INDEX + at)
            if at + 4 + length > used:
                break
            try:
                entry = _decode(self.map[_INDEX + at + 4:_INDEX + at + 4 + length])
            except msgspec.DecodeError:
                break  # not all there yet: read again next time
            if entry[0] == "f":
                self.families.append(tuple(entry[1:]))
            else:
                self.series.append((entry[1], tuple(map(tuple, entry[2])), entry[3]))
            at += 4 + length
        self.read = at


class Group:
    """The slabs of the group as seen by this worker: its own, and its peers' (read-only)."""

    def __init__(self, own: Slab) -> None:
        self.own = own
        self.directory = os.path.dirname(own.path) if own.path else None
        self.own_name = os.path.basename(own.path) if own.path else None
        self.views: dict[str, View] = {}
        self.own_view = View(own.map)

    def all(self) -> list[View]:
        self.own_view.refresh()
        found = [self.own_view]
        if self.directory is None:
            return found
        try:
            names = [e.name for e in os.scandir(self.directory) if e.name.endswith(".slab")]
        except OSError:
            return found
        for gone in self.views.keys() - set(names):  # removed (`forget`, by any worker): counted nothing
            del self.views[gone]
        for name in names:
            if name == self.own_name:
                continue
            view = self.views.get(name)
            if view is None:
                view = self._open(name)
                if view is None:
                    continue
            else:
                view.refresh()
            found.append(view)
        return found

    def forget(self, view: View) -> None:
        """Remove a dead worker's slab that counted nothing (`idle`); another worker may have
        removed it already."""
        for name, known in list(self.views.items()):
            if known is view:
                del self.views[name]
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, name))
                return

    def _open(self, name: str) -> View | None:
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                source = mmap.mmap(f.fileno(), SIZE, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # being created, or gone
            return None
        view = self.views[name] = View(source)
        return view


def _width(family: tuple) -> int:
    """Slots of one series: a histogram's buckets, +Inf and sum; one for the rest."""
    return len(family[4]) + 2 if family[1] == "histogram" else 1


def idle(view: View) -> bool:
    """A whole slab (its index read to the end) whose counters and histograms are all zero.
    Only ever asked of a dead worker's slab, which can no longer change."""
    if not view.pid or view.read != view.used:  # being created, or not all read
        return False
    families, values = view.families, view.values
    for fid, _labels, slot in view.series:
        if fid >= len(families):
            return False
        family = families[fid]
        if family[1] != "gauge" and any(values[slot:slot + _width(family)]):
            return False
    return True


def merge(views: list[View], alive) -> dict[str, tuple[tuple, dict]]:
    """name -> (family, {labels: values}): counters and histograms of every slab summed,
    gauges of live slabs summed (or their highest, for a family that says `max`)."""
    out: dict[str, tuple[tuple, dict]] = {}
    for view in views:
        live = alive(view)
        families, values = view.families, view.values
        for fam in families:
            if fam[0] not in out:
                out[fam[0]] = (fam, {})
        for fid, labels, slot in view.series:
            if fid >= len(families):
                continue
            fam = families[fid]
            if fam[1] == "gauge" and not live:
                continue
            got = values[slot:slot + _width(fam)].tolist()
            acc = out[fam[0]][1]
            prev = acc.get(labels)
            if prev is None:
                acc[labels] = got
            elif fam[3] == "max":
                acc[labels] = [max(a, b) for a, b in zip(prev, got, strict=True)]
            else:
                acc[labels] = [a + b for a, b in zip(prev, got, strict=True)]
    return out


# -- processes, from /proc (Linux) ---------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = mmap.PAGESIZE


def _stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()  # the name may hold spaces and parentheses


def start_ticks(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[19]) if fields else 0


def usage(pid: int, start: int | None = None) -> tuple[float, float, float] | None:
    """(resident bytes, CPU seconds, open fds) of a live process; None when it is gone, a
    zombie, or another process now holding its pid."""
    fields = _stat(pid)
    if fields is None or fields[0] in (b"Z", b"X") or (start and int(fields[19]) != start):
        return None
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = 0
    return int(fields[21]) * _PAGE, (int(fields[11]) + int(fields[12])) / _TICK, fds
