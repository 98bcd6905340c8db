"""Static shortest-path routes, as DETER/Emulab's static routing gives: every node reaches every experiment subnet.

One breadth-first search per destination segment over the node–segment graph (a LAN is one hop, never a clique),
through nodes with two or more interfaces only, so cost grows with segments × such nodes' interfaces.
A node's most common next hop becomes one route to the experiment's covering supernet; longest-prefix match
keeps the other routes correct.
"""
from __future__ import annotations

import ipaddress
from collections import Counter, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    destination: str      # CIDR
    gateway: str          # next hop's address on the shared segment
    device: str           # the node's interface toward it


@dataclass(frozen=True)
class Attachment:
    node: str
    device: str
    address: ipaddress.IPv4Interface


def shortest_path_routes(segments: dict[str, tuple[ipaddress.IPv4Network, list[Attachment]]],
                         supernet: ipaddress.IPv4Network | None) -> tuple[dict[str, list[Route]], set[str]]:
    """Routes per node, and the nodes that forward others' traffic (next hops).

    Only nodes on two or more segments ("core" nodes) can carry traffic onward, so the searches run over core
    nodes alone; a leaf's next hop toward T is whoever first reached the leaf's segment in the search from T,
    which is the same for every leaf on that segment (they share one computed route list).
    """
    by_node: dict[str, list[tuple[str, Attachment, str]]] = {}
    for name, (_subnet, attachments) in segments.items():
        for att in attachments:
            by_node.setdefault(att.node, []).append((name, att, str(att.address.ip)))
    core = {node for node, atts in by_node.items() if len(atts) > 1}
    core_members = {name: [(a.node, a.device) for a in atts if a.node in core]
                    for name, (_subnet, atts) in segments.items()}
    has_leaves = {name: any(a.node not in core for a in atts) for name, (_subnet, atts) in segments.items()}

    core_hops: dict[str, dict[str, tuple[str, str]]] = {node: {} for node in core}   # node → dest → (gw, dev)
    segment_hops: dict[str, dict[str, str]] = {name: {} for name in segments}         # segment → dest → gw
    forwarders: set[str] = set()
    for target, (subnet, _attachments) in segments.items():
        dest = str(subnet)
        seen_nodes = {node for node, _dev in core_members[target]}
        seen_segments = {target}
        frontier = deque(node for node, _dev in core_members[target])
        while frontier:
            node = frontier.popleft()
            for seg_name, _own, own_ip in by_node[node]:
                if seg_name in seen_segments:
                    continue
                seen_segments.add(seg_name)
                segment_hops[seg_name][dest] = own_ip
                if has_leaves[seg_name]:
                    forwarders.add(node)
                for neighbour, device in core_members[seg_name]:
                    if neighbour in seen_nodes:
                        continue
                    seen_nodes.add(neighbour)
                    core_hops[neighbour][dest] = (own_ip, device)
                    forwarders.add(node)
                    frontier.append(neighbour)

    routes: dict[str, list[Route]] = {}
    shared: dict[tuple[str, str], list[Route]] = {}
    total = len(segments)
    for node, atts in by_node.items():
        if node in core:
            routes[node] = _aggregate(core_hops[node], supernet, len(core_hops[node]) + len(atts) >= total)
            continue
        seg_name, att, _ip = atts[0]
        key = (seg_name, att.device)
        if key not in shared:
            hops = {dest: (gw, att.device) for dest, gw in segment_hops[seg_name].items()}
            shared[key] = _aggregate(hops, supernet, len(hops) + 1 >= total)
        routes[node] = shared[key]
    return routes, forwarders


def _aggregate(hops: dict[str, tuple[str, str]], supernet: ipaddress.IPv4Network | None,
               reaches_all: bool) -> list[Route]:
    if not hops:
        return []
    common = Counter(hops.values()).most_common(1)[0][0] if supernet is not None and reaches_all else None
    routes = [Route(dest, gw, dev) for dest, (gw, dev) in hops.items() if (gw, dev) != common]
    if common is not None:
        routes.insert(0, Route(str(supernet), common[0], common[1]))
    return routes


def covering_supernet(subnets: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    """The smallest network holding every subnet (None if that would be the whole address space)."""
    if not subnets:
        return None
    low = min(int(s.network_address) for s in subnets)
    high = max(int(s.broadcast_address) for s in subnets)
    prefix = 32 - (low ^ high).bit_length()
    if prefix < 8:
        return None
    return ipaddress.IPv4Network((low, prefix), strict=False)
