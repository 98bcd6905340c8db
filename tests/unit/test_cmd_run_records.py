"""`nestbed run` and `nestbed records` against a fake host agent client (no root, no namespaces)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from fake_runner import FakeRunner  # noqa: E402

from nestbed.agent.store import Store  # noqa: E402
from nestbed.cli.main import app  # noqa: E402
from nestbed.cluster.local import LocalHost

SCENARIO = """
streamstarts: [s]
groups: {g: [a, b]}
agents: {sh: {group: g, path: runshell}}
eventstreams:
  s:
    - {type: event, agent: sh, method: runCommand, args: {cmd: "true"}, trigger: ran}
    - type: trigger
      triggers: [{event: ran, target: exit}]
"""


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    directory = tmp_path / "state" / "lab"
    directory.mkdir(parents=True)
    (directory / "status.json").write_text(json.dumps({"state": "up"}))
    fake = FakeRunner(["a", "b"], experiment="lab")
    monkeypatch.setattr(LocalHost, "control", lambda self, name: fake)     # the transport hands out the fake
    return directory, fake


def test_run_reaches_exit_and_stores_what_happened(lab, tmp_path):
    directory, fake = lab
    path = tmp_path / "s.aal"
    path.write_text(SCENARIO)
    result = CliRunner().invoke(app, ["run", "lab", str(path)])
    assert result.exit_code == 0, result.output
    assert "scenario reached exit" in result.output and "1 events (2 node calls), 1 triggers fired" in result.output
    kinds = [e["data"]["kind"] for e in Store(directory / "control.sqlite").events() if e["source"] == "scenario"]
    assert kinds == ["stream-start", "event", "trigger", "satisfied", "stream-end", "end"]

    fake.subscribe = lambda: iter(())        # the host agent's event stream ends: it is gone
    path.write_text(SCENARIO.replace("{event: ran", "{event: never"))
    result = CliRunner().invoke(app, ["run", "lab", str(path)])
    assert result.exit_code == 1 and "the host agent is gone" in result.output


def test_run_without_exit_fails_and_bad_files_fail_in_one_line(lab, tmp_path):
    path = tmp_path / "s.aal"
    path.write_text(SCENARIO.replace("target: exit", "target: s").replace("{event: ran", "{timeout: 10000, tgt: 1"))
    result = CliRunner().invoke(app, ["run", "lab", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "s.aal:9: stream 's' item 2: a timeout trigger takes " \
        "timeout and target, not 'tgt'" in str(result.exception)
    path.write_text(SCENARIO.replace("target: exit", "count: 1"))
    result = CliRunner().invoke(app, ["run", "lab", str(path), "--timeout", "0.5"])
    assert result.exit_code == 1 and "did not reach exit (ended)" in result.output


def test_records(lab):
    directory, _ = lab
    store = Store(directory / "control.sqlite")
    store.add_record("http_client", host="local", node="a", data={"bytes": 1000, "seconds": 0.01, "status": 200})
    store.add_record("pktcounters", host="local", node="b", data={"iface": "eth0"})
    result = CliRunner().invoke(app, ["records", "lab", "--agent", "http_client", "--json"])
    assert result.exit_code == 0
    (record,) = json.loads(result.output)
    assert record["agent"] == "http_client" and record["node"] == "a" and record["host"] == "local"
    assert record["data"]["bytes"] == 1000 and record["created"] > 0
    result = CliRunner().invoke(app, ["records", "lab"])
    assert "http_client" in result.output and "pktcounters" in result.output and "2 records" in result.output


def test_many_records_in_one_transaction_read_back_in_order(tmp_path):
    store = Store(tmp_path / "control.sqlite")
    assert store.add_records("runshell", "local", [(f"n-{k}", {"exit": k % 2}) for k in range(300)]) == 300
    store.add_record("other", host="local", data={"x": 1})
    rows = store.records("runshell")
    assert [r["node"] for r in rows] == [f"n-{k}" for k in range(300)]
    assert rows[7]["data"] == {"exit": 1} and rows[7]["host"] == "local" and rows[7]["created"] > 0
    assert [r["agent"] for r in store.records()][-1] == "other"


def test_records_show_the_agent_name_and_its_kind_and_agent_matches_either(lab):
    directory, _ = lab
    store = Store(directory / "control.sqlite")
    store.add_record("client_agent", host="local", node="a", data={"bytes": 1000}, kind="http_client")
    store.add_record("sh", host="local", node="b", data={"exit": 0}, kind="runshell")
    for wanted in ("client_agent", "http_client"):
        result = CliRunner().invoke(app, ["records", "lab", "--agent", wanted, "--json"])
        (record,) = json.loads(result.output)
        assert (record["agent"], record["kind"], record["node"]) == ("client_agent", "http_client", "a")
    result = CliRunner().invoke(app, ["records", "lab"])
    header = result.output.splitlines()[0].split()
    assert header[:3] == ["created", "agent", "kind"]
    assert "client_agent" in result.output and "http_client" in result.output and "runshell" in result.output


def test_a_scenario_agent_files_its_records_under_its_aal_name():
    from nestbed.scenario.agents.http import HttpClient
    fake = FakeRunner(["a"], experiment="lab")
    HttpClient(fake, "client_agent", ["a"], {"servers": ["b"]}).startClient()
    ((_, argv),) = fake.spawned.values()
    assert argv[argv.index("--agent") + 1] == "client_agent"
