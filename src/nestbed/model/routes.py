"""A node's own routes (`routes:`, Emulab's `$node add-route dst nexthop`): what they name, checked by name.

`to` is a node (its one address: a host route), a link or LAN (its subnet) or an IPv4 network; `via` is a node
sharing a link or LAN with this one, or an address. Which addresses and device they become is the compile's
(plan/userroutes.py): addresses are not known before.
"""
from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nestbed.errors import TopologyError
from nestbed.types import Location

if TYPE_CHECKING:
    from nestbed.model.topology import Experiment, Node

API = "<python>"
HINT = "write e.g. routes: [{to: b, via: r1}] (to: a node, link, LAN or 10.1.0.0/24; via: a neighbour)"


@dataclass(frozen=True)
class UserRoute:
    to: str                   # node, link or LAN name, or an IPv4 network in CIDR (an address alone: its /32)
    via: str                  # a node sharing a link or LAN with this one, or an address on such a segment
    location: Location = API

    @property
    def to_network(self) -> bool:
        return self.to[:1].isdigit()

    @property
    def via_address(self) -> bool:
        return self.via[:1].isdigit()


def user_routes(node: str, raw: object, location: Location) -> tuple[UserRoute, ...]:
    """Routes from the Python API or the loader: UserRoutes, {to, via} mappings or (to, via) pairs; a `to` or
    `via` may be a Node, Link or Lan object."""
    if raw == ():
        return ()
    if isinstance(raw, (str, Mapping)) or not isinstance(raw, Iterable):
        raise TopologyError(f"node {node!r}: routes must be a list", location, HINT)
    routes = []
    for item in raw:
        if isinstance(item, UserRoute):
            routes.append(user_route(node, item.to, item.via, item.location))
        elif isinstance(item, Mapping) and set(item) == {"to", "via"}:
            routes.append(user_route(node, item["to"], item["via"], location))
        elif isinstance(item, tuple) and len(item) == 2:
            routes.append(user_route(node, item[0], item[1], location))
        else:
            raise TopologyError(f"node {node!r}: route {item!r} needs exactly to and via", location, HINT)
    return tuple(routes)


def user_route(node: str, to: object, via: object, location: Location) -> UserRoute:
    to, via = getattr(to, "name", to), getattr(via, "name", via)
    if not isinstance(to, str) or not to:
        raise TopologyError(f"node {node!r}: route to {to!r}: to must name a node, link, LAN or network",
                            location, HINT)
    if not isinstance(via, str) or not via:
        raise TopologyError(f"node {node!r}: route to {to}: via {via!r} must name a node or an address",
                            location, HINT)
    if to[:1].isdigit():
        try:
            to = str(ipaddress.IPv4Network(to))
        except ValueError as err:
            raise TopologyError(f"node {node!r}: route to {to!r}: not an IPv4 network ({err})", location,
                                "write e.g. 10.1.0.0/24, or 10.1.0.5 for one address") from None
    if via[:1].isdigit():
        try:
            via = str(ipaddress.IPv4Address(via))
        except ValueError:
            raise TopologyError(f"node {node!r}: route to {to}: via {via!r} is not an IPv4 address", location,
                                "write the next hop's address without a prefix (e.g. 10.0.1.1), or its name"
                                ) from None
    return UserRoute(to, via, location)


def check_routes(exp: Experiment, nodes: dict[str, Node]) -> None:
    """Every route names what exists, once per destination, via a neighbour (Emulab's rules, as one line each)."""
    routed = [node for node in nodes.values() if node.routes]
    if not routed:
        return
    joined: dict[str, list[str]] = {}            # node → its links and LANs, in file order
    for segment in exp.segments.values():
        for end in exp.segment_members(segment, nodes):
            joined.setdefault(end.node, []).append(segment.name)
    for node in routed:
        seen: dict[str, UserRoute] = {}
        for route in node.routes:
            what = f"route from {node.name} to {route.to}"
            if route.to in seen:
                raise TopologyError(f"{what} already exists (at {seen[route.to].location})", route.location,
                                    "give each destination one route")
            seen[route.to] = route
            if not route.to_network:
                _check_destination(exp, nodes, joined, node.name, route, what)
            if not route.via_address:
                _check_next_hop(exp, nodes, joined, node.name, route, what)


def _check_destination(exp: Experiment, nodes: dict[str, Node], joined: dict[str, list[str]], node: str,
                       route: UserRoute, what: str) -> None:
    if route.to == node:
        raise TopologyError(f"{what}: a node needs no route to itself", route.location, "remove the route")
    if route.to in nodes:
        links = joined.get(route.to, [])
        if len(links) != 1:
            raise TopologyError(f"{what}: {route.to} has {len(links)} links and LANs, so which of its addresses "
                                f"is meant is not clear", route.location,
                                f"route to one of its links or LANs ({', '.join(links[:4])}) or to an address"
                                if links else f"connect {route.to} first")
    elif route.to in exp.segments:
        if route.to in joined.get(node, []):
            raise TopologyError(f"{what}: {node} is on {route.to} itself", route.location,
                                "it reaches its own links and LANs directly: remove the route")
    else:
        raise TopologyError(f"{what}: {route.to!r} is no node, link or LAN", route.location,
                            _unknown(exp, nodes, route.to, [*nodes, *exp.segments]))


def _check_next_hop(exp: Experiment, nodes: dict[str, Node], joined: dict[str, list[str]], node: str,
                    route: UserRoute, what: str) -> None:
    if route.via == node:
        raise TopologyError(f"{what}: via {node} is the node itself", route.location, "name a neighbour")
    if route.via not in nodes:
        raise TopologyError(f"{what}: via {route.via!r} is no node", route.location,
                            _unknown(exp, nodes, route.via, list(nodes)))
    mine = joined.get(node, [])
    if not set(mine) & set(joined.get(route.via, [])):
        neighbours = sorted({m.node for s in mine for m in exp.segment_members(exp.segments[s], nodes)} - {node})
        raise TopologyError(f"{what}: {route.via} shares no link or LAN with {node}", route.location,
                            f"via must be a neighbour of {node}: {', '.join(neighbours[:6]) or 'it has none'}")


def _unknown(exp: Experiment, nodes: dict[str, Node], name: str, known: list[str]) -> str:
    group = exp.nodes.get(name)
    if group is not None and group.count is not None:
        return f"{name} is a group of {group.count} nodes: name one of them (e.g. {name}-0)"
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]!r}?" if close else "name a node, link or LAN of the topology"
