"""The web view's layouts (web/layout.py): the vtopo from sfdp or the grid, the ptopo's nested packing, and the
cache in the experiment's directory (journaled, removed by teardown). No root; sfdp is Debian's graphviz (./run
tests installs it; missing, the tests that need it fail)."""
from __future__ import annotations

import json
import math
import stat
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import webcases
from fake_kernel import FakeKernel

from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan
from nestbed.realize import journal as journal_module
from nestbed.realize.teardown import teardown
from nestbed.web import describe, layout, planwatch, server
from nestbed.web.layout import Box, Layout, Point

NESTED = """\
name: lab
nodes:
  h: {count: 7}
  q: {kind: qemu, memory: 256M}
  r: {}
links:
  - {ends: [r, q]}
lans:
  lan0: {members: [h, r]}
  lan1: {members: [q, h-0]}
embed: {processes_in: qemu, per_vhost: 3}
"""
ONE_HOST = """\
name: lab
nodes:
  h: {count: 12}
  r: {}
  s: {}
links:
  - {ends: [r, s]}
lans:
  lan0: {members: [h, r]}
"""


def plan_of(text: str) -> HostPlan:
    return compile_plan(load_topology_text(textwrap.dedent(text), "t.yaml"))


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return [str(path)]


def distinct_and_finite(points: list[Point]) -> bool:
    return len(set(points)) == len(points) and all(math.isfinite(v) for point in points for v in point)


def inside(point: Point, box: Box, margin: float = 0.0) -> bool:
    return box[0] + margin <= point[0] <= box[2] - margin and box[1] + margin <= point[1] <= box[3] - margin


