"""What the segments are now (realize/linkstate.py): links.json, journaled once, and the status JSON over it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestbed.cli import views
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import ShapingPlan
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState

LAN3 = (Path(__file__).parents[2] / "examples" / "lan3.yaml").read_text()


@pytest.fixture
def plan():
    return compile_plan(load_topology_text(LAN3, "lan3.yaml"))


@pytest.fixture
def state(tmp_path):
    return ExperimentState("lan3", tmp_path)


def test_status_links_json_before_any_change(plan, state):
    data = views.links_json(plan, state)
    by_name = {entry["name"]: entry for entry in data}
    link0, lan0 = by_name["link0"], by_name["lan0"]
    assert link0["kind"] == "link" and "members" not in link0
    assert link0["ends"] == [{"node": "r1", "interface": "eth0", "address": "10.0.0.1/24"},
                             {"node": "c", "interface": "eth0", "address": "10.0.0.2/24"}]
    assert lan0["kind"] == "lan" and "ends" not in lan0 and [m["node"] for m in lan0["members"]] == ["a", "b", "r1"]
    assert link0["subnet"] == "10.0.0.0/24" and link0["state"] == "up" and lan0["state"] == "up"
    assert link0["shaping"] == {"bandwidth": 10_000_000, "delay": None, "jitter": None, "loss": 0.005, "queue": None}
    json.dumps(data)


def test_saved_changes_show_in_status_and_are_journaled(plan, state):
    linkstate.save(state, "link0", "down", ShapingPlan(bandwidth=2_000_000))
    linkstate.save(state, "lan0", "up", None)
    linkstate.save(state, "link0", "down", ShapingPlan(bandwidth=3_000_000))
    saved = json.loads((state.directory / "links.json").read_text())
    assert set(saved["segments"]) == {"link0", "lan0"}
    by_name = {entry["name"]: entry for entry in views.links_json(plan, state)}
    assert by_name["link0"]["state"] == "down" and by_name["link0"]["shaping"]["bandwidth"] == 3_000_000
    assert by_name["lan0"]["state"] == "up" and by_name["lan0"]["shaping"] is None
    files = [e["path"] for e in state.journal.entries() if e["t"] == "file"]
    assert files == [str(state.directory / "links.json"), str(state.directory / "links.json.tmp")]   # once
    segments = {seg.name: (seg.shaping, st) for seg, st in linkstate.effective_segments(state, plan)}
    assert segments["link0"] == (ShapingPlan(bandwidth=3_000_000), "down")
