"""Compile a validated Experiment into the HostPlan of this machine (single host; placement comes later)."""
from __future__ import annotations

import ipaddress
import zlib

from nestbed.model.topology import Experiment, Shaping
from nestbed.plan.addressing import allocate
from nestbed.plan.hostplan import (BridgePlan, HostPlan, InterfacePlan, NodePlan, RoutePlan, SegmentPlan,
                                   ShapingPlan, VethEnd, VethPlan)
from nestbed.plan.routing import Attachment, covering_supernet, shortest_path_routes

LOCAL_HOST = "local"
MAX_BRIDGE_MEMBERS = 1000      # a Linux bridge holds at most 1024 ports; leave room for uplinks
FIRST_IFINDEX = 2              # 1 is lo in every namespace


def netns_name(experiment: str, node: str) -> str:
    """Kernel-visible names carry the experiment, so two experiments with the same node names coexist."""
    return f"nb-{experiment}.{node}"


def switch_netns_name(experiment: str, lan: str) -> str:
    """A LAN's bridges; the '.sw' suffix cannot clash with a node (node names have no dots)."""
    return f"nb-{experiment}.{lan}.sw"


def _shaping(shaping: Shaping) -> ShapingPlan | None:
    if shaping.is_empty:
        return None
    return ShapingPlan(shaping.bandwidth, shaping.delay, shaping.jitter, shaping.loss, shaping.queue)


def _mac(experiment_tag: int, node_index: int, interface_index: int) -> str:
    """Locally administered, stable: experiment tag, then 20 bits of node and 12 bits of interface number."""
    low = ((node_index & 0xFFFFF) << 12) | (interface_index & 0xFFF)
    return ":".join(f"{o:02x}" for o in [0x02, experiment_tag, *low.to_bytes(4, "big")])


def compile_plan(exp: Experiment) -> HostPlan:
    exp.validate()
    nodes = exp.expanded_nodes()
    members = {name: exp.segment_members(seg, nodes) for name, seg in exp.segments.items()}
    addresses = allocate([(name, seg.kind, members[name]) for name, seg in exp.segments.items()])

    tag = zlib.crc32(exp.name.encode()) & 0xFF
    node_index = {name: i for i, name in enumerate(nodes)}
    plans = {name: NodePlan(name=name, kind=node.kind, netns=netns_name(exp.name, name), forwarding=node.router,
                            commands=list(node.commands)) for name, node in nodes.items()}
    plan = HostPlan(experiment=exp.name, host=LOCAL_HOST, routing=exp.routing)

    attachments: dict[str, tuple[ipaddress.IPv4Network, list[Attachment]]] = {}
    for seg_index, (name, segment) in enumerate(exp.segments.items()):
        shaping = _shaping(segment.shaping)
        seg_addresses = addresses[name]
        ends: list[InterfacePlan] = []
        for end in members[name]:
            node = plans[end.node]
            j = len(node.interfaces)
            iface = InterfacePlan(name=f"eth{j}", ifindex=FIRST_IFINDEX + j, segment=name,
                                  address=str(seg_addresses.addresses[end.node]),
                                  mac=_mac(tag, node_index[end.node], j), shaping=shaping)
            node.interfaces.append(iface)
            ends.append(iface)
        attachments[name] = (seg_addresses.subnet, [
            Attachment(end.node, iface.name, seg_addresses.addresses[end.node])
            for end, iface in zip(members[name], ends)])
        plan.segments.append(SegmentPlan(name=name, kind=segment.kind, subnet=str(seg_addresses.subnet),
                                         members=[(end.node, iface.name, iface.address)
                                                  for end, iface in zip(members[name], ends)],
                                         shaping=shaping))
        if segment.kind == "link":
            (n0, i0), (n1, i1) = [(plans[e.node], iface) for e, iface in zip(members[name], ends)]
            plan.veths.append(VethPlan(VethEnd(n0.netns, i0.name, i0.ifindex), VethEnd(n1.netns, i1.name, i1.ifindex)))
            continue
        _lan_bridges(plan, exp.name, seg_index, name, [(plans[e.node], i) for e, i in zip(members[name], ends)],
                     node_index)

    if exp.routing == "static":
        supernet = covering_supernet([subnet for subnet, _ in attachments.values()])
        routes, forwarders = shortest_path_routes(attachments, supernet)
        for name, node_routes in routes.items():
            plans[name].routes = [RoutePlan(r.destination, r.gateway, r.device) for r in node_routes]
            if name in forwarders:
                plans[name].forwarding = True

    plan.nodes = list(plans.values())
    plan.hosts_file = hosts_file(exp.name, plan.nodes)
    return plan


def _lan_bridges(plan: HostPlan, experiment: str, seg_index: int, segment: str,
                 ends: list[tuple[NodePlan, InterfacePlan]], node_index: dict[str, int]) -> None:
    """One bridge per LAN in its own namespace; beyond MAX_BRIDGE_MEMBERS a root bridge with leaf bridges."""
    netns = switch_netns_name(experiment, segment)
    plan.switch_namespaces.append(netns)
    ifindex = FIRST_IFINDEX
    root = BridgePlan(f"br{seg_index}", ifindex, segment, netns)
    plan.bridges.append(root)
    ifindex += 1
    chunks = [ends[i:i + MAX_BRIDGE_MEMBERS] for i in range(0, len(ends), MAX_BRIDGE_MEMBERS)]
    for k, chunk in enumerate(chunks):
        bridge = root
        if len(chunks) > 1:
            bridge = BridgePlan(f"br{seg_index}.{k}", ifindex, segment, netns)
            plan.bridges.append(bridge)
            plan.veths.append(VethPlan(VethEnd(netns, f"up{seg_index}.{k}", ifindex + 1, bridge.ifindex),
                                       VethEnd(netns, f"dn{seg_index}.{k}", ifindex + 2, root.ifindex)))
            ifindex += 3
        for node, iface in chunk:
            port = VethEnd(netns, f"p{node_index[node.name]}e{iface.name[3:]}", ifindex, bridge.ifindex)
            plan.veths.append(VethPlan(VethEnd(node.netns, iface.name, iface.ifindex), port))
            ifindex += 1


def hosts_file(experiment: str, nodes: list[NodePlan]) -> str:
    """/etc/hosts for every node: `node-segment` per interface and the plain name on the first one (Emulab)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"# nestbed experiment {experiment}"]
    taken = {node.name for node in nodes}     # a node called `a-lan0` owns that name, not node a's lan0 address
    for node in nodes:
        for j, iface in enumerate(node.interfaces):
            alias = f"{node.name}-{iface.segment}"
            names = ([alias] if alias not in taken else []) + ([node.name] if j == 0 else [])
            if names:
                lines.append(f"{iface.address.split('/')[0]}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"
