"""The remote agent's protocol (agent/remote.py) and its client (cluster/ssh.py's AgentChannel), without SSH: the
agent serves fake ops over a socketpair. Ids, concurrency (a slow apply does not hold up a status), streams and
their cancellation, errors as one line, the hello and the refusal of another nestbed version."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import pytest

from nestbed import __version__
from nestbed.agent import remote
from nestbed.cluster import ssh
from nestbed.errors import ExperimentError

HELLO = {"version": __version__, "python": "3.11.2", "host": "fake"}


class FakeOps:
    """apply waits for `release`; control streams for exec and subscribe; errors on request."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.applying = threading.Event()
        self.controls: list[tuple[str, str, dict[str, Any]]] = []

    def apply(self, request: remote.Request) -> dict[str, Any]:
        progress = remote.StreamedProgress(request)
        progress.phase("namespaces", 3)
        self.applying.set()
        assert self.release.wait(10)
        progress.advance(3)
        progress.flush()
        return {"seconds": 0.5, "plan": request.args["plan"]}

    def remove(self, request: remote.Request) -> dict[str, Any]:
        raise RuntimeError("disk on fire\nsecond line")

    def cleanup(self, request: remote.Request) -> dict[str, Any]:
        return {"reports": [], "everything": request.args["everything"]}

    def status(self, request: remote.Request) -> dict[str, Any]:
        if request.args["experiment"] == "broken":
            raise ExperimentError("experiment 'broken' is\nbusy")
        return {"state": "absent", "agent": None, "experiment": request.args["experiment"]}

    def control(self, request: remote.Request) -> dict[str, Any]:
        op, args = request.args["request"], request.args.get("args", {})
        self.controls.append((request.args["experiment"], op, args))
        if op == "exec":
            request.more({"o": "aGVsbG8K"})       # "hello\n"
            request.more({"e": "b29wcwo="})       # "oops\n"
            return {"rc": 3}
        if op == "subscribe":
            request.more({"subscribed": True})
            n = 0
            while not request.cancelled.wait(0.01):
                request.more({"event": {"id": n, "name": "tick"}})
                n += 1
            return {"cancelled": True}
        return {"forwarded": op, **args}


@pytest.fixture
def agent():
    """(socket to talk on, its reader, the fake ops, the serving thread)."""
    ours, theirs = socket.socketpair()
    ops = FakeOps()
    server = remote.RemoteAgent(theirs.makefile("rb"), theirs.makefile("wb"), ops, hello=dict(HELLO))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(server.serve()), daemon=True)
    thread.start()
    reader = ours.makefile("rb")
    yield ours, reader, ops, thread, result
    ops.release.set()
    ours.shutdown(socket.SHUT_RDWR)          # the agent reads its end: serving ends
    thread.join(5)
    assert not thread.is_alive()
    reader.close()
    ours.close()
    theirs.close()


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def receive(reader: Any) -> dict[str, Any]:
    line = reader.readline()
    assert line, "the agent closed the channel"
    return json.loads(line)


def test_hello_comes_first_with_the_version(agent):
    _, reader, *_ = agent
    assert receive(reader) == {"hello": HELLO}


def test_the_real_hello_names_version_python_and_host():
    hello = remote.default_hello()
    assert hello["version"] == __version__
    assert hello["python"].count(".") == 2 and hello["host"] == socket.gethostname()


def test_a_slow_apply_does_not_hold_up_a_status_and_answers_come_by_id(agent):
    sock, reader, ops, *_ = agent
    receive(reader)
    send(sock, {"id": 7, "op": "apply", "plan": "{}"})
    assert ops.applying.wait(5)
    assert receive(reader) == {"id": 7, "more": {"phase": "namespaces", "total": 3}}
    send(sock, {"id": 8, "op": "status", "experiment": "lab"})
    assert receive(reader) == {"id": 8, "ok": {"state": "absent", "agent": None, "experiment": "lab"}}
    ops.release.set()
    assert receive(reader) == {"id": 7, "more": {"advance": 3}}
    assert receive(reader) == {"id": 7, "ok": {"seconds": 0.5, "plan": "{}"}}


@pytest.mark.parametrize("request_, error", [
    ({"op": "status", "experiment": "broken"}, "experiment 'broken' is busy"),
    ({"op": "remove", "experiment": "lab"}, "remove failed on this host: RuntimeError: disk on fire second line"),
    ({"op": "status"}, "bad 'status' request: KeyError: 'experiment'"),
    ({"op": "reboot"}, "unknown request 'reboot' (known: apply, remove, cleanup, status, control, check, "
                       "probe_mtu, store_copy, cancel, shutdown)"),
])
def test_errors_are_one_line_with_the_request_id(agent, request_, error):
    sock, reader, *_ = agent
    receive(reader)
    send(sock, {"id": 3, **request_})
    assert receive(reader) == {"id": 3, "error": error}


