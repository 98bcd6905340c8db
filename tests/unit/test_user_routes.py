"""A node's own routes (`routes:`; model/routes.py, plan/userroutes.py): the loader's keys and one-line errors at
their line, the compile's addresses and devices (a node → its /32, a segment → its subnet, via a neighbour's
address on the shared segment), next hops forwarding, `routing: static` overridden per destination, and the same
routes in a VM's guest plan, on every host of a multi-host plan, and changed by a modify."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed.embed import embed
from nestbed.errors import TopologyError
from nestbed.model import Experiment
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.diff import diff
from nestbed.plan.hostplan import HostPlan, RoutePlan
from nestbed.plan.multihost import HostSite, compile_plans
from nestbed.plan.pins import pins_of
from nestbed.realize import bootconfig

CHAIN = """name: chain
nodes:
  a: {routes: [{to: b, via: r}]}
  r: {}
  b:
    routes:
      - {to: link0, via: 10.0.1.1}
links:
  - {ends: [a, r]}
  - {ends: [r, b]}
routing: none
"""


def routes_of(text: str) -> dict[str, list[tuple[str, str, str]]]:
    plan = compile_plan(load_topology_text(text, "t.yaml"))
    return {n.name: [(r.destination, r.gateway, r.device) for r in n.routes] for n in plan.nodes}


def error(text: str) -> str:
    with pytest.raises(TopologyError) as caught:
        compile_plan(load_topology_text(text, "t.yaml"))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_node_destination_is_its_host_route_and_a_segment_its_subnet() -> None:
    plan = compile_plan(load_topology_text(CHAIN, "t.yaml"))
    nodes = {n.name: n for n in plan.nodes}
    assert nodes["a"].routes == [RoutePlan("10.0.1.2/32", "10.0.0.2", "eth0")]
    assert nodes["b"].routes == [RoutePlan("10.0.0.0/24", "10.0.1.1", "eth0")]
    assert nodes["r"].routes == [] and nodes["r"].forwarding      # a next hop forwards, as static's do
    assert not nodes["a"].forwarding and not nodes["b"].forwarding


def test_without_routes_routing_none_gives_no_routes_and_no_forwarding() -> None:
    text = CHAIN.replace("a: {routes: [{to: b, via: r}]}", "a: {}").replace(
        "  b:\n    routes:\n      - {to: link0, via: 10.0.1.1}\n", "  b: {}\n")
    plan = compile_plan(load_topology_text(text, "t.yaml"))
    assert all(n.routes == [] and not n.forwarding for n in plan.nodes)


def test_the_device_is_the_interface_on_the_segment_shared_with_the_next_hop() -> None:
    text = """name: two
nodes:
  x: {routes: [{to: 10.99.0.0/16, via: q}, {to: 10.98.0.7, via: 10.0.0.2}]}
  p: {}
  q: {}
lans:
  lan0: {members: [x, p]}
  lan1: {members: [x, q]}
routing: none
"""
    assert routes_of(text)["x"] == [("10.99.0.0/16", "10.0.1.2", "eth1"), ("10.98.0.7/32", "10.0.0.2", "eth0")]


def test_routing_static_keeps_computed_routes_and_the_users_replace_theirs() -> None:
    text = """name: st
nodes:
  a: {routes: [{to: link1, via: r1}]}
  r1: {}
  r2: {}
  b: {}
lans:
  lan0: {members: [a, r1, r2]}
links:
  - {ends: [r1, b]}
  - {ends: [r2, b]}
