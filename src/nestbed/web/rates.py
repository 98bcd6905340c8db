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

from nestbed.agent.store import CounterRow, Sent
from nestbed.control.traffic import Segment, _delta

Interface = tuple[str, str]          # (node, iface)


@dataclass(frozen=True)
class Frame:
    seq: int
    t: float                          # the sample's time (Unix seconds)
    rate: list[int | None]            # kbit/s per link
    attack: list[int | None]          # % of the link's rate that is attack (DSCP 8)
    down: list[int]                   # indexes of links that are down
    plan: str = ""                    # the plan's and links.json's versions (web/planwatch.py): a page whose
    linkstate: str = ""               # topology has others reloads it

    def json(self) -> str:
        return json.dumps({"seq": self.seq, "t": self.t, "rate": self.rate, "attack": self.attack,
                           "down": self.down, "plan": self.plan, "linkstate": self.linkstate}, separators=(",", ":"))


class RateTracker:
    """Each member interface has a slot; `update` is one pass over the rows and one over the segments' slots
    (10,000 links, 20,000 rows: ~25 ms here), with no object made per row."""

    def __init__(self, segments: Sequence[Segment]):
        self.segments = list(segments)
        self._index = {seg.name: i for i, seg in enumerate(self.segments)}
        self._slot: dict[Interface, int] = {}
        for seg in self.segments:
            for member in seg.members:
                self._slot.setdefault(member, len(self._slot))
        self._members = [[self._slot[member] for member in seg.members] for seg in self.segments]
        count = len(self._slot)
        self._created: list[float | None] = [None] * count       # the previous sample of each slot
        self._tx = [0] * count
        self._attack_tx = [0] * count
        self._seq = 0

    def update(self, created: float, rows: Iterable[CounterRow], down: Iterable[str] = ()) -> Frame:
        """The frame of the sample taken at `created` (rows: cumulative counters); `down`: names of links down."""
        return self.update_sent(created, ((r.node, r.iface, r.tx_bytes, r.attack_tx_bytes) for r in rows), down)

    def update_sent(self, created: float, sent: Iterable[Sent], down: Iterable[str] = ()) -> Frame:
        """`update` from (node, iface, tx_bytes, attack_tx_bytes) tuples, as Store.latest_sent reads them."""
        bits: list[float | None] = [None] * len(self._slot)      # bit/s of the slots diffed now
        marked = [0.0] * len(self._slot)
        slot_of, previous, tx_before, attack_before = self._slot.get, self._created, self._tx, self._attack_tx
        for node, iface, tx_bytes, attack_tx_bytes in sent:
            slot = slot_of((node, iface))
            if slot is None:
                continue
            before = previous[slot]
            if before is not None and created <= before:
                continue                                         # not newer: keep the older one to diff against
            tx, attack_tx = tx_bytes or 0, attack_tx_bytes or 0
            if before is not None:
                seconds = created - before
                sent_bytes = _delta(tx_before[slot], tx)
                bits[slot] = sent_bytes * 8 / seconds
                marked[slot] = min(_delta(attack_before[slot], attack_tx), sent_bytes) * 8 / seconds
            previous[slot], tx_before[slot], attack_before[slot] = created, tx, attack_tx
        rates: list[int | None] = []
        attacks: list[int | None] = []
        for slots in self._members:
            total = attack = 0.0
            measured = False
            for slot in slots:
                sent_bits = bits[slot]
                if sent_bits is not None:
                    measured = True
                    total += sent_bits
                    attack += marked[slot]
            if not measured:
                rates.append(None)
                attacks.append(None)
                continue
            rates.append(_at_least_one(total / 1000))
            attacks.append(_at_least_one(100 * attack / total) if total > 0 else 0)
        self._seq += 1
        indexes = sorted(self._index[name] for name in set(down) if name in self._index)
        return Frame(self._seq, created, rates, attacks, indexes)


def _at_least_one(value: float) -> int:
    """Rounded, but any traffic at all shows as 1 rather than vanishing as 0 (a ping is ~3 kbit/s)."""
    return max(round(value), 1) if value > 0 else 0
