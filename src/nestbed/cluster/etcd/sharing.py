"""An experiment's plans as ONE shared document plus each host's own part (design §3: a host's plan carries the
whole experiment, 93 % of it the same on every host; at 1,000 hosts that is 40 MB a host, 40 GB in etcd).

    shared     a HostPlan JSON of no host: the experiment's `segments`, `hosts_file`, `node_order`, and in `others`
               every node as other hosts list it (with its `host`), in experiment order
    part       {"format": 1, "shared": [fields taken from the shared document], "plan": the host's HostPlan JSON
               with those fields empty}

A host's `others` is every node of the pool whose host is not this one. A field is taken from the shared document
only when the host's value is exactly the shared one (checked here, host by host); otherwise the host's part keeps
its own, so join(shared, part) is always the plan the host would have got whole. With fewer than two plans there is
nothing to share: each plan is published whole (the format of manifests without a shared document).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from nestbed.plan.hostplan import HostPlan, NodePlan

FORMAT = 1
COMMON = ("segments", "hosts_file", "node_order")     # the experiment's, the same on every host
OTHERS = "others"                                     # the pool less the host's own nodes
_EMPTY: dict[str, Any] = {"segments": [], "hosts_file": "", "node_order": [], OTHERS: []}


@dataclass(frozen=True)
class Split:
    shared: bytes | None                  # None: the plans are whole (fewer than two)
    parts: dict[str, bytes]


def split(plans: dict[str, HostPlan]) -> Split:
    if len(plans) < 2:
        return Split(None, {host: plan.to_json().encode() for host, plan in plans.items()})
    first = next(iter(plans.values()))
    pool = _pool(list(plans.values()), first.node_order)
    shared = HostPlan(experiment=first.experiment, host="", segments=first.segments, hosts_file=first.hosts_file,
                      node_order=first.node_order, others=pool)
    parts = {}
    for host, plan in plans.items():
        taken = [name for name in COMMON if getattr(plan, name) == getattr(shared, name)]
        if plan.others and others_of(pool, plan.host) == plan.others:
            taken.append(OTHERS)
        own = replace(plan, **{name: _EMPTY[name] for name in taken})
        parts[host] = b'{"format":%d,"shared":%s,"plan":%s}' % (FORMAT, json.dumps(taken).encode(),
                                                                 own.to_json().encode())
    return Split(shared.to_json().encode(), parts)


def others_of(pool: list[NodePlan], host: str) -> list[NodePlan]:
    return [node for node in pool if node.host != host]


def _pool(plans: list[HostPlan], order: list[str]) -> list[NodePlan]:
    """Every node some host lists in `others` (the first listing wins: a host listing it otherwise keeps its own
    `others`), in experiment order."""
    by_name: dict[str, NodePlan] = {}
    for plan in plans:
        for node in plan.others:
            by_name.setdefault(node.name, node)
        if len(by_name) >= len(order):        # every node is there (two hosts with nodes are enough)
            break
    rank = {name: k for k, name in enumerate(order)}
    return sorted(by_name.values(), key=lambda node: rank.get(node.name, len(rank)))


@dataclass(frozen=True)
class SharedDoc:
    """A shared document parsed once per process: its plan, and where each host's own nodes are in its `others`
    (so a host's `others` is a few slices of references, not a scan of the experiment)."""
    plan: HostPlan
    own: dict[str | None, list[int]]      # host -> positions of its nodes in plan.others, ascending

    def others_less(self, host: str) -> list[NodePlan]:
        pool, out, start = self.plan.others, [], 0
        for at in self.own.get(host, ()):
            out += pool[start:at]
            start = at + 1
        return out + pool[start:] if out or start else pool[:]   # a list of its own: the plan's, not the pool


def parse_shared(data: bytes) -> SharedDoc:
    plan = HostPlan.from_json(data.decode())
    own: dict[str | None, list[int]] = {}
    for k, node in enumerate(plan.others):
        own.setdefault(node.host, []).append(k)
    return SharedDoc(plan, own)


def join(doc: SharedDoc | None, part: bytes) -> HostPlan:
    """The host's whole plan from its part and the shared document (None: the part is a whole plan). The shared
    document's nodes, segments and node order are the same objects in every plan joined from it: read-only
    (nothing downstream of the agent mutates a plan's others, segments or node_order)."""
    if doc is None:
        return HostPlan.from_json(part.decode())
    data = json.loads(part)
    if data.get("format") != FORMAT:
        raise ValueError(f"plan part of format {data.get('format')!r}: this agent reads format {FORMAT}; "
                         f"update nestbed on this host")
    plan = HostPlan.from_dict(data["plan"])
    shared = doc.plan
    for name in data["shared"]:
        if name == OTHERS:
            plan.others = doc.others_less(plan.host)
        elif name in COMMON:
            setattr(plan, name, getattr(shared, name))      # by reference
        else:
            raise ValueError(f"plan part takes {name!r} from the shared document: not a shared field")
    return plan
