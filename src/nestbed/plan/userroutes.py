"""The routes users give nodes (`routes:`, model/routes.py) as RoutePlans, once addresses are known.

`to` a node → its one address /32 (Emulab's host route), a link or LAN → its subnet, a network → itself; `via` a
node → its address on the segment it shares with this node as Emulab's add-route chose it: the LAST link made
between the two (find_link), else the first LAN they share (find_commonlan), in declaration order; the device is
this node's interface there. `via` an address → the interface whose subnet holds it. A user's route
replaces a computed one (routing: static) to the same destination, and its next hop forwards (as static's do).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Collection

from nestbed.errors import TopologyError
from nestbed.model.routes import UserRoute
from nestbed.model.topology import Node
from nestbed.plan.hostplan import InterfacePlan, NodePlan, RoutePlan


def apply_user_routes(nodes: dict[str, Node], plans: dict[str, NodePlan],
                      subnets: dict[str, ipaddress.IPv4Network], links: Collection[str]) -> None:
    """Resolve every node's routes into its plan (the model checked the names: validate()). `subnets`: every
    segment's, in declaration order; `links`: which of them are links (the others are LANs)."""
    if not any(node.routes for node in nodes.values()):
        return
    owner = {(iface.segment, _ip(iface)): name for name in nodes for iface in plans[name].interfaces}
    for name, node in nodes.items():
        if not node.routes:
            continue
        plan = plans[name]
        resolved: dict[str, tuple[UserRoute, RoutePlan]] = {}
        for route in node.routes:
            what = f"route from {name} to {route.to}"
            destination = _destination(route, plans, subnets)
            if any(ipaddress.IPv4Interface(i.address).network == destination for i in plan.interfaces):
                raise TopologyError(f"{what}: {destination} is the subnet of one of {name}'s own links or LANs",
                                    route.location, "it is reached directly: remove the route")
            key = str(destination)
            if key in resolved:
                other = resolved[key][0]
                raise TopologyError(f"{what}: {key} is also where its route to {other.to} goes (at "
                                    f"{other.location})", route.location, "give each destination one route")
            iface, gateway = _next_hop(route, plan, plans, what, list(subnets), links)
            hop = owner.get((iface.segment, gateway))
            if hop is not None:
                plans[hop].forwarding = True
            resolved[key] = (route, RoutePlan(key, gateway, iface.name))
        plan.routes = [r for r in plan.routes if r.destination not in resolved] + [r for _, r in resolved.values()]


def _destination(route: UserRoute, plans: dict[str, NodePlan],
                 subnets: dict[str, ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    if route.to_network:
        return ipaddress.IPv4Network(route.to)
    if route.to in subnets:
        return subnets[route.to]
    return ipaddress.IPv4Network(f"{_ip(plans[route.to].interfaces[0])}/32")     # the model: it has one


def _ip(iface: InterfacePlan) -> str:
    return iface.address.split("/")[0]


def _next_hop(route: UserRoute, plan: NodePlan, plans: dict[str, NodePlan], what: str, order: list[str],
              links: Collection[str]) -> tuple[InterfacePlan, str]:
    if not route.via_address:
        theirs = {iface.segment: iface for iface in plans[route.via].interfaces}
        mine = {iface.segment: iface for iface in plan.interfaces}
        shared = [name for name in order if name in mine and name in theirs]     # the model checked one exists
        shared_links = [name for name in shared if name in links]
        segment = shared_links[-1] if shared_links else shared[0]      # find_link (the last), then find_commonlan
        return mine[segment], _ip(theirs[segment])
    gateway = ipaddress.IPv4Address(route.via)
    for iface in plan.interfaces:
        own = ipaddress.IPv4Interface(iface.address)
        if gateway == own.ip:
            raise TopologyError(f"{what}: via {gateway} is {plan.name}'s own address", route.location,
                                "name a neighbour's address")
        if gateway in own.network:
            return iface, str(gateway)
    subnets = ", ".join(str(ipaddress.IPv4Interface(i.address).network) for i in plan.interfaces[:4])
    raise TopologyError(f"{what}: via {gateway} is on none of {plan.name}'s links or LANs", route.location,
                        f"name a neighbour, or an address in {subnets or 'a subnet of its own'}")
