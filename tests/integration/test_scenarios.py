"""Scenarios on real experiments (root): the client/server example runs to its exit and the client's transfers are
recorded; an event written to a node's mailbox satisfies a trigger. Needs the host agent (nestbed.agent.hostclient)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NESTBED, exec_in, nestbed

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root

TOPOLOGY = """
nodes:
  a: {}
  b: {}
  c: {}
lans:
  lan0: {members: [a, b, c], bandwidth: 100Mbit}
"""


def test_client_server_scenario_reaches_exit_and_records_transfers(experiments, tmp_path):
    name = experiments.up(TOPOLOGY)
    scenario = tmp_path / "client_server.aal"
    scenario.write_text((REPO / "examples" / "client_server.aal").read_text().replace("timeout: 5000", "timeout: 2000"))
    result = nestbed("run", name, str(scenario), "--timeout", "60", timeout=90)
    assert "scenario reached exit" in result.stdout, result.stdout + result.stderr
    records = json.loads(nestbed("records", name, "--agent", "http_client", "--json").stdout)   # by its kind
    assert len(records) >= 2, records
    for record in records:      # filed under the scenario's name for the agent, as in MAGI, and its kind
        assert record["agent"] == "client_agent" and record["kind"] == "http_client", record
        assert record["node"] == "a" and record["host"] and record["created"]
    assert json.loads(nestbed("records", name, "--agent", "client_agent", "--json").stdout) == records   # by name
    good = [r for r in records if r["data"]["status"] == 200]
    assert good and all(1000 <= r["data"]["bytes"] <= 10000 and r["data"]["seconds"] > 0 for r in good)
    # nothing the scenario started is left running: the server's port is closed again
    probe = exec_in(name, "a", sys.executable, "-c", "import socket; socket.create_connection(('b', 8080), 2)",
                    check=False)
    assert probe.returncode != 0


def test_a_mailbox_event_satisfies_a_trigger(experiments, tmp_path):
    name = experiments.up(TOPOLOGY)
    scenario = tmp_path / "wait.aal"
    scenario.write_text("""
streamstarts: [s]
groups: {g: [a]}
agents: {sh: {group: g, path: runshell}}
eventstreams:
  s:
    - {type: event, agent: sh, method: runCommand, args: {cmd: "true"}, trigger: ready}
    - type: trigger
      triggers: [{event: go, target: exit}, {timeout: 30000}]
""")
    run = subprocess.Popen(NESTBED + ["run", name, str(scenario)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        time.sleep(3)
        assert run.poll() is None, run.communicate()
        sent = time.monotonic()
        exec_in(name, "a", "nestbed-event", "go")
        out, err = run.communicate(timeout=20)
        waited = time.monotonic() - sent
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out + err
    assert "scenario reached exit" in out and "event go → exit" in out
    assert waited < 5, waited
