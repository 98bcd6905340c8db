"""linktest's checks, pure: which pairs ping, how many pings, the tolerances of loss, delay and bandwidth, the
farthest pair of nodes and the report (control/linktest.py runs the programs and fills it in)."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nestbed.plan.hostplan import HostPlan, NodePlan, SegmentPlan

RING_ABOVE = 12                 # LANs with more members: each member pings its ring neighbours only
BANDWIDTH_TOLERANCE = 0.15
LOSS_PINGS = 300
REACH_MISS_PROBABILITY = 1e-4   # chance that loss alone fails a reachability check
DELAY_TOLERANCE = 0.15          # of the expected RTT, plus DELAY_SLACK and the jitter
DELAY_SLACK = 0.002             # s: the RTT of an unshaped path (more under emulation)


@dataclass
class Check:
    kind: str                    # reach | route | bandwidth | delay | loss
    segment: str                 # the segment, or "" for routes
    between: str                 # "a ↔ b", "3 pairs", …
    ok: bool
    detail: str


@dataclass
class Report:
    experiment: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "ok": self.ok, "seconds": round(self.seconds, 3),
                "checks": [c.__dict__ for c in self.checks], "not_checked": self.notes}


def pairs(segment: SegmentPlan) -> tuple[list[tuple[int, int]], bool]:
    """Ordered member pairs (indexes) to ping; True when only a ring of them (big LANs)."""
    n = len(segment.members)
    if n <= RING_ABOVE:
        return [(i, j) for i in range(n) for j in range(n) if i != j], False
    ring = [(i, (i + 1) % n) for i in range(n)]
    return ring + [(j, i) for i, j in ring], True


def round_trip_loss(loss: float | None) -> float:
    """Each echo crosses two members' egress: the chance a round trip is lost."""
    keep = 1 - (loss or 0.0)
    return 1 - keep * keep


def reach_count(loss: float | None) -> int:
    q = round_trip_loss(loss)
    if q <= 0:
        return 3
    if q >= 1:
        return 3
    return max(3, min(60, math.ceil(math.log(REACH_MISS_PROBABILITY) / math.log(q))))


def loss_within(lost: int, sent: int, loss: float) -> tuple[bool, float, float]:
    """Binomial tolerance on the lost count: mean ± (4σ + 2). Returns (ok, low, high) as fractions."""
    q = round_trip_loss(loss)
    mean = sent * q
    spread = 4 * math.sqrt(sent * q * (1 - q)) + 2
    low, high = max(0.0, mean - spread), min(float(sent), mean + spread)
    return low <= lost <= high, low / sent, high / sent


def delay_within(rtt: float, delay: float, jitter: float | None) -> tuple[bool, float, float]:
    expected = 2 * delay
    low = expected * (1 - DELAY_TOLERANCE) - 2 * (jitter or 0)
    high = expected * (1 + DELAY_TOLERANCE) + DELAY_SLACK + 2 * (jitter or 0)
    return low <= rtt <= high, low, high


def bandwidth_within(measured: float, rate: int, loss: float | None) -> tuple[bool, float, float]:
    """±BANDWIDTH_TOLERANCE. TCP fills a lossy path less: with up to 2% loss half the rate is enough, beyond
    that only the upper bound holds."""
    if not loss:
        low = rate * (1 - BANDWIDTH_TOLERANCE)
    elif loss <= 0.02:
        low = rate * 0.5
    else:
        low = 0.0
    return low <= measured <= rate * (1 + BANDWIDTH_TOLERANCE), low, rate * (1 + BANDWIDTH_TOLERANCE)


def farthest_pair(plan: HostPlan, segments: list[SegmentPlan]) -> tuple[str, str, int, str] | None:
    """(a, b, hops, b's address on the last segment of the path) for two nodes about as far apart as any
    (double sweep over the node–segment graph; only nodes with two or more interfaces forward)."""
    nodes = {n.name: n for n in plan.nodes if n.interfaces}
    if len(nodes) < 2:
        return None
    members = {s.name: s.members for s in segments}
    by_node: dict[str, list[str]] = {}
    for seg in segments:
        for node, _, _ in seg.members:
            by_node.setdefault(node, []).append(seg.name)

    def sweep(start: str) -> dict[str, tuple[int, str]]:
        found = {start: (0, "")}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if node != start and len(by_node.get(node, [])) < 2:
                continue
            hops = found[node][0]
            for seg in by_node.get(node, []):
                for other, _, address in members[seg]:
                    if other not in found:
                        found[other] = (hops + 1, address.split("/")[0])
                        queue.append(other)
        return found

    first = next(iter(nodes))
    reached = sweep(first)
    a = max(reached, key=lambda n: reached[n][0])
    from_a = sweep(a)
    b = max(from_a, key=lambda n: from_a[n][0])
    if b == a:
        return None
    return a, b, from_a[b][0], from_a[b][1]


def farthest_pair_back(plan: HostPlan, segments: list[SegmentPlan], source: str, target: str) -> str | None:
    """The target's address on the last segment of the source's path to it (for the return ping)."""
    by_node: dict[str, list[str]] = {}
    members = {s.name: s.members for s in segments}
    for seg in segments:
        for node, _, _ in seg.members:
            by_node.setdefault(node, []).append(seg.name)
    found = {source: ""}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if node != source and len(by_node.get(node, [])) < 2:
            continue
        for name in by_node.get(node, []):
            for other, _, address in members[name]:
                if other not in found:
                    found[other] = address.split("/")[0]
                    queue.append(other)
    return found.get(target)


def hops_text(hops: int) -> str:
    return "1 hop" if hops == 1 else f"{hops} hops"


def ip(address: str) -> str:
    return address.split("/")[0]


def members_text(seg: SegmentPlan) -> str:
    names = [m for m, _, _ in seg.members]
    if seg.kind == "link" and len(names) == 2:
        return f"{names[0]} ↔ {names[1]}"
    return ", ".join(names[:6]) + (f" … ({len(names)})" if len(names) > 6 else "")


def names_text(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def hosts_of(segment: SegmentPlan, nodes: dict[str, NodePlan]) -> list[str]:
    """The hosts holding the segment's members, in member order (none on one host: its nodes carry no host)."""
    return list(dict.fromkeys(host for member, _, _ in segment.members if (host := nodes[member].host)))
