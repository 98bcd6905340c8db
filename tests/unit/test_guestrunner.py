"""GuestRunner (agent/guestrunner.py) against a fake guest agent: a TCP server in a thread speaking channel.py's
protocol, that checks the answer to its challenge and runs each exec for real on this machine (no VM, no root)."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nestbed import guestproto
from nestbed.agent.guestrunner import GuestRunner
from nestbed.channel import AgentClient, Connection, encode
from nestbed.errors import ExperimentError

CREDENTIAL = "c" * 64


class FakeGuestAgent:
    """The guest agent's exec op: {"op": "exec", node, argv, env} → {"o"}/{"e"} lines, then {"rc"}."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[dict[str, Any]] = []
        self.answer_script: str | None = None     # what a /bin/sh -c script prints instead of running
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(Connection(sock),), daemon=True).start()

    def _handle(self, conn: Connection) -> None:
        try:
            challenge = os.urandom(16).hex()
            conn.send({"challenge": challenge})
            hello = conn.receive()
            if not hello or hello.get("answer") != guestproto.answer(CREDENTIAL, challenge):
                conn.send({"error": "refused: wrong or missing credential"})
                return
            request = conn.receive()
            assert request is not None
            self.requests.append(request)
            if request["node"] != "n1":
                conn.send({"error": f"no node {request['node']!r} in VM vm9"})
                return
            argv = request["argv"]
            if self.answer_script is not None and argv[:2] == ["/bin/sh", "-c"]:
                conn.send({"o": encode(self.answer_script.encode())})
                conn.send({"rc": 0})
                return
            child = subprocess.run(argv, capture_output=True, env={"PATH": "/usr/bin:/bin", **request["env"]})
            for line in child.stdout.splitlines(keepends=True):       # in pieces, as a stream comes
                conn.send({"o": encode(line)})
            if child.stderr:
                conn.send({"e": encode(child.stderr)})
            conn.send({"rc": child.returncode})
        finally:
            conn.close()

    def client(self, credential: str = CREDENTIAL) -> AgentClient:
        return AgentClient("vm9", "127.0.0.1", self.port, credential, timeout=5.0)


@pytest.fixture
def agent() -> Iterator[FakeGuestAgent]:
    fake = FakeGuestAgent()
    yield fake
    fake.server.close()


def test_run_returns_what_the_guest_ran_and_passes_env(agent):
    runner = GuestRunner(agent.client())
    rc, out, err = runner.run("n1", ["sh", "-c", 'echo "$GREETING"; echo oops >&2; exit 4'], env={"GREETING": "hi"})
    assert (rc, out, err) == (4, "hi\n", "oops\n")
    assert agent.requests[-1] == {"op": "exec", "node": "n1", "argv": ["sh", "-c", 'echo "$GREETING"; echo oops >&2; '
                                                                      'exit 4'], "env": {"GREETING": "hi"}}


def test_start_reads_line_by_line_and_finish_has_all_of_it(agent):
    running = GuestRunner(agent.client()).start("n1", ["printf", "ready\\nrest\\n"])
    assert running.readline() == "ready\n"
    assert running.finish(10.0) == (0, "ready\nrest\n", "")


def test_stream_hands_output_on_as_it_comes(agent):
    out, err = bytearray(), bytearray()
    finished = GuestRunner(agent.client()).stream("n1", ["sh", "-c", "echo a; echo b >&2"], out.extend, err.extend)
    assert (finished.rc, finished.timed_out, bytes(out), bytes(err)) == (0, False, b"a\n", b"b\n")


def test_run_many_runs_every_item_and_keeps_their_order(agent):
    results = GuestRunner(agent.client()).run_many(
        [{"node": "n1", "argv": ["echo", "one"]}, {"node": "zz", "argv": ["true"]},
         {"node": "n1", "argv": ["sh", "-c", "exit 2"]}], timeout=10)
    assert results[0] == {"rc": 0, "out": "one\n", "err": ""}
    assert results[1]["rc"] == -1 and "VM vm9: no node 'zz' in VM vm9" in results[1]["err"]
    assert results[2]["rc"] == 2


def test_exec_relays_to_this_processes_output_and_returns_the_exit_code(agent, capfd):
    assert GuestRunner(agent.client()).exec("n1", ["sh", "-c", "echo out; echo err >&2; exit 7"]) == 7
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("out\n", "err\n")


def test_a_wrong_credential_is_refused_in_one_line(agent):
    runner = GuestRunner(agent.client("0" * 64))
    with pytest.raises(ExperimentError, match="^VM vm9: refused: wrong or missing credential$"):
        runner.stream("n1", ["true"], print, print)
    assert runner.run("n1", ["true"]) == (-1, "", "VM vm9: refused: wrong or missing credential\n")   # its failure
    assert agent.requests == []


def test_spawn_detaches_in_the_vm_with_a_log_there_and_stop_kills_each_group(agent):
    agent.answer_script = "4242\n"
    runner = GuestRunner(agent.client())
    (spawned,) = runner.spawn_many([_spawn("n1", ["python3", "-m", "http.server", "80"], "web", {"X": "1"})])
    assert (spawned.pid, spawned.log, spawned.error) == (4242, "vm9:/run/nestbed-n1-web.log", None)
    script = agent.requests[-1]["argv"][2]
    assert script == ("setsid env X=1 python3 -m http.server 80 >>/run/nestbed-n1-web.log 2>&1 </dev/null & "
                      "echo $!")
    started = time.monotonic()
    runner.stop_many([("n1", 4242), ("n1", 77)])
    assert time.monotonic() - started < 1.0                 # the fake answers at once: the script waits in the VM
    stop = agent.requests[-1]["argv"][2]
    assert stop.startswith("kill -TERM -4242 -77 ") and "sleep 1; kill -KILL -4242 -77" in stop


def test_a_spawn_the_guest_cannot_start_says_why(agent):
    (spawned,) = GuestRunner(agent.client()).spawn_many([_spawn("zz", ["sleep", "9"], "s", None)])
    assert spawned.pid is None and "no node 'zz'" in str(spawned.error)


def _spawn(node: str, argv: list[str], name: str, env: dict[str, str] | None) -> Any:
    from nestbed.agent.runners import Spawn
    return Spawn(node, argv, name, env)
