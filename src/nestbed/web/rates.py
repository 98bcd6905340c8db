"""Live per-link rates for the web view's counters frames (pure; no store, no clock).

`RateTracker` keeps each member interface's previous cumulative sample and diffs the newest sample against it:
O(rows) a second, where control/traffic.py's `traffic()` re-reads and re-bins whole windows. The rule is
traffic.py's (its `_delta` and `intervals()`): a segment's traffic is the sum of its members' tx deltas, its attack
part the DSCP-marked tx (never more than the total), a counter that went down was reset (its new value is the
interval's bytes), and an interface missing from one sample just has a longer interval at its next one.

A frame (`Frame.json()`) indexes links in the plan's segment order, the order of web/describe.py's `links`:
`rate` in kbit/s, `attack` in percent of that rate, both ints; `null` where no member interface has two samples
yet (a gap, not zero); `down` the indexes of links that are down now.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nestbed.agent.store import CounterRow
from nestbed.control.traffic import Sample, Segment, _delta

Interface = tuple[str, str]          # (node, iface)


@dataclass(frozen=True)
class Frame:
    seq: int
    t: float                          # the sample's time (Unix seconds)
    rate: list[int | None]            # kbit/s per link
    attack: list[int | None]          # % of the link's rate that is attack (DSCP 8)
    down: list[int]                   # indexes of links that are down

    def json(self) -> str:
        return json.dumps({"seq": self.seq, "t": self.t, "rate": self.rate, "attack": self.attack,
                           "down": self.down}, separators=(",", ":"))


class RateTracker:
    def __init__(self, segments: Sequence[Segment]):
        self.segments = list(segments)
        self._index = {seg.name: i for i, seg in enumerate(self.segments)}
        self._wanted = {member for seg in self.segments for member in seg.members}
        self._previous: dict[Interface, Sample] = {}
        self._seq = 0

    def update(self, created: float, rows: Iterable[CounterRow], down: Iterable[str] = ()) -> Frame:
        """The frame of the sample taken at `created` (rows: cumulative counters); `down`: names of links down."""
        sent: dict[Interface, tuple[float, float]] = {}         # bit/s (all, attack) of interfaces diffed now
        for row in rows:
            member = (row.node, row.iface)
            if member not in self._wanted:
                continue
            before = self._previous.get(member)
            if before is not None and created <= before.created:
                continue                                         # not newer: keep the older one to diff against
            now = Sample(created, row.tx_bytes or 0, row.attack_tx_bytes or 0)
            self._previous[member] = now
            if before is not None:
                seconds = created - before.created
                sent_bytes = _delta(before.tx_bytes, now.tx_bytes)
                attack_bytes = min(_delta(before.attack_tx_bytes, now.attack_tx_bytes), sent_bytes)
                sent[member] = (sent_bytes * 8 / seconds, attack_bytes * 8 / seconds)
        rates: list[int | None] = []
        attacks: list[int | None] = []
        for seg in self.segments:
            measured = [sent[m] for m in seg.members if m in sent]
            if not measured:
                rates.append(None)
                attacks.append(None)
                continue
            total = sum(bits for bits, _ in measured)
            attack = sum(marked for _, marked in measured)
            rates.append(_at_least_one(total / 1000))
            attacks.append(_at_least_one(100 * attack / total) if total > 0 else 0)
        self._seq += 1
        indexes = sorted(self._index[name] for name in set(down) if name in self._index)
        return Frame(self._seq, created, rates, attacks, indexes)


def _at_least_one(value: float) -> int:
    """Rounded, but any traffic at all shows as 1 rather than vanishing as 0 (a ping is ~3 kbit/s)."""
    return max(round(value), 1) if value > 0 else 0
