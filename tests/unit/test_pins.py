"""Stable numbering (plan/pins.py): compiling with a plan's own pins changes nothing, and editing the topology
(a node added at the top, a LAN member removed, shaping changed) keeps every untouched object's numbers."""
from __future__ import annotations

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.pins import pins_of


def topology(nodes: list[str], links: list[tuple[str, str]], lans: dict[str, list[str]],
             top: str | None = None, bandwidth: str = "10Mbit") -> str:
    lines = ["name: pn", "nodes:"]
    lines += [f"  {top}: {{}}"] if top else []
    lines += [f"  {n}: {{}}" for n in nodes]
    lines.append("links:")
    lines += [f"  - {{name: nl{top}, ends: [{top}, {nodes[0]}]}}"] if top else []
    lines += [f"  - {{name: l{k}, ends: [{a}, {b}], bandwidth: {bandwidth}}}" for k, (a, b) in enumerate(links)]
    if not links and not top:
        lines[-1] = "links: []"
    lines.append("lans:" if lans else "lans: {}")
    lines += [f"  {name}: {{members: [{', '.join(members)}]}}" for name, members in lans.items()]
    return "\n".join(lines) + "\n"


@st.composite
def topologies(draw):
    count = draw(st.integers(2, 7))
    nodes = [f"n{i}" for i in range(count)]
    pairs = [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:]]
    links = draw(st.lists(st.sampled_from(pairs), max_size=4, unique=True))
    lan_members = draw(st.lists(st.lists(st.sampled_from(nodes), min_size=2, max_size=count, unique=True),
                                max_size=3))
    return nodes, links, {f"lan{k}": m for k, m in enumerate(lan_members)}


def plan_of(text: str, pins=None):
    return compile_plan(load_topology_text(text, "t.yaml"), pins=pins)


@settings(max_examples=60, deadline=None)
@given(topologies())
def test_compiling_with_its_own_pins_changes_nothing(topo) -> None:
    plan = plan_of(topology(*topo))
    assert plan_of(topology(*topo), pins_of(plan)).to_json() == plan.to_json()


@settings(max_examples=60, deadline=None)
@given(topologies())
def test_a_node_added_at_the_top_leaves_every_other_interface_alone(topo) -> None:
    before = plan_of(topology(*topo))
    after = plan_of(topology(*topo, top="z"), pins_of(before))
    assert after.node("z").interfaces
    for node in before.nodes:
        now = {i.segment: i for i in after.node(node.name).interfaces}
        for iface in node.interfaces:
            assert now[iface.segment] == iface
    assert {b for b in before.bridges} <= set(after.bridges)
    assert {v for v in before.veths} <= set(after.veths)


def test_removed_numbers_are_not_reused() -> None:
    nodes = ["a", "b", "c"]
    first = plan_of(topology(nodes, [], {"lan0": nodes}))
    without_c = plan_of(topology(["a", "b"], [], {"lan0": ["a", "b"]}), pins_of(first))
    assert [i for i in without_c.node("a").interfaces] == first.node("a").interfaces
    again = plan_of(topology(["a", "b", "d"], [], {"lan0": ["a", "b", "d"]}), pins_of(without_c))
    c, d = first.node("c").interfaces[0], again.node("d").interfaces[0]
    assert d.mac != c.mac                                  # node index past c's
    ports = {v.b.name: v.b.ifindex for v in again.veths}
    old_ports = {v.b.name: v.b.ifindex for v in first.veths}
    assert ports[f"p{again.pins['nodes']['d']}e0"] > max(old_ports.values())   # port ifindex past c's


def test_a_lan_added_early_keeps_subnets_and_addresses() -> None:
    text = textwrap.dedent("""\
        name: pn
        nodes: {a: {}, b: {}, c: {}}
        lans:
          lan1: {members: [a, b, c]}
        """)
    first = plan_of(text)
    edited = text.replace("lans:\n", "lans:\n  lan0: {members: [b, c]}\n")
    second = plan_of(edited, pins_of(first))
    assert {s.name: s.subnet for s in second.segments}["lan1"] == first.segments[0].subnet
    assert second.node("a").interfaces == first.node("a").interfaces
    for name in "bc":
        assert second.node(name).interfaces[0] == first.node(name).interfaces[0]
        assert second.node(name).interfaces[1].name == "eth1"
    new_subnet = {s.name: s.subnet for s in second.segments}["lan0"]
    assert new_subnet != first.segments[0].subnet
