"""Traffic rates from the store's cumulative counter samples: per link/LAN, attack vs legitimate (pure; no root).

A segment's traffic is the sum of what its members transmit into it (tx of each member's interface): a link
counts both directions, a LAN everything entering it. Samples are cumulative, so a rate comes from the
difference of successive samples of one interface:

- a counter that goes down was reset (interface re-created, agent restarted): the new value is what was counted
  since the reset, and it is taken as the interval's bytes;
- a missing sample only makes one interval longer: its bytes are spread evenly over it, so a missed second
  gives the average of the two seconds, not a spike;
- interfaces sampled at different moments (several hosts) are put on one grid of bins, each interval adding
  its bytes to the bins it overlaps in proportion.

Bins no member interface covers are None (a gap in the plot), not zero.
"""
from __future__ import annotations

import itertools
import math
import sqlite3
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from nestbed.plan.hostplan import HostPlan

MAX_BINS = 1500          # at most this many points per series: long experiments get wider bins
MIN_STEP = 0.1           # s


@dataclass(frozen=True)
class Sample:
    """Cumulative transmit counters of one interface at one moment."""
    created: float
    tx_bytes: int
    attack_tx_bytes: int = 0


@dataclass
class Series:
    """Rates (bit/s) of one link/LAN (or of the whole experiment) on a grid of `step`-second bins from `start`."""
    name: str
    kind: str                                   # link | lan | interface | total
    start: float
    step: float
    total: list[float | None] = field(default_factory=list)     # bit/s per bin; None: no sample covers the bin
    attack: list[float | None] = field(default_factory=list)    # the DSCP-marked part of total
    bytes_total: float = 0.0
    bytes_attack: float = 0.0

    @property
    def legitimate(self) -> list[float | None]:
        return [None if t is None else max(t - (a or 0.0), 0.0) for t, a in zip(self.total, self.attack)]

    @property
    def times(self) -> list[float]:
        """Start of every bin (Unix seconds)."""
        return [self.start + i * self.step for i in range(len(self.total))]

    @property
    def peak(self) -> float:
        return max((t for t in self.total if t is not None), default=0.0)


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    bytes: float
    attack: float


def intervals(samples: Sequence[Sample]) -> list[Interval]:
    """Bytes sent between successive samples of one interface (oldest first), resets handled."""
    result: list[Interval] = []
    ordered = sorted(samples, key=lambda s: s.created)
    for before, after in itertools.pairwise(ordered):
        if after.created <= before.created:
            continue
        sent = _delta(before.tx_bytes, after.tx_bytes)
        attack = min(_delta(before.attack_tx_bytes, after.attack_tx_bytes), sent)
        result.append(Interval(before.created, after.created, sent, attack))
    return result


def _delta(before: int | None, after: int | None) -> float:
    if after is None:
        return 0.0
    if before is None or after < before:       # a reset: counting restarted from zero
        return float(after)
    return float(after - before)


def sampling_step(per_interface: dict[tuple[str, str], list[Sample]]) -> float:
    """The usual time between two samples of an interface (the sampler's period, 1 s by default)."""
    gaps: list[float] = []
    for samples in per_interface.values():
        times = sorted(s.created for s in samples)
        gaps.extend(b - a for a, b in itertools.pairwise(times) if b > a)
    return max(statistics.median(gaps), MIN_STEP) if gaps else 1.0


