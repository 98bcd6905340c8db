"""The topology JSON of the web view (web/describe.py) from compiled plans: processes on the host, processes in a
vhost, a qemu node, another host's nodes, the links' current state and the collapse threshold."""
from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from typing import Any

from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan, ShapingPlan
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState
from nestbed.web import describe

LAB = """\
name: lab
nodes:
  a: {}
  b: {}
  r: {}
links:
  - {ends: [a, r], bandwidth: 10Mbit}
lans:
  lan0: {members: [r, b], bandwidth: 100Mbit}
"""


def plan_of(text: str) -> HostPlan:
    return compile_plan(load_topology_text(textwrap.dedent(text), "t.yaml"))


def plan_state(plan: HostPlan) -> dict[str, tuple[str, ShapingPlan | None]]:
    return {seg.name: ("up", seg.shaping) for seg in plan.segments}


def without_positions(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without what web/layout.py adds (tests/unit/test_web_layout.py checks those)."""
    return {key: value for key, value in entry.items() if key not in ("x", "y", "px", "py")}


def test_processes_on_one_host():
    plan = plan_of(LAB)
    data = describe.topology(plan, plan_state(plan))
    assert data["experiment"] == "lab" and data["hosts"] == [plan.host] and data["vms"] == []
    assert [n["name"] for n in data["nodes"]] == ["a", "b", "r"]
    a = data["nodes"][0]
    assert (a["kind"], a["vm"], a["host"]) == ("process", None, plan.host)
    assert a["interfaces"] == [{"name": i.name, "address": i.address, "mac": i.mac, "segment": i.segment}
                               for i in plan.node("a").interfaces]
    link_name = next(s.name for s in plan.segments if s.kind == "link")
    assert [without_positions(link) for link in data["links"]] == [
        {"name": link_name, "kind": "link", "members": ["a", "r"], "bandwidth": 10_000_000, "state": "up"},
        {"name": "lan0", "kind": "lan", "members": ["r", "b"], "bandwidth": 100_000_000, "state": "up"}]
    assert [s["name"] for s in data["links"]] == [s.name for s in plan.segments]      # the frames' index order
    assert data["collapsed"] is False
    json.dumps(data)


def test_links_show_their_runtime_state_and_bandwidth(tmp_path):
    plan = plan_of(LAB)
    state = ExperimentState("lab", tmp_path)
    link_name = next(s.name for s in plan.segments if s.kind == "link")
    linkstate.save(state, link_name, "down", ShapingPlan(bandwidth=2_000_000))
    linkstate.save(state, "lan0", "up", None)
    links = {entry["name"]: entry for entry in describe.topology(plan, linkstate.current(state, plan))["links"]}
    assert (links[link_name]["state"], links[link_name]["bandwidth"]) == ("down", 2_000_000)
    assert (links["lan0"]["state"], links["lan0"]["bandwidth"]) == ("up", None)     # shaping removed
    unshaped = plan_of(LAB.replace(", bandwidth: 10Mbit", "").replace(", bandwidth: 100Mbit", ""))
    assert all(link["bandwidth"] is None for link in describe.topology(unshaped, {})["links"])


def test_processes_in_a_vhost_nest_host_vm_node():
    plan = plan_of(LAB + "embed: {processes_in: qemu}\n")
    data = describe.topology(plan, plan_state(plan))
    (vm,) = data["vms"]
    assert vm["kind"] == "vhost" and vm["host"] == plan.host
    assert {n["name"]: n["vm"] for n in data["nodes"]} == {"a": vm["name"], "b": vm["name"], "r": vm["name"]}
    assert all(n["host"] == plan.host and n["kind"] == "process" for n in data["nodes"])


def test_a_qemu_node_is_its_own_vm():
    plan = plan_of(LAB.replace("  r: {}", "  r: {kind: qemu, memory: 256M}"))
    data = describe.topology(plan, plan_state(plan))
    assert [without_positions(vm) for vm in data["vms"]] == [{"name": "r", "kind": "qemu", "host": plan.host}]
    nodes = {n["name"]: n for n in data["nodes"]}
    assert (nodes["r"]["kind"], nodes["r"]["vm"]) == ("qemu", "r") and nodes["a"]["vm"] is None
    assert [i["segment"] for i in nodes["r"]["interfaces"]] == [i.segment for i in plan.node("r").interfaces]


def test_another_hosts_nodes_and_vms_come_from_the_whole_plan():
    """A multi-host experiment's plan lists the other hosts' nodes in `others` (with `host`): they are drawn too,
    in experiment order, and a VM only named by their `vm` is placed on their host."""
    plan = plan_of(LAB.replace("  r: {}", "  r: {kind: qemu}") + "embed: {processes_in: qemu}\n")
    vhost = next(vm.name for vm in plan.vms if vm.kind == "vhost")
    here = [replace(n, host="h1") for n in plan.nodes if n.name == "a"]
    there = [replace(n, host="h2", vm="h2-vhost" if n.vm == vhost else n.vm) for n in plan.nodes if n.name != "a"]
    whole = replace(plan, host="h1", nodes=here, others=there, node_order=["a", "b", "r"],
                    vms=[vm for vm in plan.vms if vm.kind == "vhost"])
    data = describe.topology(whole, {})
    assert data["hosts"] == ["h1", "h2"]
    assert [(n["name"], n["host"], n["vm"]) for n in data["nodes"]] == [
        ("a", "h1", vhost), ("b", "h2", "h2-vhost"), ("r", "h2", "r")]
    assert {vm["name"]: (vm["kind"], vm["host"]) for vm in data["vms"]} == {
        vhost: ("vhost", "h1"), "h2-vhost": ("vhost", "h2"), "r": ("qemu", "h2")}
    assert all(link["state"] == "up" for link in data["links"])      # not changed: the plan's


def test_large_experiments_start_collapsed():
    def sized(count: int) -> HostPlan:
        return plan_of(f"name: big\nnodes:\n  n: {{count: {count}}}\nlans:\n  lan0: {{members: [n]}}\n")
    at, above = sized(describe.COLLAPSE_ABOVE), sized(describe.COLLAPSE_ABOVE + 1)
    assert describe.topology(at, {})["collapsed"] is False
    data = describe.topology(above, {})
    assert data["collapsed"] is True and len(data["nodes"]) == describe.COLLAPSE_ABOVE + 1
    assert len(data["links"][0]["members"]) == describe.COLLAPSE_ABOVE + 1


def test_a_controller_that_runs_no_node_is_not_drawn():
    """An emulated or real cluster's whole plan names the controller as its host, but every node runs elsewhere."""
    plan = plan_of(LAB)
    there = [replace(n, host="h1" if n.name == "a" else "h2") for n in plan.nodes]
    whole = replace(plan, host="local", nodes=[], others=there, node_order=[n.name for n in plan.nodes])
    data = describe.topology(whole, {})
    assert data["hosts"] == ["h1", "h2"] and sorted(data["host_positions"]) == ["h1", "h2"]
    assert {n["name"]: n["host"] for n in data["nodes"]} == {"a": "h1", "b": "h2", "r": "h2"}
    alone = describe.topology(replace(plan, host="local", nodes=[], others=[], node_order=[]), {})
    assert alone["hosts"] == ["local"]                       # nothing runs anywhere: the host is still shown
