"""The host agent's protocol (no root): an Agent over a temporary state directory, its launcher a fake that
records what it is asked and answers at once, nodes inside VMs a fake guest client. Requests go over a real unix
socket pair (and, once, the agent's own socket)."""
from __future__ import annotations

import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nestbed import paths
from nestbed.agent import events, guestrunner, server, supervision
from nestbed.agent.host import Agent
from nestbed.agent.launcherclient import Launched
from nestbed.channel import Connection, decode
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize import credential
from nestbed.realize.state import ExperimentState, experiment

TOPOLOGY = """\
name: lab
nodes:
  a: {}
  b: {}
  vm1: {kind: qemu, memory: 256M}
lans:
  lan0: {members: [a, b, vm1]}
"""


class FakeLauncher:
    """LauncherClient's part the agent uses: a launch writes to the child's stdout/stderr fds and is done."""

    def __init__(self) -> None:
        self.launches: list[tuple[str, list[str], dict[str, str], tuple[int, int, int]]] = []
        self.batches: list[list[dict[str, Any]]] = []

    def launch(self, node: str, argv: list[str], env: dict[str, str], fds: tuple[int, int, int]) -> Launched:
        self.launches.append((node, argv, env, fds))
        if fds[1] != fds[2]:                     # exec: pipes the agent reads (a spawn's log takes both)
            os.write(fds[1], f"out of {node}: {' '.join(argv)}".encode())
            os.write(fds[2], b"some err")
        launched = Launched()
        launched.pid, launched.rc = os.getpid(), 3
        launched.started.set()
        launched.done.set()
        return launched

    def run_batch(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        self.batches.append(items)
        return [{"rc": 0, "out": f"{item['node']} ran {item['argv'][0]}", "err": ""} for item in items]


class FakeGuest:
    """A VM's guest agent client: run() answers as the guest would."""

    vm = "vm1"

    def __init__(self) -> None:
        self.runs: list[tuple[str, list[str]]] = []

    def run(self, node: str, argv: list[str], stdout: Any, stderr: Any, env: Any = None,
            timeout: float | None = None) -> tuple[int, bool]:
        self.runs.append((node, argv))
        stdout.write(f"guest {node}".encode())
        return 5, False


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExperimentState]:
    # a short directory of our own: a unix socket's path has room for ~100 bytes
    root = tempfile.mkdtemp(prefix="nbt-")
    monkeypatch.setenv("NESTBED_STATE_DIR", root)
    state = experiment("lab")
    state.directory.mkdir()
    state.log_dir.mkdir()
    plan = compile_plan(load_topology_text(TOPOLOGY, "t.yaml"))
    state.plan_path.write_text(plan.to_json())
    credential.ensure(state)
    yield state
    import shutil
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch) -> FakeGuest:
    fake = FakeGuest()
    monkeypatch.setattr(guestrunner, "vm_client", lambda state, plan, vm: fake)
    return fake


@pytest.fixture
def agent(state: ExperimentState, launcher: FakeLauncher) -> Agent:
    made = Agent(state, launcher_for=lambda state, nodes: launcher)
    assert [n.name for n in made.local] == ["a", "b"]       # the launcher is for process nodes only
    return made