def test_a_line_that_is_no_request_is_answered_and_the_agent_goes_on(agent):
    sock, reader, *_ = agent
    receive(reader)
    sock.sendall(b"this is not json\n[1, 2]\n")
    assert receive(reader)["error"].startswith("bad request line: ")
    assert receive(reader) == {"id": None, "error": "bad request line: not a JSON object"}
    send(sock, {"id": 1, "op": "cleanup", "everything": True})
    assert receive(reader) == {"id": 1, "ok": {"reports": [], "everything": True}}


def test_control_streams_exec_output_then_its_exit_code(agent):
    sock, reader, ops, *_ = agent
    receive(reader)
    send(sock, {"id": 5, "op": "control", "experiment": "lab", "request": "exec", "args": {"node": "a"}})
    assert [receive(reader) for _ in range(3)] == [{"id": 5, "more": {"o": "aGVsbG8K"}},
                                                   {"id": 5, "more": {"e": "b29wcwo="}}, {"id": 5, "ok": {"rc": 3}}]
    assert ops.controls == [("lab", "exec", {"node": "a"})]
    send(sock, {"id": 6, "op": "control", "experiment": "lab"})
    assert receive(reader) == {"id": 6, "error": "bad 'control' request: KeyError: 'request'"}


def test_a_subscription_streams_until_cancelled_and_shutdown_ends_serving(agent):
    sock, reader, ops, thread, result = agent
    receive(reader)
    send(sock, {"id": 1, "op": "control", "experiment": "lab", "request": "subscribe"})
    assert receive(reader) == {"id": 1, "more": {"subscribed": True}}
    assert receive(reader) == {"id": 1, "more": {"event": {"id": 0, "name": "tick"}}}
    send(sock, {"id": 2, "op": "cancel", "target": 1})
    sock.settimeout(5)
    answers: list[dict[str, Any]] = []
    while len(answers) < 2:
        message = receive(reader)
        if "more" not in message:
            answers.append(message)
    assert sorted(answers, key=lambda m: m["id"]) == [{"id": 1, "ok": {"cancelled": True}},
                                                      {"id": 2, "ok": {"cancelled": True}}]
    send(sock, {"id": 3, "op": "shutdown"})
    while (message := receive(reader)).get("id") != 3:
        pass
    assert message == {"id": 3, "ok": {}}
    thread.join(5)
    assert result == [0]


def _start_channel(ops: FakeOps, hello: dict[str, Any]) -> tuple[ssh.AgentChannel, socket.socket]:
    """The client's channel on the transport's own loop, the agent serving `ops` at the other end."""
    ours, theirs = socket.socketpair()
    server = remote.RemoteAgent(theirs.makefile("rb"), theirs.makefile("wb"), ops, hello=hello)
    threading.Thread(target=server.serve, daemon=True).start()

    async def opened() -> ssh.AgentChannel:
        reader, writer = await asyncio.open_connection(sock=ours, limit=1 << 24)
        channel = ssh.AgentChannel(reader, writer, "host fake (192.0.2.1)")
        await channel.handshake(5)
        return channel
    return asyncio.run_coroutine_threadsafe(opened(), ssh.event_loop()).result(10), theirs


def test_the_client_refuses_another_version_in_one_line_naming_both():
    with pytest.raises(ExperimentError) as caught:
        _start_channel(FakeOps(), {**HELLO, "version": "0.0.1"})
    message = str(caught.value)
    assert message == (f"host fake (192.0.2.1) runs nestbed 0.0.1, this controller runs nestbed {__version__}: "
                       f"install nestbed {__version__} there")


