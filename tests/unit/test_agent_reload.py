"""The host agent's `reload` (no root): a modify's new node set taken in place. The agent over a temporary state
directory, its launcher a fake that starts real (harmless) processes, so a stop handle from before the reload can
be used after it; the counters thread with a fake sampler; the mailbox watcher on real directories; the
launcher's own side of a node-set change over a socket pair with real fds; a changed node's start commands."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nestbed import procs
from nestbed.agent import mailbox, sampling
from nestbed.agent.host import Agent
from nestbed.agent.launcherclient import Launched
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.diff import diff
from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.plan.pins import pins_of
from nestbed.realize import credential, reconcile
from nestbed.realize.mailboxes import EVENTS, FIFO
from nestbed.realize.state import ExperimentState, experiment

BEFORE = "name: lab\nnodes: {a: {}, b: {}, c: {}}\nlans:\n  lan0: {members: [a, b, c]}\n"
AFTER = "name: lab\nnodes: {a: {}, b: {}, x: {}}\nlans:\n  lan0: {members: [a, b, x]}\n"


def plan_of(text: str, previous: HostPlan | None = None) -> HostPlan:
    return compile_plan(load_topology_text(text, "t.yaml"), pins=pins_of(previous))


class RealLauncher:
    """A launcher that starts argv for real on this host (session leaders, as the launcher's children are) and
    records node-set changes."""

    def __init__(self) -> None:
        self.changes: list[tuple[list[str], list[str]]] = []
        self.children: list[subprocess.Popen[bytes]] = []

    def launch(self, node: str, argv: list[str], env: dict[str, str], fds: tuple[int, int, int]) -> Launched:
        child = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], start_new_session=True)
        self.children.append(child)
        launched = Launched()
        launched.pid = child.pid
        launched.started.set()
        threading.Thread(target=lambda: (child.wait(), launched.done.set()), daemon=True).start()
        return launched

    def run_batch(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        return [{"rc": 0, "out": "", "err": ""} for _ in items]

    def change_nodes(self, added: list[NodePlan], removed: list[str]) -> None:
        self.changes.append(([n.name for n in added], list(removed)))


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExperimentState]:
    root = tempfile.mkdtemp(prefix="nbr-")
    monkeypatch.setenv("NESTBED_STATE_DIR", root)
    state = experiment("lab")
    state.directory.mkdir()
    state.log_dir.mkdir()
    state.plan_path.write_text(plan_of(BEFORE).to_json())
    credential.ensure(state)
    yield state
    shutil.rmtree(root, ignore_errors=True)


def test_reload_takes_the_new_node_set_and_keeps_the_programs_of_nodes_that_stay(state):
    launcher = RealLauncher()
    agent = Agent(state, launcher_for=lambda state, nodes: launcher)
    kept = agent.programs.spawn({"node": "a", "argv": ["sleep", "60"], "name": "long"})["handle"]
    doomed = agent.programs.spawn({"node": "c", "argv": ["sleep", "60"], "name": "gone"})["handle"]
    old = state.load_plan()
    state.plan_path.write_text(plan_of(AFTER, old).to_json())

    answer = agent.reload()
    assert answer == {"ok": True, "pid": os.getpid(), "added": ["x"], "removed": ["c"], "nodes": 3}
    assert launcher.changes == [(["x"], ["c"])]
    assert [n.name for n in agent.local] == ["a", "b", "x"] and agent._ping(None, {})["nodes"] == 3   # type: ignore
    assert agent.counters._wanted == {n.name: n.netns for n in agent.local}
    # the program spawned in `a` before the reload is stopped through its old handle, for real
    pid = int(kept.split("/")[2])
    assert procs.state_of(pid) not in ("", "Z")
    assert agent.programs.stop({"handle": kept}) == {"ok": True}
    launcher.children[0].wait(5)
    assert launcher.children[0].returncode == -signal.SIGTERM
    # the removed node's handle is forgotten (reconcile killed its programs), the new node serves
    from nestbed.errors import ExperimentError
    with pytest.raises(ExperimentError, match="has no node 'c'"):
        agent.programs.stop({"handle": doomed})
    os.killpg(launcher.children[1].pid, signal.SIGKILL)
    new = agent.programs.spawn({"node": "x", "argv": ["sleep", "60"], "name": "new"})
    agent.programs.stop({"handle": new["handle"]})
    # the same plan again: nothing to change, the launcher is not asked
    assert agent.reload()["added"] == [] and len(launcher.changes) == 1
    for child in launcher.children:
        child.wait(5)


def test_the_counters_thread_opens_the_added_and_closes_the_removed(monkeypatch):
    calls: list[tuple[str, Any]] = []

    class FakeSampler:
        def __init__(self, nodes: list[tuple[str, str]]) -> None:
            self.nodes = dict(nodes)
            calls.append(("open", sorted(self.nodes)))

        def add(self, nodes: list[tuple[str, str]]) -> None:
            self.nodes.update(nodes)
            calls.append(("add", sorted(n for n, _ in nodes)))

        def remove(self, nodes: list[str]) -> None:
            for node in nodes:
                self.nodes.pop(node)
            calls.append(("remove", sorted(nodes)))

        def sample(self) -> list[str]:
            return sorted(self.nodes)

        def close(self) -> None:
            calls.append(("close", None))

    from nestbed.agent import attack_counters, sampler
    monkeypatch.setattr(sampler, "Sampler", FakeSampler)
    monkeypatch.setattr(attack_counters, "install_attack_counters", lambda nodes, s: calls.append(("attack", 0)))
    monkeypatch.setenv("NESTBED_COUNTER_INTERVAL", "30")         # only a change (or stop) wakes it

    class Store:
        samples: list[list[str]] = []

        def add_counters(self, created: float, rows: list[str]) -> None:
            self.samples.append(rows)
    store, stopping = Store(), threading.Event()
    node = lambda name: NodePlan(name=name, kind="process", netns=f"ns-{name}", forwarding=False)  # noqa: E731
    counters = sampling.CounterSampling([node("a"), node("b")], store, lambda: [], lambda line: None, stopping)
    thread = threading.Thread(target=counters.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not store.samples and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counters.set_nodes([node("a"), node("x")], wait=5)
    assert ("remove", ["b"]) in calls and ("add", ["x"]) in calls
    deadline = time.monotonic() + 5
    while store.samples[-1] != ["a", "x"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.samples[-1] == ["a", "x"]                     # sampled again at once, the new set
    stopping.set()
    counters.wake()
    thread.join(5)
    assert not thread.is_alive() and calls[-1] == ("close", None)
    assert counters.set_nodes([node("a")], wait=0)               # not running: nothing to wait for


def _box(root, name: str, text: str = "") -> str:
    path = root / name
    path.mkdir()
    (path / EVENTS).write_text(text)
    os.mkfifo(path / FIFO)
    return str(path)


def test_the_mailbox_watcher_watches_added_boxes_and_forgets_removed_ones(tmp_path):
    got: list[tuple[str, str]] = []
    lock = threading.Lock()

    def deliver(node: str, kind: str, name: str, data: Any, record_kind: Any) -> None:
        with lock:
            got.append((node, name))
    watcher = mailbox.Watcher({"a": _box(tmp_path, "a"), "c": _box(tmp_path, "c")}, deliver)
    watcher.start()
    try:
        watcher.change({"x": _box(tmp_path, "x", "before\n")}, ["c"])
        deadline = time.monotonic() + 5
        while ("x", "before") not in got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ("x", "before") in got                              # what the new box held already
        for node in ("a", "c", "x"):
            with open(tmp_path / node / EVENTS, "a") as handle:
                handle.write(f"from-{node}\n")
            fifo = os.open(tmp_path / node / FIFO, os.O_WRONLY | os.O_NONBLOCK) if node != "c" else None
            if fifo is not None:
                os.write(fifo, f"fifo-{node}\n".encode())
                os.close(fifo)
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert sorted(got) == [("a", "fifo-a"), ("a", "from-a"), ("x", "before"), ("x", "fifo-x"), ("x", "from-x")]
        assert "c" not in watcher.boxes and "c" not in watcher.fifo_node.values()
    finally:
        watcher.stop()


def test_the_launcher_learns_added_nodes_with_their_fds_and_closes_the_removed_ones():
    from nestbed.agent.launcher import Launcher
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    launcher = Launcher.__new__(Launcher)
    old = os.open(os.devnull, os.O_RDONLY)
    launcher.sock, launcher.pending, launcher.batches = theirs, {}, {}
    launcher.nodes, launcher.netns_fds, launcher.kept, launcher.cold = {"c": {"netns": "ns-c"}}, {"c": old}, {}, []
    passed = [os.open(os.devnull, os.O_RDONLY) for _ in range(2)]
    try:
        request = {"id": 7, "add": [["x", {"netns": "ns-x"}], ["y", {"netns": "ns-y"}]], "remove": ["c"]}
        ours.sendmsg([json.dumps(request).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                       __import__("array").array("i", passed))])
        assert launcher._serve_one()
        assert json.loads(ours.recv(1 << 16)) == {"id": 7, "nodes": 2}
        assert sorted(launcher.nodes) == ["x", "y"] and launcher.cold == ["x", "y"]
        for fd in launcher.netns_fds.values():
            os.fstat(fd)                                            # kept open: they are the nodes' namespaces
        with pytest.raises(OSError):
            os.fstat(old)                                           # the removed node's: closed
        # more nodes than fds: refused, nothing learned, the fds closed
        ours.sendmsg([json.dumps({"id": 8, "add": [["z", {}]], "remove": []}).encode()], [])
        assert launcher._serve_one()
        assert json.loads(ours.recv(1 << 16)) == {"id": 8, "error": "1 nodes added with 0 fds"}
        assert "z" not in launcher.nodes
    finally:
        for fd in [*launcher.netns_fds.values(), *passed]:
            try:
                os.close(fd)
            except OSError:
                pass
        ours.close()
        theirs.close()


def test_a_changed_node_s_commands_are_stopped_and_only_those(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    state = experiment("lab")
    state.directory.mkdir()
    command = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    spawned = subprocess.Popen(["sleep", "60"], start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    time.sleep(0.1)
    state.journal.record([
        {"t": "process", "node": "c", "netns": "ns-c", "command": "sleep 60 & wait"},
        {"t": "pid", "node": "c", "pid": command.pid, "start": procs.start_time(command.pid)},
        {"t": "pid", "node": "c", "name": "web", "pid": spawned.pid, "start": procs.start_time(spawned.pid)},
        {"t": "pid", "node": "b", "pid": other.pid, "start": procs.start_time(other.pid)}])
    try:
        assert reconcile.stop_commands(state, {"c"}) == 1
        deadline = time.monotonic() + 2          # its `sleep` child too (reaped by init)
        while procs.group_alive(command.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert command.poll() is not None and not procs.group_alive(command.pid)
        assert spawned.poll() is None and other.poll() is None
        left = state.journal.entries()
        assert [e.get("pid") for e in left if e["t"] == "pid"] == [spawned.pid, other.pid]
        assert not any(e["t"] == "process" for e in left)
    finally:
        for child in (spawned, other):
            child.kill()
            child.wait()


def test_the_summary_says_a_changed_node_s_commands_are_restarted() -> None:
    old = plan_of("name: lab\nnodes: {a: {commands: [x]}, b: {commands: [y]}}\nlinks:\n  - {ends: [a, b]}\n")
    new = plan_of("name: lab\nnodes: {a: {commands: [z]}, b: {}}\nlinks:\n  - {ends: [a, b]}\n", old)
    assert diff(old, new).summary() == ["node a: commands changed (restarted)", "node b: commands changed (stopped)"]


def test_the_agent_s_launcher_client_passes_added_nodes_16_fds_a_message(monkeypatch, tmp_path):
    import array

    from nestbed.agent.launcherclient import LauncherClient
    from nestbed.errors import ExperimentError
    from nestbed.realize import namespaces
    monkeypatch.setattr(namespaces, "netns_path", lambda name: os.devnull)
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client = LauncherClient.__new__(LauncherClient)
    client.sock, client.state = ours, experiment("lab")
    client._lock, client._next = threading.Lock(), 0
    client._by_id, client._by_pid, client._early_exits, client._batches, client._changes = {}, {}, {}, {}, {}
    threading.Thread(target=client._read, daemon=True).start()
    received: list[tuple[dict, int]] = []

    def launcher(answer: dict | None = None) -> None:
        while True:
            data, ancillary, _, _ = theirs.recvmsg(1 << 16, socket.CMSG_SPACE(32 * 4))
            if not data:
                return
            fds = array.array("i")
            for _, _, payload in ancillary:
                fds.frombytes(payload)
            for fd in fds:
                os.close(fd)
            request = json.loads(data)
            received.append((request, len(fds)))
            theirs.send(json.dumps({"id": request["id"], **(answer or {"nodes": len(fds)})}).encode())
    serving = threading.Thread(target=launcher, daemon=True)
    serving.start()
    added = [NodePlan(name=f"n{k}", kind="process", netns=f"ns-n{k}", forwarding=False) for k in range(20)]
    client.change_nodes(added, ["old"])
    assert [(len(r["add"]), r["remove"], fds) for r, fds in received] == [(16, ["old"], 16), (4, [], 4)]
    assert received[1][0]["add"][0] == ["n16", {"netns": "ns-n16", "identity": str(
        experiment("lab").directory / "nodes" / "n16"), "mailbox": None}]
    assert client._changes == {}
    ours.shutdown(socket.SHUT_RDWR)                          # the launcher goes away: a change waits no more
    with pytest.raises(ExperimentError, match="launcher"):
        client.change_nodes(added[:1], [])
    theirs.close()