"""
    computed = routes_of(text.replace("a: {routes: [{to: link1, via: r1}]}", "a: {}"))["a"]
    assert computed == [("10.0.0.0/22", "10.0.0.2", "eth0"), ("10.0.2.0/24", "10.0.0.3", "eth0")]   # via r2
    assert routes_of(text)["a"] == [("10.0.0.0/22", "10.0.0.2", "eth0"), ("10.0.2.0/24", "10.0.0.2", "eth0")]
    added = text.replace("{to: link1, via: r1}", "{to: 10.7.0.0/16, via: r2}")
    assert routes_of(added)["a"] == [*computed, ("10.7.0.0/16", "10.0.0.3", "eth0")]


def test_the_python_api_gives_the_same_routes() -> None:
    exp = Experiment("api", routing="none")
    a, r, b = exp.process("a", routes=[{"to": "b", "via": "r"}]), exp.process("r"), exp.process("b")
    exp.link(a, r)
    link = exp.link(r, b)
    exp.route(b, "link0", r)
    plan = compile_plan(exp)
    nodes = {n.name: n for n in plan.nodes}
    assert nodes["a"].routes == [RoutePlan("10.0.1.2/32", "10.0.0.2", "eth0")]
    assert nodes["b"].routes == [RoutePlan("10.0.0.0/24", "10.0.1.1", "eth0")]
    with pytest.raises(TopologyError, match="route from unknown node 'z'"):
        exp.route("z", link, r)


@pytest.mark.parametrize(("old", "new", "words"), [
    ("{to: b, via: r}", "{to: b, via: b}", "t.yaml:3: route from a to b: b shares no link or LAN with a; "
                                           "via must be a neighbour of a: r"),
    ("{to: b, via: r}", "{to: bb, via: r}", "t.yaml:3: route from a to bb: 'bb' is no node, link or LAN; "
                                            "did you mean 'b'?"),
    ("{to: b, via: r}", "{to: b, via: rr}", "t.yaml:3: route from a to b: via 'rr' is no node"),
    ("{to: b, via: r}", "{to: b, via: a}", "route from a to b: via a is the node itself"),
    ("{to: b, via: r}", "{to: a, via: r}", "route from a to a: a node needs no route to itself"),
    ("{to: b, via: r}", "{to: r, via: r}", "route from a to r: r has 2 links and LANs, so which of its "
                                           "addresses is meant is not clear; route to one of its links or LANs "
                                           "(link0, link1) or to an address"),
    ("{to: b, via: r}", "{to: link0, via: r}", "route from a to link0: a is on link0 itself"),
    ("{to: b, via: r}", "{to: b, vai: r}", "t.yaml:3: unknown key 'vai' in a route of node 'a'; did you mean 'via'?"),
    ("{to: b, via: r}", "{to: b}", "t.yaml:3: a route of node 'a' has no via"),
    ("[{to: b, via: r}]", "{to: b, via: r}", "t.yaml:3: node 'a': routes must be a list"),
    ("{to: b, via: r}", "{to: 10.0.1.1/24, via: r}", "route to '10.0.1.1/24': not an IPv4 network"),
    ("{to: b, via: r}", "{to: b, via: 10.0.0.2/24}", "via '10.0.0.2/24' is not an IPv4 address"),
    ("{to: b, via: r}", "{to: b, via: r}, {to: b, via: r}", "t.yaml:3: route from a to b already exists "
                                                            "(at t.yaml:3)"),
    ("{to: b, via: r}", "{to: b, via: 10.0.1.1}", "t.yaml:3: route from a to b: via 10.0.1.1 is on none of a's "
                                                  "links or LANs; name a neighbour, or an address in 10.0.0.0/24"),
    ("{to: b, via: r}", "{to: b, via: 10.0.0.1}", "route from a to b: via 10.0.0.1 is a's own address"),
    ("{to: b, via: r}", "{to: 10.0.0.0/24, via: r}", "route from a to 10.0.0.0/24: 10.0.0.0/24 is the subnet "
                                                     "of one of a's own links or LANs"),
    ("{to: b, via: r}", "{to: b, via: r}, {to: 10.0.1.2/32, via: r}",
     "route from a to 10.0.1.2/32: 10.0.1.2/32 is also where its route to b goes (at t.yaml:3)"),
])
def test_a_wrong_route_is_one_line_at_its_line(old: str, new: str, words: str) -> None:
    message = error(CHAIN.replace(old, new, 1))
    assert words in message, message
    assert message.startswith("t.yaml:3: "), message


def test_each_route_of_a_block_list_names_its_own_line() -> None:
    message = error(CHAIN.replace("{to: link0, via: 10.0.1.1}", "{to: link9, via: r}"))
    assert message.startswith("t.yaml:7: route from b to link9: 'link9' is no node, link or LAN"), message


def test_a_group_gives_every_member_its_routes_and_cannot_be_a_destination() -> None:
    text = """name: grp
nodes:
  bot: {count: 2, routes: [{to: far, via: r}]}
  r: {}
  far: {}
lans:
  lan0: {members: [bot, r]}
links:
  - {ends: [r, far]}