@dataclass
class Grid:
    start: float
    step: float
    bins: int

    @classmethod
    def covering(cls, start: float, end: float, step: float) -> Grid:
        span = max(end - start, step)
        if span / step > MAX_BINS:
            step = span / MAX_BINS
        return cls(start, step, max(1, math.ceil(span / step - 1e-9)))

    def spread(self, interval: Interval, total: list[float], attack: list[float], covered: list[float]) -> None:
        """Add the interval's bytes to the bins it overlaps, in proportion to the overlap."""
        first = max(int((interval.start - self.start) // self.step), 0)
        last = max(min(math.ceil((interval.end - self.start) / self.step) - 1, self.bins - 1), first)
        if first == last:                     # the usual case: the sampler's period is the bin width
            total[first] += interval.bytes
            attack[first] += interval.attack
            covered[first] += interval.end - interval.start
            return
        length = interval.end - interval.start
        for index in range(first, last + 1):
            low = self.start + index * self.step
            overlap = min(interval.end, low + self.step) - max(interval.start, low)
            if overlap <= 0:
                continue
            share = overlap / length
            total[index] += interval.bytes * share
            attack[index] += interval.attack * share
            covered[index] += overlap

    def binned(self, samples: Sequence[Sample]) -> Binned:
        """One interface's bytes (all, attack) and seconds sampled per bin."""
        binned = Binned([0.0] * self.bins, [0.0] * self.bins, [0.0] * self.bins)
        for interval in intervals(samples):
            self.spread(interval, binned.total, binned.attack, binned.covered)
        return binned


@dataclass
class Binned:
    total: list[float]
    attack: list[float]
    covered: list[float]


def rates(name: str, kind: str, members: Iterable[Binned], grid: Grid) -> Series:
    """The summed rate of some interfaces (binned on the grid)."""
    total = [0.0] * grid.bins
    attack = [0.0] * grid.bins
    covered = [0.0] * grid.bins
    for member in members:
        total = [a + b for a, b in zip(total, member.total)]
        attack = [a + b for a, b in zip(attack, member.attack)]
        covered = [a + b for a, b in zip(covered, member.covered)]
    series = Series(name, kind, grid.start, grid.step, bytes_total=sum(total), bytes_attack=sum(attack))
    for sent, marked, seconds in zip(total, attack, covered):
        if seconds <= 0:
            series.total.append(None)
            series.attack.append(None)
        else:
            series.total.append(sent * 8 / grid.step)
            series.attack.append(marked * 8 / grid.step)
    return series


@dataclass(frozen=True)
class Segment:
    """What traffic needs of a link/LAN: its members' (node, interface)."""
    name: str
    kind: str
    members: tuple[tuple[str, str], ...]


@dataclass
class Traffic:
    segments: list[Series]           # every segment, busiest first
    overall: Series                  # the experiment's total (all segment members; per-interface without a plan)
    first: float                     # the first sample ever (the experiment's time origin)
    end: float                       # the newest sample plotted

    def busiest(self, count: int) -> list[Series]:
        return self.segments[:count]


def traffic(per_interface: dict[tuple[str, str], list[Sample]], segments: Sequence[Segment] | None,
            first: float | None = None) -> Traffic | None:
    """Rates of every segment (or, without segments, of every experiment interface) on one grid; None when
    there is nothing to compute (fewer than two samples of any interface)."""
    if not any(len(samples) >= 2 for samples in per_interface.values()):
        return None
    if segments is None:
        segments = [Segment(f"{node}:{iface}", "interface", ((node, iface),)) for node, iface in sorted(per_interface)
                    if not _control_interface(iface)]
    start = min(s.created for samples in per_interface.values() for s in samples)
    end = max(s.created for samples in per_interface.values() for s in samples)
    grid = Grid.covering(start, end, sampling_step(per_interface))
    used = sorted({m for s in segments for m in s.members})
    binned = {m: grid.binned(per_interface.get(m, [])) for m in used}
    series = [rates(s.name, s.kind, (binned[m] for m in s.members), grid) for s in segments]
    series.sort(key=lambda s: (-s.bytes_total, s.name))
    overall = rates("all links and LANs", "total", binned.values(), grid)
    return Traffic(series, overall, start if first is None else min(first, start), end)


def _control_interface(iface: str) -> bool:
    return iface == "lo" or iface.startswith("ctl")


def segments_of(plan: HostPlan) -> list[Segment]:
    """The links and LANs of a HostPlan."""
    return [Segment(s.name, s.kind, tuple((node, iface) for node, iface, _address in s.members))
            for s in plan.segments]


# -- reading the store --------------------------------------------------------------------------------------
def connect(path: Path | str) -> sqlite3.Connection:
    """The store, opened for reading; never creates a file."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=rw", uri=True, timeout=10.0)
    try:
        db.execute("SELECT 1 FROM counters LIMIT 1")
        db.execute("SELECT 1 FROM events LIMIT 1")
    except sqlite3.DatabaseError as error:
        db.close()
        raise ValueError(f"{path} is not a nestbed control store ({error})") from None
    return db


def load_samples(db: sqlite3.Connection, since: float | None = None) -> tuple[dict[tuple[str, str], list[Sample]],
                                                                             float | None]:
    """Every interface's transmit samples (only the last `since` seconds up to the newest sample, if given), and
    the time of the first sample ever."""
    first, newest = db.execute("SELECT MIN(created), MAX(created) FROM counters").fetchone()
    per_interface: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    if newest is None:
        return per_interface, None
    query = "SELECT node, iface, created, tx_bytes, attack_tx_bytes FROM counters"
    args: tuple[float, ...] = ()
    if since is not None:
        query += " WHERE created >= ?"
        args = (newest - since,)
    for node, iface, created, sent, attack in db.execute(query + " ORDER BY node, iface, created", args):
        per_interface[(node, iface)].append(Sample(created, sent or 0, attack or 0))
    return per_interface, first


def load_events(db: sqlite3.Connection, start: float | None = None) -> list[tuple[float, str, str, str | None]]:
    """(created, source, name, data as JSON text) of scenario and mailbox events, oldest first."""
    query = "SELECT created, source, name, data FROM events WHERE source IN ('scenario', 'mailbox')"
    args: tuple[float, ...] = ()
    if start is not None:
        query += " AND created >= ?"
        args = (start,)
    return list(db.execute(query + " ORDER BY created, id", args))
