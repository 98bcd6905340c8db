"""Runtime link changes without root (realize/links.py): a change refused in one line before anything is
touched, and `nestbed link` errors in one line."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nestbed.cli.main import app
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize import links
from nestbed.realize.state import ExperimentState

LAN3 = (Path(__file__).parents[2] / "examples" / "lan3.yaml").read_text()


@pytest.fixture
def plan():
    return compile_plan(load_topology_text(LAN3, "lan3.yaml"))


@pytest.fixture
def state(tmp_path):
    return ExperimentState("lan3", tmp_path)


def test_unknown_segment_says_did_you_mean(plan, state):
    with pytest.raises(ExperimentError) as error:
        links.change(state, plan, "lnk0", "down")
    assert str(error.value) == "experiment 'lan3' has no link or LAN 'lnk0'; did you mean 'link0'?"
    with pytest.raises(ExperimentError, match="unknown link action 'sideways'"):
        links.change(state, plan, "link0", "sideways")
    with pytest.raises(ExperimentError, match="down takes no shaping values"):
        links.change(state, plan, "link0", "down", bandwidth="1Mbit")
    assert not (state.directory / "links.json").exists()


# -- the command line ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["link", "lan3", "link0", "set", "bandwith=5Mbit"], "did you mean bandwidth?"),
    (["link", "lan3", "link0", "set", "bandwidth=5MB"], "in bytes"),
    (["link", "lan3", "link0", "set"], "set needs at least one key=value"),
    (["link", "lan3", "link0", "sideways"], "unknown action 'sideways'"),
    (["link", "lan3", "link0", "down", "now"], "down takes no values"),
    (["link", "nosuchexp", "link0", "down"], "no experiment named 'nosuchexp'"),
])
def test_cli_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert message in str(result.exception) and "\n" not in str(result.exception)
