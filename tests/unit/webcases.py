"""What the web view's unit tests share: a running experiment as `up` leaves it (its plan in a state directory of
the test's own), no root and no kernel object."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan
from nestbed.realize.state import ExperimentState, experiment

LAB = """\
name: lab
nodes:
  a: {}
  b: {}
  r: {}
links:
  - {ends: [a, r], bandwidth: 10Mbit}
lans:
  lan0: {members: [r, b]}
"""


def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = LAB) -> tuple[ExperimentState, HostPlan]:
    """Experiment `lab` (or the one `text` names) with its plan.json, status up, under tmp_path/state."""
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    plan = compile_plan(load_topology_text(text, "lab.yaml"))
    state = experiment(plan.experiment)
    state.create()
    state.plan_path.write_text(plan.to_json())
    state.set_status("up")
    return state, plan
