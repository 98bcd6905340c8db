"""An apply abandoned by its controller: the remote agent (`python -m nestbed.agent.remote --stdio`, as the SSH
transport starts it) gets a 200-node plan, and its stdin is closed mid-apply, as when the controller dies or loses
its connection. The agent stops the apply at its next step, removes what it made from its journal, and only then
exits: no namespace, process or file of the experiment is left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nestbed.model import load_topology_text
from nestbed.plan import compile_plan

pytestmark = pytest.mark.needs("root")

PREFIX = "nta"          # this test's own: nothing of another test's or the machine's carries it
PER_LAN = 19          # hosts per LAN: 10 LANs, their routers and a core router make 201 nodes


def topology(name: str) -> str:
    """201 process nodes: 10 shaped LANs of 19 hosts, each behind a router on a core router, so that up takes a
    few seconds."""
    lines = [f"name: {name}", "nodes:", "  core: {router: true}"]
    lines += [f"  r{k}: {{router: true}}" for k in range(10)]
    lines += [f"  h{k}x{i}: {{}}" for k in range(10) for i in range(PER_LAN)]
    lines += ["lans:"]
    lines += [f"  lan{k}: {{members: [r{k}, {', '.join(f'h{k}x{i}' for i in range(PER_LAN))}], "
              f"bandwidth: 100Mbit}}" for k in range(10)]
    lines += ["links:"] + [f"  - {{ends: [core, r{k}], bandwidth: 50Mbit}}" for k in range(10)]
    return "\n".join(lines) + "\n"


def namespaces_with(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{prefix}-"))
    except FileNotFoundError:
        return []


def processes_of(state: Path, name: str) -> list[str]:
    """Processes that belong to the test's state root: by environment (the agents) or command line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"NESTBED_STATE_DIR={state}".encode() in environ or str(state) in cmdline:
            found.append(f"{pid}: {cmdline[:100]}")
    return found


def root_links_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip() for line in out.splitlines() if line.split(":")[1].strip().startswith(prefix)]


@pytest.fixture
def state(own_state_root: Path, monkeypatch) -> Iterator[Path]:
    """The test's own state root (not under tmp_path: another pytest session's tmp retention may delete that,
    journals included, while the test runs) and prefix; whatever a failed run left is removed from its journal."""
    monkeypatch.setenv("NESTBED_PREFIX", PREFIX)
    yield own_state_root
    from nestbed.agent import lifecycle
    lifecycle.cleanup(everything=True)


@pytest.mark.parametrize("close_at", ["namespaces", "addresses, routes, shaping"])
def test_an_apply_whose_channel_ends_is_rolled_back_before_the_agent_exits(state, tmp_path, close_at):
    name = f"ab{uuid.uuid4().hex[:6]}"
    plan = compile_plan(load_topology_text(topology(name), "abandon.yaml"))
    assert len(plan.nodes) == 201
    stderr = (tmp_path / "agent.stderr").open("wb")
    agent = subprocess.Popen([sys.executable, "-m", "nestbed.agent.remote", "--stdio"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=stderr, env=dict(os.environ, PYTHONFAULTHANDLER='1'))
    assert agent.stdin is not None and agent.stdout is not None
    try:
        assert "hello" in json.loads(agent.stdout.readline())
        agent.stdin.write(json.dumps({"id": 1, "op": "apply", "plan": plan.to_json()}).encode() + b"\n")
        agent.stdin.flush()
        lines: list[dict[str, Any]] = []
        while not lines or lines[-1].get("more", {}).get("phase") != close_at:
            line = agent.stdout.readline()
            assert line, f"the agent ended before phase {close_at!r}: {lines[-3:]}"
            lines.append(json.loads(line))
            assert "ok" not in lines[-1] and "error" not in lines[-1], f"the apply ended first: {lines[-1]}"
        made = namespaces_with(PREFIX)
        agent.stdin.close()                              # the controller is gone
        try:
            rc = agent.wait(60)
        except subprocess.TimeoutExpired:              # its threads' stacks (faulthandler) into the message
            agent.send_signal(signal.SIGABRT)
            agent.wait()
            raise AssertionError((tmp_path / "agent.stderr").read_text()[-6000:]) from None
        rest = [json.loads(line) for line in agent.stdout.read().splitlines()]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        stderr.close()
    assert rc == 0, (tmp_path / "agent.stderr").read_text()[-2000:]
    answer = [m for m in rest if m.get("id") == 1 and "more" not in m]
    assert answer and "apply abandoned" in answer[0].get("error", ""), answer      # it did not finish
    later = [m["more"]["phase"] for m in rest if "phase" in m.get("more", {})]
    assert "addresses, routes, shaping" not in later or close_at != "namespaces", later     # it stopped early
    if close_at != "namespaces":
        assert len(made) > 100                           # it had made most namespaces by then
    assert namespaces_with(PREFIX) == []
    assert processes_of(state, name) == []               # the host agent and its launcher went too
    assert root_links_with(PREFIX) == []
    assert not (state / name).exists()                   # journal, plan, status, logs: the directory is gone
    assert not state.exists() or list(state.iterdir()) == []
