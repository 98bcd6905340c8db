"""Stable numbering: what a running experiment's plan fixes, so a recompiled, edited topology keeps it.

Compile numbers things in experiment order: a node's index (its MACs, its bridge ports' names), each (node,
segment)'s ethN (and ifindex FIRST_IFINDEX + N), a segment's index (bridge names), its subnet and its members'
addresses, each bridge port's ifindex in the switch namespace, and each segment crossing hosts its VNI's place in
the experiment's block (`vnis`: only those segments are numbered, so a block of 4,096 VNIs holds an experiment of
any number of host-local segments). Inserting a node or a LAN early in the file would
renumber everything after it, and a diff would recreate it all. `pins_of(plan)` reads the numbering back from the
last applied plan (HostPlan.pins); `compile_plan(exp, embedding, pins)` keeps it for every object still there and
gives new ones numbers past the highest ever used (the `next_*` marks), so a removed object's numbers are not
reused within the experiment.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TYPE_CHECKING = False     # not typing's: keep plan modules light (guests import hostplan)
if TYPE_CHECKING:
    from typing import Any

    from nestbed.plan.hostplan import HostPlan


RESERVED = "~"     # a port-numbering name that is no node's: a host's VXLAN device of the segment ("~vx@host")


@dataclass
class Pins:
    nodes: dict[str, int] = field(default_factory=dict)                 # node → index
    segments: dict[str, int] = field(default_factory=dict)              # segment → index
    eth: dict[str, dict[str, int]] = field(default_factory=dict)        # node → segment → N of ethN
    subnets: dict[str, str] = field(default_factory=dict)               # segment → subnet (auto-allocated ones)
    addresses: dict[str, dict[str, str]] = field(default_factory=dict)  # segment → node → address
    ports: dict[str, dict[str, int]] = field(default_factory=dict)      # segment → node → port ifindex
    control_tag: int | None = None                                      # X of 172.30.X.0/24
    next_node: int = 0
    next_segment: int = 0
    next_eth: dict[str, int] = field(default_factory=dict)              # node → next N
    next_port: dict[str, int] = field(default_factory=dict)             # segment → next port ifindex
    next_address: int = 0            # the first address past every auto-allocated subnet (as an int)
    vnis: dict[str, int] = field(default_factory=dict)                  # cross-host segment → VNI - block's first
    next_vni: int = 0

    def node_index(self, name: str) -> int:
        """The pinned index, or the next one never used (and from now on pinned)."""
        if name not in self.nodes:
            self.nodes[name] = self.next_node
        self.next_node = max(self.next_node, self.nodes[name] + 1)
        return self.nodes[name]

    def segment_index(self, name: str) -> int:
        if name not in self.segments:
            self.segments[name] = self.next_segment
        self.next_segment = max(self.next_segment, self.segments[name] + 1)
        return self.segments[name]

    def eth_number(self, node: str, segment: str) -> int:
        own = self.eth.setdefault(node, {})
        if segment not in own:
            own[segment] = self.next_eth.get(node, 0)
        self.next_eth[node] = max(self.next_eth.get(node, 0), own[segment] + 1)
        return own[segment]

    def port_ifindex(self, segment: str, node: str, first: int) -> int:
        own = self.ports.setdefault(segment, {})
        if node not in own:
            own[node] = max(self.next_port.get(segment, first), first)
        self.next_port[segment] = max(self.next_port.get(segment, first), own[node] + 1)
        return own[node]

    def number_vnis(self, crossing: list[str], size: int) -> dict[str, int]:
        """The VNI offsets of the segments `crossing` hosts (at most `size`, the caller checks), in a block of
        `size`: pinned ones stay, new ones get the next never used; once the block's end is reached, the lowest
        free one (a long-running experiment modified many times). Segments that no longer cross lose theirs."""
        still = set(crossing)
        self.vnis = {s: v for s, v in self.vnis.items() if s in still and v < size}
        taken = set(self.vnis.values())
        free = (k for k in range(size) if k not in taken)      # only read past the block's end
        for segment in crossing:
            if segment not in self.vnis:
                self.vnis[segment] = self.next_vni if self.next_vni < size else next(free)
                taken.add(self.vnis[segment])
            self.next_vni = max(self.next_vni, self.vnis[segment] + 1)
        return self.vnis

    def keep_only(self, nodes: set[str], segments: set[str]) -> None:
        """Forget the numbers of objects gone from the experiment; the next_* marks stay (no reuse)."""
        self.nodes = {n: i for n, i in self.nodes.items() if n in nodes}
        self.segments = {s: i for s, i in self.segments.items() if s in segments}
        self.eth = {n: {s: j for s, j in own.items() if s in segments} for n, own in self.eth.items() if n in nodes}
        self.next_eth = {n: j for n, j in self.next_eth.items() if n in nodes}
        self.subnets = {s: v for s, v in self.subnets.items() if s in segments}
        self.addresses = {s: {n: a for n, a in own.items() if n in nodes}
                          for s, own in self.addresses.items() if s in segments}
        self.ports = {s: {n: i for n, i in own.items() if n in nodes or n.startswith(RESERVED)}
                      for s, own in self.ports.items() if s in segments}
        self.next_port = {s: i for s, i in self.next_port.items() if s in segments}
        self.vnis = {s: v for s, v in self.vnis.items() if s in segments}

    def keep_memberships(self, members: dict[str, set[str]]) -> None:
        """Forget the (node, segment) numbers of members that left a segment that stays (next_* marks stay)."""
        self.eth = {n: {s: j for s, j in own.items() if n in members.get(s, ())} for n, own in self.eth.items()}
        self.addresses = {s: {n: a for n, a in own.items() if n in members.get(s, ())}
                          for s, own in self.addresses.items()}
        self.ports = {s: {n: i for n, i in own.items() if n in members.get(s, ()) or n.startswith(RESERVED)}
                      for s, own in self.ports.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pins:
        known = {k: data[k] for k in cls().__dict__ if k in data}
        if "vnis" not in data and "segments" in data:
            # pins from before cross-host numbering: a segment's VNI was the block's first + its index
            known["vnis"], known["next_vni"] = dict(data["segments"]), data.get("next_segment", 0)
        return cls(**known)

    def copy(self) -> Pins:
        import copy
        return copy.deepcopy(self)


def pins_of(plan: HostPlan | None) -> Pins | None:
    """The numbering a plan fixes; None for no plan, or a plan from before pins (compile numbers afresh)."""
    if plan is None or not plan.pins:
        return None
    return Pins.from_dict(plan.pins)
