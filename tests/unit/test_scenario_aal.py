"""AAL scenario files: good files parse into the right model; every file in tests/corpus/bad_aal gets one clear
line with file:line naming the stream and item."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from nestbed.scenario import ScenarioError, load_scenario, load_scenario_text
from nestbed.scenario.model import EventItem, WaitItem

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus" / "bad_aal"
BAD = sorted(CORPUS.glob("*.aal"))


def expectations(path: Path) -> tuple[str, int | None]:
    lines = path.read_text().splitlines()
    match = re.fullmatch(r"# expect: (.+)", lines[0])
    assert match, f"{path.name}: first line must be '# expect: …'"
    line = re.fullmatch(r"# line: (\d+)", lines[1])
    return match.group(1), int(line.group(1)) if line else None


def test_the_corpus_is_big_enough():
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_aal_gets_one_clear_line(path: Path):
    expected, line = expectations(path)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    prefix = f"{path}:{line}: " if line is not None else f"{path}:"
    assert message.startswith(prefix), message


def test_the_example_parses():
    scenario = load_scenario(REPO / "examples" / "client_server.aal")
    assert scenario.streamstarts == ["serverStream", "clientStream", "cleanupStream"]
    assert scenario.agents["client_agent"].kind == "http_client" and scenario.agents["client_agent"].builtin
    assert scenario.agents["server_agent"].kind == "http_server"        # apache is http_server
    client = scenario.streams["clientStream"].items
    assert isinstance(client[0], WaitItem) and client[0].triggers[0].event == "serverStarted"
    assert isinstance(client[1], EventItem) and client[1].method == "startClient"
    assert client[2].triggers[0].timeout == 5000
    assert scenario.streams["cleanupStream"].items[0].triggers[0].target == "exit"
    assert scenario.warnings == []


def aal(text: str) -> str:
    return textwrap.dedent(text)


def test_triggers_and_or_count_nodes_match():
    scenario = load_scenario_text(aal("""
        streamstarts: [s]
        groups: {g: [a, b, c]}
        agents: {sh: {group: g, path: runshell, execargs: []}}
        eventstreams:
          s:
            - {type: event, agent: sh, method: runCommand, args: {cmd: "true"}, trigger: done}
            - type: trigger
              triggers:
                - {type: AND, triggers: [{event: done, count: 2}, {timeout: 10}], target: t}
                - {type: OR, triggers: [{event: done, nodes: [a]}, {event: ext, retVal: 3}]}
          t:
            - {type: trigger, triggers: [{timeout: 1.5, target: exit}]}
        """), "x.aal")
    first, second = scenario.streams["s"].items[1].triggers
    assert first.kind == "and" and first.target == "t" and first.children[0].count == 2
    assert second.kind == "or" and second.children[0].nodes == ("a",)
    assert second.children[1].match == (("retVal", 3),)
    assert scenario.streams["t"].items[0].triggers[0].timeout == 1.5
    assert any("'ext'" in w for w in scenario.warnings)                 # fired only by nodes: a warning


def test_a_trigger_name_with_a_typo_is_warned_about():
    scenario = load_scenario_text(aal("""
        streamstarts: [s]
        groups: {g: [a]}
        agents: {web: {group: g, path: apache}}
        eventstreams:
          s:
            - {type: event, agent: web, method: startServer, trigger: serverStarted}
            - {type: trigger, triggers: [{event: serverStated}]}
        """), "x.aal")
    assert scenario.warnings and "did you mean 'serverStarted'?" in scenario.warnings[0]
    assert scenario.warnings[0].startswith("x.aal:8: stream 's' item 2")


def test_user_module_agent(tmp_path: Path):
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "greeter_mod.py").write_text("def hello(runner, node, text='hi'):\n    return True\n")
    path = tmp_path / "s.aal"
    path.write_text(aal("""
        streamstarts: [s]
        groups: {g: [a]}
        agents: {greet: {group: g, path: agents/greeter_mod.py}}
        eventstreams:
          s:
            - {type: event, agent: greet, method: hello, args: {text: yo}}
            - {type: event, agent: greet, method: helo}
        """))
    with pytest.raises(ScenarioError, match=r"s.aal:8: stream 's' item 2: agent 'greet' \(greeter_mod\) has no "
                                            r"method 'helo'; did you mean 'hello'\?"):
        load_scenario(path)


def test_nodes_are_checked_against_the_experiment():
    scenario = load_scenario_text(aal("""
        streamstarts: [s]
        groups:
          clients: [a, bot]
          servers: [sever]
        agents: {web: {group: servers, path: apache}}
        eventstreams:
          s: [{type: event, agent: web, method: startServer}]
        """), "x.aal")
    with pytest.raises(ScenarioError, match=r"^x.aal:5: group 'servers': node 'sever' is not in the experiment; "
                                            r"did you mean 'server'\?$"):
        scenario.resolve_nodes(["a", "server", "bot-0", "bot-1"])
    scenario.groups["servers"] = ["server"]
    scenario.resolve_nodes(["a", "server", "bot-0", "bot-1"])
    assert scenario.groups["clients"] == ["a", "bot-0", "bot-1"]        # a counted node stands for its members
