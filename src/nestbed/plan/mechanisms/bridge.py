"""The bridge mechanism: a LAN (or a link with a VM member) is a bridge in its own switch namespace.

A Linux bridge holds at most 1024 ports: past MAX_BRIDGE_MEMBERS members the LAN is a tree, a root bridge with
one leaf bridge per chunk of members, each leaf joined to the root by an uplink veth. Members' interfaces are
veths whose other end is a port of a bridge (created by the veth mechanism, after the bridges). A member's own
ingress shaping is a qdisc on that port (PortShapingPlan: realize/portshaping.py makes it, journaled first).
"""
from __future__ import annotations

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import BridgePlan, HostPlan, InterfacePlan, NodePlan, PortShapingPlan, VethEnd, VethPlan
from nestbed.plan.mechanisms.specs import FIRST_IFINDEX, NewLink

if TYPE_CHECKING:
    from nestbed.plan.pins import Pins

MAX_BRIDGE_MEMBERS = 1000      # a Linux bridge holds at most 1024 ports; leave room for uplinks


def plan(host: HostPlan, netns: str, seg_index: int, segment: str, ends: list[tuple[NodePlan, InterfacePlan]],
         node_index: dict[str, int], pins: Pins | None = None) -> BridgePlan:
    """The segment's bridges in the switch namespace `netns`, a port for each end; returns the root bridge.
    `pins` (one bridge, no tree): each member's port keeps its ifindex, new ports get ones never used there."""
    host.switch_namespaces.append(netns)
    ifindex = FIRST_IFINDEX
    root = BridgePlan(f"br{seg_index}", ifindex, segment, netns)
    host.bridges.append(root)
    ifindex += 1
    chunks = [ends[i:i + MAX_BRIDGE_MEMBERS] for i in range(0, len(ends), MAX_BRIDGE_MEMBERS)]
    for k, chunk in enumerate(chunks):
        bridge = root
        if len(chunks) > 1:
            bridge = BridgePlan(f"br{seg_index}.{k}", ifindex, segment, netns)
            host.bridges.append(bridge)
            host.veths.append(VethPlan(VethEnd(netns, f"up{seg_index}.{k}", ifindex + 1, bridge.ifindex),
                                       VethEnd(netns, f"dn{seg_index}.{k}", ifindex + 2, root.ifindex)))
            ifindex += 3
        for node, iface in chunk:
            index = ifindex if pins is None or len(chunks) > 1 else pins.port_ifindex(segment, node.name, ifindex)
            port = VethEnd(netns, f"p{node_index[node.name]}e{iface.name[3:]}", index, bridge.ifindex)
            host.veths.append(VethPlan(VethEnd(node.netns, iface.name, iface.ifindex), port))
            if iface.ingress is not None:      # the member's own ingress: what the port sends it
                host.port_shaping.append(PortShapingPlan(netns, port.name, port.ifindex, segment, node.name,
                                                         iface.ingress))
            ifindex += 1
    return root


def entry(bridge: BridgePlan) -> dict[str, Any]:
    return {"t": "bridge", "netns": bridge.netns, "name": bridge.name}


def create(bridge: BridgePlan) -> list[NewLink]:
    """The bridge, up, without STP (ports forward at once)."""
    return [NewLink("bridge", bridge.netns, bridge.name, bridge.ifindex, f"bridge {bridge.name}", up=True)]


def remove(entry: dict[str, Any]) -> list[Any]:
    """Nothing of its own: it lives in the segment's switch namespace and goes with it."""
    return []
