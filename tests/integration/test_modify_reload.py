"""A modify in place that adds and removes nodes reloads the running host agent (its `reload` op), it is not
restarted: a program spawned through it in an untouched node keeps its pid and its stop handle, the agent its pid,
and the counters cover the new node. A node whose start commands changed has its old commands stopped and the new
ones started, in that node only. Down leaves nothing."""
from __future__ import annotations

import os
import time

from conftest import exec_in, nestbed, our_namespaces, state_dir
from nestbed import procs
from nestbed.agent import supervision
from nestbed.agent.hostclient import HostAgentClient
from nestbed.agent.store import Store
from nestbed.plan.compile import netns_name
from nestbed.realize.state import experiment

BEFORE = """\
nodes:
  a: {}
  b: {commands: ["sleep 3601"]}
  c: {commands: ["sleep 3602"]}
  d: {}
lans:
  lan0: {members: [a, b, c, d]}
"""
# d removed, x added on lan0; c's commands changed
AFTER = """\
nodes:
  a: {}
  b: {commands: ["sleep 3601"]}
  c: {commands: ["sleep 3603", "sleep 3604"]}
  x: {}
lans:
  lan0: {members: [a, b, c, x]}
"""


def _pids_in(name: str, node: str, comm: str = "sleep") -> dict[int, str]:
    """pid → command line of the `comm` processes in the node's namespace."""
    inode = os.stat(f"/run/netns/{netns_name(name, node)}").st_ino
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode and open(f"/proc/{pid}/comm").read().strip() == comm:
                found[int(pid)] = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()
        except OSError:
            continue
    return found


def _counted_nodes(client: HostAgentClient, after: float) -> set[str]:
    """The nodes of the first counters sample taken after `after` (time.time())."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = client.counters()
        if answer.get("created") and answer["created"] > after:
            return {row["node"] for row in answer["rows"]}
        time.sleep(0.2)
    raise AssertionError("no counters sample after the modify")


def test_modify_reloads_the_agent_and_restarts_changed_commands(experiments) -> None:
    name, path = experiments.write(BEFORE)
    nestbed("up", str(path))
    state = experiment(name)
    agent_pid = supervision.agent_status(state)["pid"]          # type: ignore[index]
    b_sleep = _pids_in(name, "b")
    (c_old,) = _pids_in(name, "c")
    with HostAgentClient(name) as client:
        handle = client.spawn("a", ["sleep", "3605"], "long")
        program = int(handle.split("/")[2])
        spawned_in_d = client.spawn("d", ["sleep", "3606"], "doomed")
    d_program = int(spawned_in_d.split("/")[2])
    assert _pids_in(name, "a") == {program: "sleep 3605"}

    path.write_text(f"name: {name}\n" + AFTER)
    changed = nestbed("up", str(path)).stdout
    for line in ("node x added", "node d removed", "node c: commands changed (restarted)", "host agent reloaded"):
        assert line in changed, changed

    status = supervision.agent_status(state)
    assert status == {"pid": agent_pid, "alive": True}, status              # not restarted
    assert _pids_in(name, "a") == {program: "sleep 3605"}                  # the spawned program runs on
    assert _pids_in(name, "b") == b_sleep                                   # b's commands untouched
    assert procs.state_of(c_old) in ("", "Z") and c_old not in _pids_in(name, "c")
    assert sorted(_pids_in(name, "c").values()) == ["sleep 3603", "sleep 3604"]
    assert procs.state_of(d_program) in ("", "Z")                           # went with its node
    with HostAgentClient(name) as client:
        assert client.ping()["pid"] == agent_pid and client.ping()["nodes"] == 4
        assert _counted_nodes(client, time.time()) == {"a", "b", "c", "x"}
        rc, out, _ = client.run("x", ["hostname"])
        assert (rc, out.strip()) == (0, "x")
        client.stop(handle)                                                  # the handle from before the modify
        assert _pids_in(name, "a") == {}
    assert exec_in(name, "x", "ping", "-c1", "-W2", "a").returncode == 0
    # the new node's mailbox is watched (its file and FIFO), the removed node's is not the agent's any more
    exec_in(name, "x", "sh", "-c", "echo from-x >> $NESTBED_MAILBOX/events.jsonl; "
                                   "echo fifo-x > $NESTBED_MAILBOX/events.fifo")
    store = Store(state.directory / "control.sqlite")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len({e["name"] for e in store.events() if e["source"] == "x"}) < 2:
        time.sleep(0.05)
    assert {e["name"] for e in store.events() if e["source"] == "x"} == {"from-x", "fifo-x"}
    journal = state_dir(name) / "journal.jsonl"
    assert sum(1 for e in state.journal.entries() if e.get("t") == "process" and e.get("node") == "c") == 2

    lines = journal.read_text()
    assert "nothing to change" in nestbed("up", str(path)).stdout and journal.read_text() == lines
    restarted = set(_pids_in(name, "c"))
    nestbed("down", name)
    assert not our_namespaces(name) and not state_dir(name).exists()
    for pid in [*b_sleep, *restarted]:
        assert procs.state_of(pid) in ("", "Z"), f"pid {pid} outlived down"
