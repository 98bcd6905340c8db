"""Static shortest-path routes, as DETER/Emulab's static routing gives: every node reaches every experiment subnet.

One breadth-first search per destination segment over the node–segment graph (a LAN is one hop, never a clique),
so cost grows with segments × interfaces. A node's most common next hop becomes one route to the experiment's
covering supernet; longest-prefix match keeps the other routes correct.
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
    """Routes per node, and the nodes that forward others' traffic (next hops)."""
    by_node: dict[str, list[tuple[str, Attachment]]] = {}
    for name, (_subnet, attachments) in segments.items():
        for att in attachments:
            by_node.setdefault(att.node, []).append((name, att))

    next_hops: dict[str, dict[str, tuple[str, str]]] = {node: {} for node in by_node}  # node → subnet → (gw, dev)
    forwarders: set[str] = set()
    for target, (subnet, attachments) in segments.items():
        dest = str(subnet)
        seen_nodes = {att.node for att in attachments}
        seen_segments = {target}
        frontier = deque(att.node for att in attachments)
        while frontier:
            node = frontier.popleft()
            for seg_name, own in by_node[node]:
                if seg_name in seen_segments:
                    continue
                seen_segments.add(seg_name)
                for neighbour in segments[seg_name][1]:
                    if neighbour.node in seen_nodes:
                        continue
                    seen_nodes.add(neighbour.node)
                    next_hops[neighbour.node][dest] = (str(own.address.ip), neighbour.device)
                    forwarders.add(node)
                    frontier.append(neighbour.node)

    routes: dict[str, list[Route]] = {}
    for node, hops in next_hops.items():
        routes[node] = _aggregate(hops, supernet, reaches_all=len(hops) + len(by_node[node]) >= len(segments))
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
