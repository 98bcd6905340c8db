"""Shaping along a path: a segment's own, the sending member's egress and the receiving member's ingress composed.

Delays and jitters add, losses compose as 1−Π(1−l), bandwidth and queue take the smallest. compile uses it for
every member's egress qdisc; linktest for what a pair of members should measure.
"""
from __future__ import annotations

from nestbed.plan.hostplan import HostPlan, InterfacePlan, SegmentPlan, ShapingPlan

EMPTY = ShapingPlan()


def compose(*parts: ShapingPlan | None) -> ShapingPlan | None:
    """One shaping doing what `parts` do in a row (None: nothing)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if len(present) == 1:          # the common case (no per-member settings): the same object, shared
        return present[0] if present[0] != EMPTY else None

    def smallest(values: list[int | None]) -> int | None:
        set_ = [v for v in values if v]
        return min(set_) if set_ else None

    def total(values: list[float | None]) -> float | None:
        set_ = [v for v in values if v]
        return sum(set_) if set_ else None
    kept = 1.0
    for p in present:
        kept *= 1.0 - (p.loss or 0.0)
    loss = 1.0 - kept
    composed = ShapingPlan(bandwidth=smallest([p.bandwidth for p in present]),
                           delay=total([p.delay for p in present]), jitter=total([p.jitter for p in present]),
                           loss=round(loss, 12) if loss > 0 else None,
                           queue=smallest([p.queue for p in present]))
    return None if composed == EMPTY else composed


def member_interfaces(plan: HostPlan, segment: SegmentPlan) -> dict[str, InterfacePlan]:
    """node → its interface on the segment (nodes of other hosts too)."""
    wanted = {(m[0], m[1]) for m in segment.members}
    return {node.name: iface for node in plan.every_node() for iface in node.interfaces
            if (node.name, iface.name) in wanted}


def between(plan: HostPlan, segment: SegmentPlan, sender: str, receiver: str) -> ShapingPlan | None:
    """What traffic sender → receiver on the segment crosses: the sender's egress qdisc (segment and own shaping
    composed by compile) and the receiver's ingress (its bridge port)."""
    ifaces = member_interfaces(plan, segment)
    out = ifaces[sender].shaping if sender in ifaces else segment.shaping
    return compose(out, ifaces[receiver].ingress if receiver in ifaces else None)


def round_trip(plan: HostPlan, segment: SegmentPlan, a: str, b: str) -> ShapingPlan | None:
    """a → b and back as one symmetric shaping, what linktest's checks expect of a pair: the delay and jitter
    each way the mean of the two ways (a round trip crosses both), the loss each way the one giving the same
    round-trip loss, the bandwidth and queue of a → b (where its transfer goes)."""
    there, back = between(plan, segment, a, b), between(plan, segment, b, a)
    if there is None and back is None:
        return None
    go, come = there or ShapingPlan(), back or ShapingPlan()
    kept = (1.0 - (go.loss or 0.0)) * (1.0 - (come.loss or 0.0))
    delay = ((go.delay or 0.0) + (come.delay or 0.0)) / 2
    jitter = ((go.jitter or 0.0) + (come.jitter or 0.0)) / 2
    symmetric = ShapingPlan(bandwidth=go.bandwidth, delay=delay or None, jitter=jitter or None,
                            loss=(1.0 - kept ** 0.5) or None, queue=go.queue)
    return None if symmetric == ShapingPlan() else symmetric


def has_member_shaping(plan: HostPlan, segment: SegmentPlan) -> bool:
    """Any member with its own egress or ingress (its interface's shaping is not the segment's alone)."""
    return any(iface.shaping != segment.shaping or iface.ingress is not None
               for iface in member_interfaces(plan, segment).values())
