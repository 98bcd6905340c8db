"""`nestbed demo`'s own part (no root): the flags applied to examples/catch/catch.yaml, and refusals that come
before anything is made."""
from __future__ import annotations

import pytest
import yaml
from rich.console import Console

from nestbed.cli import demo
from nestbed.model import load_topology_text

SMALL = """\
name: catch
nodes:
  irc1: {}
  irc2: {}
  bota: {count: 10}
  botb: {count: 10}
  target: {}
lans:
  lan-a: {members: [irc1, bota, target]}
  lan-b: {members: [irc2, botb, target]}
"""


def counts_of(text: str) -> dict[str, int]:
    """Node name → how many nodes it stands for (a counted family is expanded only when compiled)."""
    return {name: node.count or 1 for name, node in load_topology_text(text, "catch.yaml").nodes.items()}


@pytest.mark.parametrize("bots, a, b", [(20, 10, 10), (5, 3, 2), (2, 1, 1)])
def test_bots_are_split_over_the_two_servers_families(bots: int, a: int, b: int) -> None:
    counts = counts_of(demo.demo_topology_text(SMALL, "catch.yaml", bots, "process"))
    assert (counts["bota"], counts["botb"]) == (a, b)


def test_the_target_takes_the_kind_asked_for() -> None:
    raw = yaml.safe_load(demo.demo_topology_text(SMALL, "catch.yaml", 4, "qemu"))
    assert raw["nodes"]["target"]["kind"] == "qemu"
    experiment = load_topology_text(demo.demo_topology_text(SMALL, "catch.yaml", 4, "qemu"), "catch.yaml")
    assert experiment.nodes["target"].kind == "qemu"


@pytest.mark.parametrize("bots, target, says", [
    (1, "process", "at least 2 bots"),
    (4, "physical", "needs a host of its own: give --cluster too"),
    (4, "vm", "is not one of process, qemu, physical"),
])
def test_bad_flags_are_one_line(bots: int, target: str, says: str) -> None:
    """(physical is fine on a cluster: demo_topology_text(..., on_cluster=True))"""
    with pytest.raises(demo.DemoError) as refused:
        demo.demo_topology_text(SMALL, "catch.yaml", bots, target)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_a_topology_without_the_bot_families_is_refused() -> None:
    with pytest.raises(demo.DemoError) as refused:
        demo.demo_topology_text("name: catch\nnodes: {a: {}}\n", "catch.yaml", 4, "process")
    assert "catch.yaml" in str(refused.value) and "bota" in str(refused.value)


def test_a_missing_cluster_and_an_unwritable_report_directory_are_refused_before_anything(tmp_path,
                                                                                          monkeypatch) -> None:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    console = Console(file=open("/dev/null", "w"))
    from nestbed.errors import TopologyError
    with pytest.raises(TopologyError) as missing:                 # a missing cluster file: one line, nothing made
        demo.run_demo(console, console, cluster=str(tmp_path / "lab.yaml"), out_dir=str(tmp_path / "r"))
    assert "does not exist" in str(missing.value) and not (tmp_path / "r").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(demo.DemoError) as refused:
        demo.run_demo(console, console, out_dir=str(blocker / "report"))
    assert "-o" in str(refused.value)
    assert not (tmp_path / "state").exists()          # nothing was made


def test_the_examples_are_the_demos_files() -> None:
    directory = demo.catch_directory()
    text = demo.demo_topology_text((directory / "catch.yaml").read_text(), "catch.yaml", 20, "process")
    counts = counts_of(text)
    assert counts["bota"] + counts["botb"] == 20
    assert {"irc1", "irc2", "botmaster", "target"} <= set(counts)


def test_an_existing_experiment_of_the_demos_name_is_refused_not_removed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    mine = tmp_path / "state" / "catch"
    mine.mkdir(parents=True)
    (mine / "plan.json").write_text("{}")
    console = Console(file=open("/dev/null", "w"))
    with pytest.raises(demo.DemoError) as refused:
        demo.run_demo(console, console, out_dir=str(tmp_path / "report"))
    assert "nestbed down catch" in str(refused.value)
    assert (mine / "plan.json").read_text() == "{}"
