"""Runtime link changes without root: `set` arguments, merged shaping, links.json and the status JSON, the netlink
messages a change sends, `nestbed link` errors in one line (linktest's arithmetic: test_linkchecks.py)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nestbed import netlinkwire as wire
from nestbed.cli import views
from nestbed.cli.main import app
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import ShapingPlan
from nestbed.realize import links
from nestbed.realize.state import ExperimentState

LAN3 = (Path(__file__).parents[2] / "examples" / "lan3.yaml").read_text()


@pytest.fixture
def plan():
    return compile_plan(load_topology_text(LAN3, "lan3.yaml"))


@pytest.fixture
def state(tmp_path):
    return ExperimentState("lan3", tmp_path)


# -- parsing `set` ------------------------------------------------------------------------------------------
def test_assignments_are_key_value_pairs():
    assert links.parse_assignments(["bandwidth=5Mbit", "loss=1%", "Delay=10ms"]) == {
        "bandwidth": "5Mbit", "loss": "1%", "delay": "10ms"}


@pytest.mark.parametrize("words, message", [
    ([], "set needs at least one key=value"),
    (["bandwidth"], "'bandwidth' is not key=value"),
    (["=5Mbit"], "is not key=value"),
    (["bandwith=5Mbit"], "unknown shaping key 'bandwith'; did you mean bandwidth?"),
    (["colour=red"], "unknown shaping key 'colour' (keys: bandwidth, delay, jitter, loss, queue)"),
    (["loss=1%", "loss=2%"], "loss is given twice"),
])
def test_bad_assignments_are_one_line(words, message):
    with pytest.raises(ExperimentError) as error:
        links.parse_assignments(words)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_set_merges_into_the_current_shaping_with_the_model_units():
    current = ShapingPlan(bandwidth=10_000_000, loss=0.005)
    assert links.merged_shaping(current, {"bandwidth": "5Mbit"}) == ShapingPlan(bandwidth=5_000_000, loss=0.005)
    assert links.merged_shaping(current, {"loss": "2%", "queue": "50"}) == ShapingPlan(
        bandwidth=10_000_000, loss=0.02, queue=50)
    assert links.merged_shaping(None, {"delay": "10ms", "jitter": "2ms"}) == ShapingPlan(delay=0.01, jitter=0.002)
    # jitter alone is fine when the segment has a delay already
    assert links.merged_shaping(ShapingPlan(delay=0.02), {"jitter": "1ms"}) == ShapingPlan(delay=0.02, jitter=0.001)
    assert links.merged_shaping(None, {"bandwidth": 2_000_000}) == ShapingPlan(bandwidth=2_000_000)


def test_none_removes_a_key_and_nothing_left_is_no_shaping():
    current = ShapingPlan(bandwidth=10_000_000, loss=0.005)
    assert links.merged_shaping(current, {"loss": "none"}) == ShapingPlan(bandwidth=10_000_000)
    assert links.merged_shaping(current, {"loss": "0", "bandwidth": "off"}) is None


@pytest.mark.parametrize("changes, message", [
    ({"bandwidth": "5MB"}, "in bytes"),
    ({"bandwidth": "fast"}, "is not a rate"),
    ({"delay": "10"}, "has no unit"),
    ({"loss": "150%"}, "between 0% and 100%"),
    ({"queue": "-3"}, "not a number of packets"),
    ({"jitter": "1ms"}, "jitter needs a delay"),
    ({"delay": "1ms", "jitter": "5ms"}, "larger than delay"),
])
def test_bad_values_are_one_line(changes, message):
    with pytest.raises(ExperimentError) as error:
        links.merged_shaping(None, changes, "link0 set")
    text = str(error.value)
    assert message in text and "\n" not in text and text.startswith("link0 set: ")


# -- links.json and status --json ---------------------------------------------------------------------------
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
    links._save(state, "link0", "down", ShapingPlan(bandwidth=2_000_000))
    links._save(state, "lan0", "up", None)
    links._save(state, "link0", "down", ShapingPlan(bandwidth=3_000_000))
    saved = json.loads((state.directory / "links.json").read_text())
    assert set(saved["segments"]) == {"link0", "lan0"}
    by_name = {entry["name"]: entry for entry in views.links_json(plan, state)}
    assert by_name["link0"]["state"] == "down" and by_name["link0"]["shaping"]["bandwidth"] == 3_000_000
    assert by_name["lan0"]["state"] == "up" and by_name["lan0"]["shaping"] is None
    files = [e["path"] for e in state.journal.entries() if e["t"] == "file"]
    assert files == [str(state.directory / "links.json"), str(state.directory / "links.json.tmp")]   # once
    segments = {seg.name: (seg.shaping, st) for seg, st in links.effective_segments(state, plan)}
    assert segments["link0"] == (ShapingPlan(bandwidth=3_000_000), "down")


def test_unknown_segment_says_did_you_mean(plan, state):
    with pytest.raises(ExperimentError) as error:
        links.change(state, plan, "lnk0", "down")
    assert str(error.value) == "experiment 'lan3' has no link or LAN 'lnk0'; did you mean 'link0'?"
    with pytest.raises(ExperimentError, match="unknown link action 'sideways'"):
        links.change(state, plan, "link0", "sideways")
    with pytest.raises(ExperimentError, match="down takes no shaping values"):
        links.change(state, plan, "link0", "down", bandwidth="1Mbit")
    assert not (state.directory / "links.json").exists()


# -- what a change sends ------------------------------------------------------------------------------------
def _header(message: bytes) -> tuple[int, int]:
    _length, msg_type, flags, _seq, _pid = struct.unpack_from("=IHHII", message)
    return msg_type, flags


def test_down_clears_iff_up_in_the_change_mask(plan):
    node = plan.node("r1")
    quiet, strict = links.node_batches(node, ["eth0"], "down", None, False, {"eth0": 2, "eth1": 3})
    assert not quiet.messages and strict.purposes == ["eth0 down"]
    _family, _type, index, flags, change = struct.unpack_from("=BxHiII", strict.messages[0], 16)
    assert (index, flags, change) == (2, 0, wire.IFF_UP)


def test_up_puts_back_the_routes_through_the_interface(plan):
    node = plan.node("a")
    _quiet, strict = links.node_batches(node, ["eth0"], "up", None, False, {"eth0": 2})
    assert strict.purposes == ["eth0 up", "route to 10.0.0.0/23 via 10.0.1.3"]
    msg_type, flags = _header(strict.messages[1])
    assert msg_type == wire.RTM_NEWROUTE and flags & wire.NLM_F_REPLACE and not flags & wire.NLM_F_EXCL


def test_set_deletes_the_root_qdisc_then_builds_the_new_one(plan):
    node = plan.node("c")
    quiet, strict = links.node_batches(node, ["eth0"], "set", ShapingPlan(bandwidth=2_000_000), False, {"eth0": 2})
    assert quiet.purposes == ["old qdisc on eth0"] and _header(quiet.messages[0])[0] == wire.RTM_DELQDISC
    assert strict.purposes == ["htb on eth0", "htb rate 2000000bit on eth0"]
    quiet, strict = links.node_batches(node, ["eth0"], "set", None, False, {"eth0": 2})
    assert quiet.purposes == ["old qdisc on eth0"] and not strict.messages


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


def test_values_are_checked_one_by_one_before_the_experiment_is_touched():
    links.check_values({"bandwidth": "5Mbit", "loss": "none", "jitter": "1ms"})
    with pytest.raises(ExperimentError, match="bandwidth '5MB' is in bytes"):
        links.check_values({"bandwidth": "5MB"})
