"""The veth mechanism: a link between two process nodes of this host is one veth pair, an end in each node.

Also the bridges' ports (a member's interface paired with a port of its LAN's bridge) and the uplinks of a tree
of bridges: every veth of a HostPlan is created here, after the bridges.
"""
from __future__ import annotations

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import HostPlan, InterfacePlan, NodePlan, VethEnd, VethPlan
from nestbed.plan.mechanisms.specs import JoinBridge, NewLink


def plan(host: HostPlan, pairs: list[tuple[NodePlan, InterfacePlan]]) -> None:
    """A point-to-point link: the two members' interfaces are the two ends."""
    (n0, i0), (n1, i1) = pairs
    host.veths.append(VethPlan(VethEnd(n0.netns, i0.name, i0.ifindex), VethEnd(n1.netns, i1.name, i1.ifindex)))


def entry(veth: VethPlan) -> dict[str, Any]:
    return {"t": "veth", "netns": veth.a.netns, "name": veth.a.name, "peer_netns": veth.b.netns, "peer": veth.b.name}


def create(veth: VethPlan, macs: dict[tuple[str, str], str], node_of: dict[str, str],
           mtus: dict[tuple[str, str], int] | None = None) -> list[NewLink | JoinBridge]:
    """One message for the pair; a second, in the peer's namespace, when both ends join bridges (uplinks).
    `mtus`: interfaces with a lowered MTU (a segment carried by a tunnel); both ends of their veth get it, so a
    bridge port matches its member."""
    # The end that joins a bridge goes first: only the first end of a new veth may name a master.
    a, b = (veth.b, veth.a) if veth.b.master is not None and veth.a.master is None else (veth.a, veth.b)
    mtus = mtus or {}
    out: list[NewLink | JoinBridge] = [
        NewLink("veth", a.netns, a.name, a.ifindex, f"veth {_describe(a, node_of)} <-> {_describe(b, node_of)}",
                mac=macs.get((a.netns, a.name)), master=a.master, up=a.master is not None, peer=b,
                peer_mac=macs.get((b.netns, b.name)), mtu=mtus.get((a.netns, a.name)) or mtus.get((b.netns, b.name)))]
    if veth.a.master is not None and veth.b.master is not None:
        out.append(JoinBridge(veth.b.netns, veth.b.name, veth.b.ifindex, veth.b.master))
    return out


def remove(entry: dict[str, Any]) -> list[Any]:
    """Nothing of its own: both ends live in the experiment's namespaces and go with them."""
    return []


def _describe(end: VethEnd, node_of: dict[str, str]) -> str:
    node = node_of.get(end.netns)
    return f"{node}:{end.name}" if node else f"switch:{end.name}"
