"""`$node add-route dst nexthop` and `$ns rtproto Manual` (model/nsfile/routes.py): the corpus files with add-route
give the routes Emulab's own parser gave (tests/data/ns/SOURCES.md, "route NODE: …" lines), addresses mapped from
Emulab's numbering to nestbed's by (node, segment); Emulab's errors are one line at the NS line."""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from nestbed.errors import TopologyError
from nestbed.model import load_topology
from nestbed.model.nsfile import read
from nestbed.plan import compile_plan

pytestmark = pytest.mark.needs("tclsh")

CORPUS = Path(__file__).parent.parent / "data" / "ns"
SEGMENT = re.compile(r"^(?:link|LAN) (\S+) .*\]: (.*)$")
MEMBER = re.compile(r"(\S+):\d+=(\S+)")
ROUTE = re.compile(r"^route (\S+): (\S+) mask (\S+) \((host|net)\) via (\S+)$")


def emulab_parse(stem: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, str, str, str]]]:
    """From SOURCES.md's section of the file: Emulab's address → (node, segment), and its routes."""
    text = (CORPUS / "SOURCES.md").read_text()
    section = text.split(f"### {stem}.ns\n", 1)[1].split("\n### ", 1)[0]
    owner: dict[str, tuple[str, str]] = {}
    routes = []
    for line in section.splitlines():
        if (segment := SEGMENT.match(line)) is not None:
            for node, address in MEMBER.findall(segment.group(2)):
                owner[address] = (node.lower(), segment.group(1))
        elif (route := ROUTE.match(line)) is not None:
            node, dst, mask, kind, via = route.groups()
            routes.append((node.lower(), dst, mask, kind, via))
    return owner, routes


@pytest.mark.parametrize("stem", ["es-nodes", "it-router-manual"])
def test_the_corpus_files_give_emulabs_routes(stem: str) -> None:
    owner, expected = emulab_parse(stem)
    assert len(expected) >= 3
    exp = load_topology(CORPUS / f"{stem}.ns")
    assert exp.routing == "none"                      # rtproto Manual: these routes only
    plan = compile_plan(exp)
    nodes = {n.name: n for n in plan.nodes}
    address = {(n.name, i.segment): ipaddress.IPv4Interface(i.address) for n in plan.nodes for i in n.interfaces}
    want = set()
    for node, dst, mask, kind, via in expected:
        dst_iface = address[owner[dst]]
        destination = f"{dst_iface.ip}/32" if kind == "host" else str(dst_iface.network)
        if kind == "net":       # Emulab's mask is the segment's: nestbed's subnet has the same length
            assert dst_iface.network.prefixlen == ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        gateway_node, segment = owner[via]
        device = next(i.name for i in nodes[node].interfaces if i.segment == segment)
        want.add((node, destination, str(address[(gateway_node, segment)].ip), device))
    got = {(n.name, r.destination, r.gateway, r.device) for n in plan.nodes for r in n.routes}
    assert got == want
    assert sum(len(n.routes) for n in plan.nodes) == len(expected)
    forwarders = {owner[via][0] for *_, via in expected}
    assert {n.name for n in plan.nodes if n.forwarding} == forwarders


def test_router_manual_keeps_emulabs_own_addresses() -> None:
    plan = compile_plan(load_topology(CORPUS / "it-router-manual.ns"))
    routes = {n.name: [(r.destination, r.gateway) for r in n.routes] for n in plan.nodes}
    assert routes == {"node1": [("192.168.1.10/32", "192.168.1.3")], "node2": [("192.168.1.10/32", "192.168.1.3")],
                      "node3": [], "nodea": [("192.168.1.0/29", "192.168.1.9")]}


def test_a_simplex_link_destination_is_the_link_between_its_nodes() -> None:
    raw = read(CORPUS / "es-nodes.ns").raw
    assert {"to": "link2", "via": "node0"} in raw["nodes"]["node2"]["routes"]
    assert {"to": "link2", "via": "node3"} in raw["nodes"]["node5"]["routes"]


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "r.ns"
    path.write_text("set ns [new Simulator]\nsource tb_compat.tcl\nset a [$ns node]\nset r [$ns node]\n"
                    "set b [$ns node]\nset l0 [$ns duplex-link $a $r 100Mb 0ms DropTail]\n"
                    "set l1 [$ns duplex-link $r $b 100Mb 0ms DropTail]\n" + body + "$ns run\n")
    return path


@pytest.mark.parametrize(("body", "line", "words"), [
    ("$a add-route $b $r\n$a add-route $b $r\n$ns rtproto Manual\n", 9, "route from a to b already exists (at "),
    ("$a add-route $b $b\n$ns rtproto Manual\n", 8, "route from a to b: b shares no link or LAN with a"),
    ("$a add-route $r $r\n", 8, "route from a to r: r has 2 links and LANs"),
    ("$a add-route $b\n", 8, 'wrong # args: should be "add-route dst nexthop"'),
    ("$a add-route $b $l0\n", 8, "next hop 'l0' is not a node"),
    ("$a add-route [$ns link $a $b] $r\n", 8, "add-route: there is no link between a and b"),
    ("$a add-route bogus $r\n", 8, "add-route: 'bogus' is not a node, link or LAN"),
])
def test_emulabs_add_route_errors_are_one_line_at_the_ns_line(tmp_path: Path, body: str, line: int,
                                                               words: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(TopologyError) as caught:
        compile_plan(load_topology(path))
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: ") and words in message and "\n" not in message, message


def test_rtproto_decides_the_routing_and_add_route_without_manual_is_noted(tmp_path: Path) -> None:
    manual = read(write(tmp_path, "$a add-route $b $r\n$b add-route $l0 $r\n$ns rtproto Manual\n"))
    assert manual.raw["routing"] == "none" and not [n for n in manual.notes if "add-route" in n]
    static = read(write(tmp_path, "$a add-route $b $r\n$ns rtproto Static\n"))
    assert static.raw["routing"] == "static"
    assert "line 8: add-route without rtproto Manual: its routes are applied too (each replaces the computed " \
           "one to its destination)" in static.notes
    alone = read(write(tmp_path, "$ns rtproto Manual\n"))
    assert "line 8: rtproto Manual without add-route: nodes reach their own links and LANs only" in alone.notes


def test_the_chain_file_for_the_integration_test_routes_across_r() -> None:
    plan = compile_plan(load_topology(CORPUS / "nb-manual-chain.ns"))
    nodes = {n.name: n for n in plan.nodes}
    assert exp_routes(nodes["a"]) == [("10.0.1.2/32", "10.0.0.2")] and nodes["r"].forwarding
    assert exp_routes(nodes["b"]) == [("10.0.0.0/24", "10.0.1.1")] and nodes["r"].routes == []


def exp_routes(node: object) -> list[tuple[str, str]]:
    return [(r.destination, r.gateway) for r in node.routes]  # type: ignore[attr-defined]
