"""plan/diff.py: two HostPlans compared by identity keys, and the summary a user reads."""
from __future__ import annotations

import textwrap

from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.diff import diff, shaping_changes
from nestbed.plan.hostplan import ShapingPlan
from nestbed.plan.pins import pins_of

BASE = """\
name: df
nodes: {a: {}, b: {}, c: {}, r: {router: true}}
links:
  - {name: l1, ends: [r, a], bandwidth: 10Mbit}
lans:
  lan0: {members: [a, b, c]}
"""


def plan_of(text: str, previous=None):
    return compile_plan(load_topology_text(textwrap.dedent(text), "t.yaml"), pins=pins_of(previous))


def test_same_plan_is_empty() -> None:
    plan = plan_of(BASE)
    d = diff(plan, plan_of(BASE, plan))
    assert d.empty and d.summary() == []


def test_from_nothing_everything_is_added() -> None:
    plan = plan_of(BASE)
    d = diff(None, plan)
    assert [n.name for n in d.added_nodes] == ["a", "b", "c", "r"]
    assert set(d.added_namespaces) == set(plan.netns_names) and d.added_veths == plan.veths


def test_an_edit_is_only_its_difference() -> None:
    old = plan_of(BASE)
    edited = BASE.replace("bandwidth: 10Mbit", "bandwidth: 20Mbit").replace("[a, b, c]", "[a, b]") \
        .replace("r: {router: true}}", "r: {router: true}, x: {}}") + "  lan1: {members: [x, b]}\n"
    new = plan_of(edited, old)
    d = diff(old, new)
    assert d.summary()[:4] == ["node x added", "lan lan1 added (x, b)", "lan0: member c removed",
                               "l1: bandwidth 10Mbit → 20Mbit"]
    assert [n.name for n in d.added_nodes] == ["x"] and not d.removed_nodes
    assert [(n.name, i.segment) for n, i in d.added_interfaces] == [("b", "lan1")]
    assert [(n.name, i.segment) for n, i in d.removed_interfaces] == [("c", "lan0")]
    assert {(n.name, was.shaping.bandwidth, now.shaping.bandwidth) for n, was, now in d.reshaped} == \
        {("r", 10_000_000, 20_000_000), ("a", 10_000_000, 20_000_000)}
    assert len(d.removed_veths) == 1 and d.removed_veths[0].a.netns.endswith(".c")
    assert not d.removed_bridges and len(d.added_bridges) == 1
    assert not d.refused


def test_removing_a_node() -> None:
    old = plan_of(BASE)
    new = plan_of(BASE.replace("c: {}, ", "").replace("[a, b, c]", "[a, b]"), old)
    d = diff(old, new)
    assert [n.name for n in d.removed_nodes] == ["c"] and d.removed_namespaces == ["nb-df.c"]
    assert "node c removed" in d.summary() and "lan0: member c removed" in d.summary()


def test_shaping_lines() -> None:
    assert shaping_changes(ShapingPlan(bandwidth=10**7), ShapingPlan(bandwidth=2 * 10**7, delay=0.005)) == \
        ["bandwidth 10Mbit → 20Mbit", "delay none → 5ms"]
    assert shaping_changes(None, None) == []


def test_vms_are_refused_in_one_line() -> None:
    old = plan_of(BASE)
    new = plan_of(BASE, old)
    new.vms = [object()]        # type: ignore[list-item]
    assert diff(old, new).refused == ["modify of VM nodes (and of control: true) comes next: take the "
                                      "experiment down and up"]