def within(inner: Box, outer: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


# --- vtopo ---------------------------------------------------------------------------------------------------

@pytest.mark.needs("sfdp")
def test_sfdp_places_every_node_and_every_lan_hub():
    plan = plan_of(ONE_HOST)
    made = layout.compute(plan)
    assert made.engine == "sfdp"
    assert set(made.nodes) == {node.name for node in plan.every_node()}
    assert set(made.hubs) == {"lan0"}                   # the point-to-point link has no position of its own
    assert distinct_and_finite([*made.nodes.values(), *made.hubs.values()])
    assert made.nodes != layout.grid_positions(plan)[0]     # not the grid under another name
    # scaled to pixels: nodes about SPACING_PX from their nearest neighbour, the top-left corner at (0, 0)
    spacing = layout.median_spacing([*made.nodes.values(), *made.hubs.values()])
    assert layout.SPACING_PX * 0.9 <= spacing <= layout.SPACING_PX * 1.1
    everything = [*made.nodes.values(), *made.hubs.values()]
    assert min(x for x, _ in everything) == 0 and min(y for _, y in everything) == 0


@pytest.mark.needs("sfdp")
def test_sfdp_layouts_are_deterministic():
    first, second = layout.compute(plan_of(NESTED)), layout.compute(plan_of(NESTED))
    assert first.engine == second.engine == "sfdp"
    assert first == second


def test_the_dot_graph_names_no_plan_name():
    """Names reach sfdp as indexes: quotes or spaces in a name cannot break the graph, nor the parse."""
    plan = plan_of(NESTED)
    dot = layout.to_dot(plan)
    assert "start=1" in dot and dot.count(" -- ") == 1 + 8 + 2       # the link, lan0's 8 members, lan1's 2
    assert not any(f"{node.name};" in dot or f" {node.name} " in dot for node in plan.every_node())


def test_without_sfdp_the_grid_is_used(tmp_path, monkeypatch):
    plan = plan_of(ONE_HOST)
    monkeypatch.setenv("PATH", str(tmp_path))                    # no sfdp on PATH
    made = layout.compute(plan)
    assert made.engine == "grid"
    assert (made.nodes, made.hubs) == layout.grid_positions(plan)
    assert set(made.nodes) == {node.name for node in plan.every_node()} and set(made.hubs) == {"lan0"}
    assert distinct_and_finite([*made.nodes.values(), *made.hubs.values()])
    assert made == layout.fallback(plan) == layout.compute(plan)        # pure and deterministic


@pytest.mark.parametrize("body", [
    "exit 3",                                                     # fails
    "echo 'node v0 nan 1 0 0'",                                   # not finite
    "echo 'node v0 one 1 0 0'",                                   # not a number
    "echo 'node v0 1 1 0 0'",                                     # some nodes missing
    "cat >/dev/null; kill -9 $$",                                 # killed
])
def test_an_sfdp_that_fails_or_answers_nonsense_gives_the_grid(tmp_path, body):
    plan = plan_of(ONE_HOST)
    made = layout.compute(plan, script(tmp_path, "sfdp", body))
    assert made.engine == "grid" and (made.nodes, made.hubs) == layout.grid_positions(plan)


def test_an_sfdp_that_times_out_gives_the_grid(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "SFDP_TIMEOUT", 0.2)
    made = layout.compute(plan_of(ONE_HOST), script(tmp_path, "sfdp", "exec sleep 30"))
    assert made.engine == "grid"


def test_the_grid_puts_a_lans_members_next_to_its_hub():
    nodes, hubs = layout.grid_positions(plan_of(ONE_HOST))
    columns = math.ceil(math.sqrt(len(nodes) + len(hubs)))
    assert hubs["lan0"] == (0.0, 0.0) and nodes["h-0"] == (layout.CELL, 0.0)
    assert nodes["h-11"] == (((12) % columns) * layout.CELL, (12 // columns) * layout.CELL)


def test_an_empty_plan_has_an_empty_layout(tmp_path):
    plan = replace(plan_of(ONE_HOST), nodes=[], segments=[])
    made = layout.compute(plan, script(tmp_path, "sfdp", "exit 1"))      # not run: nothing to place
    assert (made.engine, made.nodes, made.hubs, made.leaves) == ("sfdp", {}, {}, {})


# --- ptopo ---------------------------------------------------------------------------------------------------

def test_ptopo_nests_nodes_in_their_vm_and_vms_in_their_host():
    plan = plan_of(NESTED)
    leaves, vm_boxes, host_boxes = layout.ptopo(plan)
    nodes = plan.every_node()
    assert set(leaves) == {node.name for node in nodes}
    assert set(vm_boxes) == {vm.name for vm in plan.vms} and set(host_boxes) == {plan.host}
    assert distinct_and_finite(list(leaves.values()))
    for node in nodes:
        assert inside(leaves[node.name], host_boxes[plan.host], layout.PAD)
        if node.vm is not None:
            assert inside(leaves[node.name], vm_boxes[node.vm], layout.PAD if node.vm != node.name else 0)
    for name, box in vm_boxes.items():
        assert within(box, host_boxes[plan.host])
        others = [n.name for n in nodes if n.vm != name]
        assert not any(inside(leaves[other], box) for other in others)       # boxes hold only their own
    for a in vm_boxes.values():                                               # and do not overlap
        assert sum(1 for b in vm_boxes.values() if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]) == 1


def test_a_qemu_node_is_one_leaf_at_its_vms_centre():
    leaves, vm_boxes, _ = layout.ptopo(plan_of(NESTED))
    assert leaves["q"] == layout.centre(vm_boxes["q"])
    assert vm_boxes["q"][2] - vm_boxes["q"][0] == layout.CELL          # the size of one leaf, not a box of one


def test_hosts_stand_side_by_side_with_their_own_nodes():
    """A multi-host plan (describe's test shape): each host's box holds its nodes, none overlap."""
    plan = plan_of(NESTED)
    vhost = plan.vms[0].name
    here = [replace(n, host="h1") for n in plan.nodes if n.vm == vhost]
    there = [replace(n, host="h2", vm="h2-" + n.vm if n.vm != n.name else n.vm) for n in plan.nodes if n.vm != vhost]
    whole = replace(plan, host="h1", nodes=here, others=there, node_order=[n.name for n in plan.nodes],
                    vms=[vm for vm in plan.vms if vm.name == vhost])
    leaves, vm_boxes, host_boxes = layout.ptopo(whole)
    assert list(host_boxes) == ["h1", "h2"] and host_boxes["h1"][2] < host_boxes["h2"][0]
    for node in here + there:
        assert inside(leaves[node.name], host_boxes[node.host or ""], layout.PAD)
    assert {name for name in vm_boxes} == {vhost, "q"} | {"h2-" + vm.name for vm in plan.vms[1:3]}
    assert distinct_and_finite(list(leaves.values()))


def test_ptopo_of_many_nodes_packs_a_square_ish_host():
    plan = plan_of("name: big\nnodes:\n  n: {count: 3000}\nlans:\n  lan0: {members: [n]}\n")
    leaves, _, host_boxes = layout.ptopo(plan)
    (box,) = host_boxes.values()
    assert len(set(leaves.values())) == 3000
    assert 0.8 <= (box[2] - box[0]) / (box[3] - box[1]) <= 1.25


# --- describe ------------------------------------------------------------------------------------------------

def test_topology_json_carries_both_panes_positions():
    plan = plan_of(NESTED)
    placed = layout.fallback(plan)
    data = json.loads(json.dumps(describe.topology(plan, {}, placed)))
    assert data["layout"] == "grid"
    for node in data["nodes"]:
        assert [node["x"], node["y"]] == list(placed.nodes[node["name"]])
        assert [node["px"], node["py"]] == list(placed.leaves[node["name"]])
    lans = [link for link in data["links"] if link["kind"] == "lan"]
    assert {link["name"]: [link["x"], link["y"]] for link in lans} == {
        name: list(point) for name, point in placed.hubs.items()}
    assert all("x" not in link for link in data["links"] if link["kind"] == "link")
    assert {vm["name"]: [vm["px"], vm["py"]] for vm in data["vms"]} == {
        name: list(layout.centre(box)) for name, box in placed.vm_boxes.items()}
    assert data["hosts"] == [plan.host]                                  # still a list of names
    assert data["host_positions"] == {plan.host: list(layout.centre(placed.host_boxes[plan.host]))}
    assert describe.topology(plan, {}) == describe.topology(plan, {}, placed)     # None: the grid's


# --- cache ---------------------------------------------------------------------------------------------------

@pytest.fixture
def counted(tmp_path: Path) -> tuple[list[str], Path]:
    """The real sfdp behind a script that counts its runs."""
    runs = tmp_path / "runs"
    return [*script(tmp_path, "counting-sfdp", f'echo run >> "{runs}"\nexec sfdp "$@"'), "-Tplain"], runs


def runs_of(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


@pytest.mark.needs("sfdp")
def test_a_cache_hit_does_not_run_sfdp(tmp_path, monkeypatch, counted):
    command, runs = counted
    state, plan = webcases.running(tmp_path, monkeypatch, NESTED)
    first = layout.cached(state, plan, command)
    assert (first.engine, runs_of(runs)) == ("sfdp", 1)
    path = state.directory / layout.CACHE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = layout.cached(state, state.load_plan() or plan, command)
    assert again == first and runs_of(runs) == 1


@pytest.mark.needs("sfdp")
def test_a_changed_topology_changes_the_key_and_is_laid_out_again(tmp_path, monkeypatch, counted):
    command, runs = counted
    state, plan = webcases.running(tmp_path, monkeypatch, ONE_HOST)
    layout.cached(state, plan, command)
    changed = plan_of(ONE_HOST.replace("  s: {}", "  s: {}\n  t: {}").replace("members: [h, r]", "members: [h, r, t]"))
    assert layout.key(changed) != layout.key(plan)
    moved = plan_of(ONE_HOST + "embed: {processes_in: qemu}\n")           # the same vtopo, nodes moved into a VM
    assert layout.key(moved) != layout.key(plan)
    made = layout.cached(state, changed, command)
    assert runs_of(runs) == 2 and "t" in made.nodes
    assert json.loads((state.directory / layout.CACHE_FILE).read_text())["key"] == layout.key(changed)
    assert layout.key(plan_of(ONE_HOST)) == layout.key(plan)             # stable across compiles


@pytest.mark.needs("sfdp")
@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe", b"[]", b'{"key": "KEY", "engine": "sfdp", "nodes": {}, "hubs": {}}',
    b'{"key": "KEY", "engine": "sfdp", "nodes": NODES, "hubs": {"lan0": ["a", 1]}}',
    b'{"key": "KEY", "engine": "fcose", "nodes": NODES, "hubs": HUBS}'])
def test_a_corrupt_cache_is_laid_out_again(tmp_path, monkeypatch, counted, content):
    command, runs = counted
    state, plan = webcases.running(tmp_path, monkeypatch, ONE_HOST)
    good = layout.cached(state, plan, command)
    path = state.directory / layout.CACHE_FILE
    words = {b"KEY": layout.key(plan), b"NODES": json.dumps(good.nodes), b"HUBS": json.dumps(good.hubs)}
    for word, value in words.items():
        content = content.replace(word, value.encode())
    path.write_bytes(content)
    assert layout.cached(state, plan, command) == good and runs_of(runs) == 2
    assert json.loads(path.read_text())["key"] == layout.key(plan)             # rewritten


def test_the_cache_is_journaled_before_it_is_written_and_teardown_removes_it(tmp_path, monkeypatch):
    state, plan = webcases.running(tmp_path, monkeypatch, ONE_HOST)
    path = state.directory / layout.CACHE_FILE
    journaled: list[tuple[str, bool]] = []
    record = journal_module.Journal.record

    def watched(self: journal_module.Journal, entries: list[dict]) -> None:
        entries = list(entries)
        journaled.extend((entry["path"], Path(entry["path"]).exists()) for entry in entries)
        record(self, entries)
    monkeypatch.setattr(journal_module.Journal, "record", watched)
    layout.cached(state, plan, ["false"])
    assert journaled == [(str(path), False), (str(path) + ".tmp", False)]      # before either existed
    assert path.exists() and not path.with_name(path.name + ".tmp").exists()
    layout.cached(state, plan, ["false"])
    path.unlink()
    layout.cached(state, plan, ["false"])
    assert len(journaled) == 2                                                  # once

    report = teardown(state, FakeKernel())
    assert not path.exists() and not path.with_name(path.name + ".tmp").exists() and report.files == 1


def test_a_cache_that_cannot_be_written_still_gives_the_layout(tmp_path, monkeypatch):
    state, plan = webcases.running(tmp_path, monkeypatch, ONE_HOST)
    gone = replace(state, directory=tmp_path / "gone")                 # `down` took the directory meanwhile
    assert layout.cached(gone, plan, ["false"]) == layout.fallback(plan)
    assert not gone.directory.exists()


@pytest.mark.needs("sfdp")
def test_the_server_lays_out_through_the_cache(tmp_path, monkeypatch, counted):
    command, runs = counted
    monkeypatch.setattr(layout, "SFDP", command)
    state, plan = webcases.running(tmp_path, monkeypatch, NESTED)
    data = server.current_topology(state)
    assert data["layout"] == "sfdp" and runs_of(runs) == 1
    assert (state.directory / layout.CACHE_FILE).exists()
    assert server.current_topology(state) == data and runs_of(runs) == 1
    positions = layout.sfdp_positions(plan, ["sfdp", "-Tplain"])
    assert positions is not None
    assert data == {**describe.topology(plan, {seg.name: ("up", seg.shaping) for seg in plan.segments},
                                        Layout("sfdp", positions[0], positions[1], *layout.ptopo(plan))),
                    "plan": planwatch.plan_version(state), "linkstate": "0"}