def test_the_client_multiplexes_calls_from_many_threads_on_one_channel():
    ops = FakeOps()
    channel, theirs = _start_channel(ops, dict(HELLO))
    try:
        slow = channel.call("apply", plan="{}")
        assert ops.applying.wait(5)
        answers: dict[int, dict[str, Any]] = {}

        def ask(k: int) -> None:
            answers[k] = channel.call("control", experiment=f"x{k}", request="spawn", args={"k": k}).wait()
        threads = [threading.Thread(target=ask, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert answers == {k: {"forwarded": "spawn", "k": k} for k in range(20)}      # each its own answer
        progress: list[dict[str, Any]] = []
        ops.release.set()
        assert slow.wait(progress.append) == {"seconds": 0.5, "plan": "{}"}
        assert progress == [{"phase": "namespaces", "total": 3}, {"advance": 3}]
    finally:
        theirs.close()


def test_exec_output_reaches_the_callbacks_and_a_subscription_is_cancelled_by_closing_it():
    ops = FakeOps()
    channel, theirs = _start_channel(ops, dict(HELLO))
    host = ssh.SshHost("fake", ssh.ConnectInfo("192.0.2.1"))
    host._channel, host.hello = channel, dict(HELLO)
    host.connect = lambda: host.hello       # type: ignore[method-assign]   # the channel is there already
    try:
        control = host.control("lab")
        assert control.run("a", ["ping", "-c1", "b"]) == (3, "hello\n", "oops\n")
        assert ops.controls[-1] == ("lab", "exec", {"node": "a", "argv": ["ping", "-c1", "b"], "env": {}})
        events = control.subscribe()
        first = [next(events) for _ in range(3)]
        assert [e["id"] for e in first] == [0, 1, 2]
        events.close()                       # sends cancel: the agent ends the stream and answers it
        deadline = time.monotonic() + 5
        while channel.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not channel.calls
    finally:
        theirs.close()


def test_calls_in_flight_fail_in_one_line_when_the_channel_ends():
    ops = FakeOps()
    channel, theirs = _start_channel(ops, dict(HELLO))
    slow = channel.call("apply", plan="{}")
    assert ops.applying.wait(5)
    theirs.shutdown(socket.SHUT_RDWR)
    with pytest.raises(ExperimentError) as caught:
        slow.wait()
    assert "host fake (192.0.2.1): lost the connection to its agent" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(ExperimentError, match="lost the connection"):
        channel.call("status", experiment="lab")
    ops.release.set()
    theirs.close()


def test_progress_adds_advances_up_between_sends():
    sent: list[dict[str, Any]] = []

    class Sink:
        cancelled = threading.Event()

        def more(self, data: dict[str, Any]) -> None:
            sent.append(data)
    progress = remote.StreamedProgress(Sink())      # type: ignore[arg-type]
    progress.phase("links", 1000)
    for _ in range(1000):
        progress.advance()
    progress.flush()
    assert sent[0] == {"phase": "links", "total": 1000}
    assert sum(p["advance"] for p in sent[1:]) == 1000 and len(sent) <= 3


def test_host_ops_forward_control_to_the_experiments_host_agent(monkeypatch):
    forwarded: list[tuple[str, dict[str, Any]]] = []

    class FakeClient:
        def request(self, op: str, **args: Any) -> dict[str, Any]:
            forwarded.append((op, args))
            return {"handle": "h1"}

        def close(self) -> None:
            pass
    ops = remote.HostOps()
    monkeypatch.setattr(ops, "_client", lambda name: FakeClient())
    request = remote.Request(None, 1, "control", {"experiment": "lab", "request": "spawn",     # type: ignore[arg-type]
                                                  "args": {"node": "a", "argv": ["sleep", "9"], "name": "s"}})
    assert ops.control(request) == {"handle": "h1"}
    assert forwarded == [("spawn", {"node": "a", "argv": ["sleep", "9"], "name": "s"})]


def test_status_of_an_absent_experiment(monkeypatch, tmp_path):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    request = remote.Request(None, 1, "status", {"experiment": "nothere"})      # type: ignore[arg-type]
    assert remote.HostOps().status(request) == {"state": "absent", "agent": None}


def test_connect_info_from_a_cluster_files_destination():
    info = ssh.ConnectInfo.from_destination("admin@192.0.2.10:2222")
    assert (info.username, info.address, info.port) == ("admin", "192.0.2.10", 2222)
    assert ssh.ConnectInfo.from_destination("192.0.2.11").username == "root"
    with pytest.raises(ExperimentError, match="port 'x' is not a number"):
        ssh.ConnectInfo.from_destination("root@h:x")
    command = ssh.ConnectInfo("10.250.0.1", python="/v/bin/python", state_dir="/s/lab/hosts/emu0",
                              prefix="nt0").command()
    assert command == ("exec env NESTBED_STATE_DIR=/s/lab/hosts/emu0 NESTBED_PREFIX=nt0 /v/bin/python "
                       "-m nestbed.agent.remote --stdio")


def test_a_line_longer_than_the_ssh_window_is_joined_from_its_pieces():
    class Pieces:            # asyncssh hands over a line longer than its window without the newline, in pieces
        def __init__(self, pieces: list[bytes]):
            self.pieces = pieces

        async def readline(self) -> bytes:
            return self.pieces.pop(0) if self.pieces else b""
    channel = ssh.AgentChannel(Pieces([b'{"id": 1, "ok": {"x": "', b"y" * 10, b'"}}\n', b'{"torn']), None, "h")
    assert asyncio.run(channel._line()) == b'{"id": 1, "ok": {"x": "' + b"y" * 10 + b'"}}\n'
    assert asyncio.run(channel._line()) == b""          # a torn last line is no answer


def test_counters_and_a_nodes_window_go_to_the_hosts_agent_over_the_channel():
    ops = FakeOps()
    channel, theirs = _start_channel(ops, dict(HELLO))
    host = ssh.SshHost("fake", ssh.ConnectInfo("192.0.2.1"))
    host._channel, host.hello = channel, dict(HELLO)
    host.connect = lambda: host.hello       # type: ignore[method-assign]   # the channel is there already
    try:
        control = host.control("lab")
        assert control.counter_window("a", ["eth0", "eth1"], 12.5, 60.0) == {
            "forwarded": "counter_window", "node": "a", "ifaces": ["eth0", "eth1"], "after": 12.5, "seconds": 60.0}
        assert control.counters() == {"forwarded": "counters"}
        assert [c[:2] for c in ops.controls] == [("lab", "counter_window"), ("lab", "counters")]
    finally:
        theirs.close()
