"""`$node add-route dst nexthop` (Emulab's node.tcl) as the node's `routes:` (model/routes.py checks them, at the NS
line: a duplicate, a next hop that shares no link or LAN, a node destination with several links).

dst: a node (its one address, a host route), a link or LAN (its subnet), or a simplex link `[$ns link a b]` (the
link between a and b: its subnet). `$ns rtproto Manual` means these routes only: routing none (semantics.py).
"""
from __future__ import annotations

from nestbed.errors import TopologyError
from nestbed.model.located import Located, LocatedList
from nestbed.model.nsfile.evaluate import Evaluated, NsCall, NsObject


def add_route(call: NsCall, evaluated: Evaluated, nodes: dict[str, Located],
              segments: dict[str, tuple[NsObject, Located]]) -> None:
    at = evaluated.at(call.line)
    if len(call.args) != 2:
        raise TopologyError(f'{call.target} add-route: wrong # args: should be "add-route dst nexthop"', at)
    dst, hop = call.args
    if dst not in nodes and dst not in segments:
        dst = _simplex_link(evaluated, segments, dst, at)
    if hop not in nodes:
        raise TopologyError(f"{call.target} add-route {dst}: next hop {hop!r} is not a node", at,
                            "name a node on one of its links or LANs")
    route = Located({"to": dst, "via": hop})
    route.line, route.key_lines = call.line, {"to": call.line, "via": call.line}
    routes = nodes[call.target].setdefault("routes", LocatedList())
    routes.line = getattr(routes, "line", call.line)
    routes.item_lines = [*getattr(routes, "item_lines", []), call.line]
    routes.append(route)


def _simplex_link(evaluated: Evaluated, segments: dict[str, tuple[NsObject, Located]], name: str, at: str) -> str:
    """`[$ns link a b]` as a destination: the last link made between a and b (Emulab's find_link)."""
    simplex = next((o for o in evaluated.objects if o.kind == "simplex" and o.name == name), None)
    if simplex is None or len(simplex.args) < 2:
        raise TopologyError(f"add-route: {name!r} is not a node, link or LAN", at,
                            "route to a node, a link, a LAN or [$ns link a b]")
    a, b = simplex.args[:2]
    found = [n for n, (obj, _) in segments.items() if obj.kind == "link" and set(obj.args[:2]) == {a, b}]
    if not found:
        raise TopologyError(f"add-route: there is no link between {a} and {b}", at,
                            "[$ns link a b] names a duplex-link made before")
    return found[-1]


def routing_notes(evaluated: Evaluated, routing: str) -> list[str]:
    """What the user should know of the routes: Emulab uses add-route with `rtproto Manual`."""
    protocols = [c for c in evaluated.calls if c.cmd == "rtproto"]
    manual = bool(protocols) and protocols[-1].args[:1] == ["Manual"]
    first = min((c.line for c in evaluated.calls if c.cmd == "add-route"), default=0)
    if manual and not first:
        return [f"line {protocols[-1].line}: rtproto Manual without add-route: nodes reach their own links and "
                f"LANs only"]
    if first and not manual:
        return [f"line {first}: add-route without rtproto Manual: its routes are applied too"
                + (" (each replaces the computed one to its destination)" if routing == "static" else "")]
    return []
