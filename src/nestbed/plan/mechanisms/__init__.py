"""Link mechanisms: how the members of a segment are wired on one host, one small module per kind.

    veth    a link between two process nodes of this host: one veth pair, an end in each node
    bridge  anything else: bridges in the segment's switch namespace (a tree past 1,000 ports), a veth per member
    tap     a VM's NIC on the segment: a TAP on the segment's bridge (and, in a vhost, a bridge of the guest's)
    vxlan   this host's end of a segment spanning hosts: a VXLAN device on the segment's root bridge (compile
            builds the VxlanPlans; see vxlan.py), its FDB entries (specs.FdbEntry) sent once it exists

Each module has `plan(...)`, which adds its objects to a HostPlan (compile.py's segment loop, through `choose`;
vxlan has none: compile builds its VxlanPlans), and pure `entry`/`create`/`remove` (tap: `plan` only, see
tap.py): the journal entry of an object, what to make for it, what teardown must delete for it. They return data
(specs.NewLink, JoinBridge, FdbEntry, DeleteLink), not rtnetlink bytes: planning must not import realize (layers
go one way) and the message encoders live there; realize/apply.py journals the entries, encodes every NewLink by
its `kind` into one batch and sends it through one socket, as before.
Every link made here lives in one of the experiment's namespaces and goes with it, so `remove` returns nothing
(a VXLAN device too: only its UDP socket is in the host's namespace); a mechanism whose objects lived outside them
would return DeleteLinks.
A new mechanism: a module here, a line in BY_ENTRY (and in `links` if realize creates its objects in the batch).
"""
from __future__ import annotations

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import HostPlan, InterfacePlan, NodePlan
from nestbed.plan.mechanisms import bridge, veth, vxlan
from nestbed.plan.mechanisms.specs import DeleteLink, FdbEntry, JoinBridge, NewLink

BY_ENTRY = {"bridge": bridge, "veth": veth, "vxlan": vxlan}    # journal entry type → its mechanism (tap: tap.py)


def choose(kind: str, pairs: list[tuple[NodePlan, InterfacePlan]]) -> str:
    """"veth" for a link between two nodes that are not in VMs; else "bridge" (with a "tap" per VM member)."""
    return "veth" if kind == "link" and not any(node.vm for node, _ in pairs) else "bridge"


def entries(plan: HostPlan) -> list[dict[str, Any]]:
    """The journal entries of the plan's links, recorded before `links(plan)` are made."""
    return ([bridge.entry(b) for b in plan.bridges] + [veth.entry(v) for v in plan.veths]
            + [vxlan.entry(v) for v in plan.vxlans])


def links(plan: HostPlan) -> list[NewLink | JoinBridge | FdbEntry]:
    """Everything to make, in order: the bridges first (veth ends and VXLAN devices name them as masters), then
    every veth, then the VXLAN devices and their FDB entries."""
    macs = {(n.netns, i.name): i.mac for n in plan.nodes for i in n.interfaces}
    mtus = {(n.netns, i.name): i.mtu for n in plan.nodes for i in n.interfaces if i.mtu is not None}
    node_of = {n.netns: n.name for n in plan.local_nodes}
    out: list[NewLink | JoinBridge | FdbEntry] = []
    for b in plan.bridges:
        out.extend(bridge.create(b))
    for v in plan.veths:
        out.extend(veth.create(v, macs, node_of, mtus))
    for x in plan.vxlans:
        out.extend(vxlan.create(x))
    return out


def removals(journal: list[dict[str, Any]]) -> list[DeleteLink]:
    """What teardown deletes itself, beyond the namespaces, for the journaled links."""
    return [d for e in journal if e.get("t") in BY_ENTRY for d in BY_ENTRY[e["t"]].remove(e)]