routing: none
"""
    assert routes_of(text)["bot-0"] == routes_of(text)["bot-1"] == [("10.0.1.2/32", "10.0.0.3", "eth0")]
    message = error(text.replace("bot: {count: 2, routes: [{to: far, via: r}]}", "bot: {count: 2}").replace(
        "far: {}", "far: {routes: [{to: bot, via: r}]}"))
    assert "route from far to bot: 'bot' is no node, link or LAN; bot is a group of 2 nodes" in message


def test_a_qemu_node_gets_its_routes_in_its_guest_plan() -> None:
    plan = compile_plan(load_topology_text(CHAIN.replace("a: {routes:", "a: {kind: qemu, routes:"), "t.yaml"))
    vm = next(v for v in plan.vms if v.name == "a")
    assert vm.guest is not None and vm.guest.nodes[0].routes == [RoutePlan("10.0.1.2/32", "10.0.0.2", "eth0")]
    config = bootconfig.boot_config(vm, Path("/var/lib/nestbed/chain"))      # what the VM applies at boot
    assert config is not None and "route to 10.0.1.2/32 via 10.0.0.2" in [why for _, why in config["netlink"]]


def test_every_host_of_a_multihost_plan_has_its_nodes_routes() -> None:
    text = CHAIN.replace("a: {routes:", "a: {host: emu0, routes:").replace("r: {}", "r: {host: emu1}").replace(
        "  b:\n", "  b:\n    host: emu2\n")
    exp = load_topology_text(text, "t.yaml")
    sites = {f"emu{i}": HostSite(prefix=f"nb{i}", address=f"10.250.0.{i + 1}", underlay="ul0") for i in range(3)}
    planned = compile_plans(exp, embed(exp, load_cluster_text("emulate: 3\n", "lab.yaml")), sites)
    assert planned.plans["emu0"].node("a").routes == [RoutePlan("10.0.1.2/32", "10.0.0.2", "eth0")]
    assert planned.plans["emu2"].node("b").routes == [RoutePlan("10.0.0.0/24", "10.0.1.1", "eth0")]
    assert planned.plans["emu1"].node("r").forwarding
    assert HostPlan.from_json(planned.plans["emu0"].to_json()) == planned.plans["emu0"]


def test_the_fast_reader_gives_the_same_routes() -> None:
    fast, exact = load_topology_text(CHAIN, "t.yaml", fast=True), load_topology_text(CHAIN, "t.yaml", fast=False)
    assert fast.read_fast
    assert [(r.to, r.via) for n in fast.nodes.values() for r in n.routes] == \
        [(r.to, r.via) for n in exact.nodes.values() for r in n.routes] == [("b", "r"), ("link0", "10.0.1.1")]


def test_a_modify_that_changes_a_route_sets_it_and_removes_the_dropped_one() -> None:
    old = compile_plan(load_topology_text(CHAIN, "t.yaml"))
    changed = CHAIN.replace("{to: b, via: r}", "{to: link1, via: r}")
    new = compile_plan(load_topology_text(changed, "t.yaml"), pins=pins_of(old))
    planned = diff(old, new)
    assert [(n.name, r.destination) for n, r in planned.routes_set] == [("a", "10.0.1.0/24")]
    assert [(n.name, r.destination) for n, r in planned.routes_removed] == [("a", "10.0.1.2/32")]


def test_via_a_node_is_emulabs_choice_the_last_link_between_them_then_a_common_lan() -> None:
    # Emulab's add-route: find_link (the LAST link made between the two), else find_commonlan (the first LAN).
    text = """name: hops
nodes:
  x: {routes: [{to: 10.99.0.0/16, via: r}, {to: 10.98.0.0/16, via: q}]}
  r: {}
  q: {}
lans:
  lan0: {members: [x, r, q]}
  lan1: {members: [x, q]}
links:
  - {name: first, ends: [x, r]}
  - {name: last, ends: [r, x]}
routing: none
"""
    plan = compile_plan(load_topology_text(text, "t.yaml"))
    x, r, q = (next(n for n in plan.nodes if n.name == name) for name in ("x", "r", "q"))

    def on(node: object, segment: str) -> tuple[str, str]:
        iface = next(i for i in node.interfaces if i.segment == segment)    # type: ignore[attr-defined]
        return iface.name, iface.address.split("/")[0]
    routes = {r_.destination: (r_.device, r_.gateway) for r_ in x.routes}
    assert routes["10.99.0.0/16"] == (on(x, "last")[0], on(r, "last")[1])     # not lan0, not the first link
    assert routes["10.98.0.0/16"] == (on(x, "lan0")[0], on(q, "lan0")[1])     # no link: the first common LAN