def connect(agent: Agent, credential: str | None = "good") -> tuple[Connection, threading.Thread]:
    """A client connection to agent's server (in a thread, as the socket server runs it), hello sent."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(10)
    serving = threading.Thread(target=agent.server.handle, args=(Connection(theirs),), daemon=True)
    serving.start()
    conn = Connection(ours)
    if credential == "good":
        conn.send({"credential": paths.credential(agent.state.directory).read_text().strip()})
    elif credential is not None:
        conn.send({"credential": credential})
    return conn, serving


def ask(conn: Connection, request: dict[str, Any]) -> dict[str, Any]:
    conn.send(request)
    answer = conn.receive()
    assert answer is not None
    return answer


def test_a_wrong_or_missing_credential_is_refused_and_the_connection_closed(agent):
    for offered in (None, "0" * 64, ""):
        conn, serving = connect(agent, offered)
        if offered is None:
            conn.send({"op": "ping"})               # a request in place of the hello is no credential
        assert conn.receive() == server.REFUSED == {"error": "refused: wrong or missing credential"}
        serving.join(5)
        assert not serving.is_alive()
        assert conn.receive() is None
        conn.close()


def test_ping_then_more_requests_on_one_connection(agent):
    conn, _ = connect(agent)
    answer = ask(conn, {"op": "ping"})
    assert answer == {"ok": True, "experiment": "lab", "host": agent.host, "pid": os.getpid(), "nodes": 3}
    assert ask(conn, {"op": "counters"}) == {"created": None, "rows": []}
    conn.close()


def test_counter_window_gives_one_nodes_samples_after_a_time_or_the_last_seconds(agent):
    from nestbed.agent.store import CounterRow
    agent.events.store.add_counters(10.0, [CounterRow("a", "eth0", 1, 2, 3, 4), CounterRow("b", "eth0", 0, 0, 0, 0)])
    agent.events.store.add_counters(11.0, [CounterRow("a", "eth0", 5, 6, 7, 8), CounterRow("a", "ctl0", 9, 9, 9, 9)])
    conn, _ = connect(agent)
    answer = ask(conn, {"op": "counter_window", "node": "a", "ifaces": ["eth0"], "after": 10.0})
    assert answer == {"rows": [{"created": 11.0, "node": "a", "iface": "eth0", "rx_bytes": 5, "tx_bytes": 6,
                                "rx_packets": 7, "tx_packets": 8, "attack_rx_bytes": 0, "attack_tx_bytes": 0,
                                "attack_rx_packets": 0, "attack_tx_packets": 0}]}
    last = ask(conn, {"op": "counter_window", "node": "a", "ifaces": ["eth0"], "seconds": 5})
    assert [row["created"] for row in last["rows"]] == [10.0, 11.0]
    assert ask(conn, {"op": "counter_window", "ifaces": []})["error"].startswith("bad 'counter_window' request")
    conn.close()


def test_an_unknown_op_is_answered_with_its_name_and_the_connection_goes_on(agent):
    conn, _ = connect(agent)
    assert ask(conn, {"op": "frobnicate"}) == {"error": "unknown request 'frobnicate'"}
    assert ask(conn, {"no": "op"}) == {"error": "unknown request None"}
    assert ask(conn, {"op": ["exec"]}) == {"error": "unknown request ['exec']"}
    assert ask(conn, {"op": "ping"})["ok"] is True
    conn.close()


def test_malformed_requests_get_an_error_line_not_a_crash(agent, launcher):
    conn, serving = connect(agent)
    answer = ask(conn, {"op": "record", "data": {}})                       # no agent
    assert answer["error"].startswith("bad 'record' request: KeyError")
    answer = ask(conn, {"op": "run_many", "items": 5})                     # not a list
    assert answer["error"].startswith("bad 'run_many' request: TypeError")
    answer = ask(conn, {"op": "subscribe", "since": "yesterday"})
    assert answer["error"].startswith("bad 'subscribe' request: ValueError")
    assert agent.events.subscribers == []                                  # a failed subscribe leaves none
    assert ask(conn, {"op": "exec", "node": "zz", "argv": ["true"]}) == {"error": "experiment lab has no node 'zz'"}
    assert ask(conn, {"op": "exec", "node": "a", "argv": []}) == {"error": "exec: no argv"}
    assert ask(conn, {"op": "stop", "handle": "nonsense"}) == {"error": "not a handle: 'nonsense'"}
    assert ask(conn, {"op": "ping"})["ok"] is True                         # still serving this connection
    assert serving.is_alive() and launcher.launches == []
    conn.close()


def test_a_handler_crash_is_one_line_to_the_client_and_the_traceback_to_the_log(agent, capsys):
    def broken(conn: Connection, request: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("disk on fire")
    agent.server.handlers["ping"] = broken
    conn, _ = connect(agent)
    assert ask(conn, {"op": "ping"}) == {"error": "ping: RuntimeError: disk on fire"}
    assert ask(conn, {"op": "counters"})["rows"] == []
    assert "Traceback" in capsys.readouterr().err
    conn.close()


def test_exec_in_a_process_node_streams_what_the_launcher_started(agent, launcher):
    conn, _ = connect(agent)
    conn.send({"op": "exec", "node": "a", "argv": ["echo", "hi"], "env": {"X": "1"}})
    out, err = b"", b""
    while True:
        message = conn.receive()
        assert message is not None
        if "o" in message:
            out += decode(message["o"])
        elif "e" in message:
            err += decode(message["e"])
        else:
            break
    assert message == {"rc": 3}
    assert (out, err) == (b"out of a: echo hi", b"some err")
    ((node, argv, env, fds),) = launcher.launches
    assert (node, argv) == ("a", ["echo", "hi"])
    assert env["X"] == "1" and env["NESTBED_NODE"] == "a" and env["NESTBED_EXPERIMENT"] == "lab"
    assert ask(conn, {"op": "ping"})["ok"] is True                 # the stream ended, the connection goes on
    conn.close()


def test_run_many_batches_process_nodes_and_sends_vm_nodes_to_their_guest(agent, launcher, guest):
    conn, _ = connect(agent)
    items = [{"node": "b", "argv": ["hostname"]}, {"node": "vm1", "argv": ["uname", "-a"]},
             {"node": "zz", "argv": ["true"]}, {"node": "a", "argv": ["id"], "env": {"Y": "2"}}]
    results = ask(conn, {"op": "run_many", "items": items, "timeout": 5})["results"]
    assert [r["node"] for r in results] == ["b", "vm1", "zz", "a"]                 # in item order
    assert results[0] == {"node": "b", "rc": 0, "out": "b ran hostname", "err": ""}
    assert results[1] == {"node": "vm1", "rc": 5, "out": "guest vm1", "err": ""}
    assert results[2]["rc"] == -1 and "has no node 'zz'" in results[2]["err"]
    assert results[3]["out"] == "a ran id"
    ((first, second),) = launcher.batches                                           # one batch: b and a
    assert (first["node"], first["argv"], second["node"], second["argv"]) == ("b", ["hostname"], "a", ["id"])
    assert second["env"]["Y"] == "2" and second["env"]["NESTBED_NODE"] == "a"
    assert guest.runs == [("vm1", ["uname", "-a"])]
    conn.close()


def test_spawn_logs_to_a_file_and_journals_the_pid(agent, launcher, state):
    conn, _ = connect(agent)
    answer = ask(conn, {"op": "spawn", "node": "b", "argv": ["sleep", "9"], "name": "web"})
    assert answer == {"handle": f"b/web/{os.getpid()}", "pid": os.getpid(), "log": str(state.log_dir / "b-web.log")}
    ((node, argv, _, fds),) = launcher.launches
    assert (node, argv) == ("b", ["sleep", "9"]) and fds[1] == fds[2]              # the log takes both
    entries = state.journal.entries()
    assert {"t": "file", "path": str(state.log_dir / "b-web.log")} in entries
    assert any(e.get("t") == "pid" and e.get("node") == "b" and e.get("name") == "web" for e in entries)
    assert ask(conn, {"op": "spawn", "node": "b", "argv": ["x"], "name": "a/b"})["error"].startswith("spawn needs")
    conn.close()


def test_records_and_events_reach_the_store_and_subscribers(agent, monkeypatch):
    monkeypatch.setattr(events, "SUBSCRIBER_CHECK_SECONDS", 0.05)
    conn, _ = connect(agent)
    assert isinstance(ask(conn, {"op": "record", "agent": "http", "node": "a", "data": {"bytes": 9}})["id"], int)
    assert ask(conn, {"op": "record_many", "agent": "http", "items": [{"node": "b", "data": {}}] * 2}) == {"count": 2}
    first = ask(conn, {"op": "event", "name": "serverReady", "data": {"node": "b"}})["id"]

    watcher, watching = connect(agent)
    watcher.send({"op": "subscribe", "since": 0})
    assert watcher.receive() == {"ok": True}
    backlog = watcher.receive()
    assert backlog is not None and backlog["event"]["id"] == first
    assert (backlog["event"]["name"], backlog["event"]["data"], backlog["event"]["source"]) == \
        ("serverReady", {"node": "b"}, "controller")

    second = ask(conn, {"op": "event", "name": "go", "source": "b"})["id"]
    live = watcher.receive()
    assert live is not None and live["event"]["id"] == second and live["event"]["source"] == "b"
    agent.events.deliver("a", "event", "fromMailbox", [1])                        # a mailbox line, as the watcher
    mailed = watcher.receive()
    assert mailed is not None and (mailed["event"]["name"], mailed["event"]["source"]) == ("fromMailbox", "a")

    watcher.close()                                   # the subscription notices and ends that connection
    watching.join(5)
    assert not watching.is_alive() and agent.events.subscribers == []
    assert len(agent.events.store.events(0)) == 3
    conn.close()


def test_the_agent_socket_is_root_only_and_a_garbage_line_drops_only_that_connection(agent, state):
    serving = threading.Thread(target=agent.serve, daemon=True)
    serving.start()
    path = supervision.socket_path(state)
    deadline = time.monotonic() + 5
    while agent.listener is None and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        garbage.settimeout(5)
        garbage.connect(str(path))
        garbage.sendall(b'{"credential": "' + _credential(state).encode() + b'"}\nnot json at all\n')
        assert garbage.recv(100) == b""                # closed, without an answer
        garbage.close()
        conn = supervision.HostAgentConnection(state, timeout=5)
        try:
            assert conn.request("ping", timeout=5)["experiment"] == "lab"
        finally:
            conn.close()
    finally:
        agent.shutdown()
        serving.join(5)
    assert not serving.is_alive()


def _credential(state: ExperimentState) -> str:
    return paths.credential(state.directory).read_text().strip()


def test_the_op_table_is_every_part_s_ops_once(agent):
    assert set(agent.server.handlers) == {"ping", "exec", "run_many", "spawn", "stop", "spawn_many", "stop_many",
                                          "record", "record_many", "event", "subscribe", "counters", "counter_window",
                                          "link", "reload"}
    with pytest.raises(ValueError, match="'ping' is served twice"):
        server.table({"ping": agent.server.handlers["ping"]}, {"ping": agent.server.handlers["ping"]})
