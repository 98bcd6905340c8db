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

from nestbed import guestproto, procs
from nestbed.agent.guestrunner import START_TIME, GuestRunner
from nestbed.agent.runners import Program
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
                                                                      'exit 4'], "env": {"GREETING": "hi"},
                                   "timeout": 60.0}          # run's timeout travels to the guest agent


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
    assert results[2]["rc"] == 2, results


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
    agent.answer_script = "4242 9876\n"
    runner = GuestRunner(agent.client())
    (spawned,) = runner.spawn_many([_spawn("n1", ["python3", "-m", "http.server", "80"], "web", {"X": "1"})])
    assert (spawned.pid, spawned.log, spawned.error, spawned.start) == (4242, "vm9:/run/nestbed-n1-web.log", None,
                                                                         9876)
    script = agent.requests[-1]["argv"][2]
    assert script == (START_TIME + "setsid env X=1 python3 -m http.server 80 >>/run/nestbed-n1-web.log 2>&1 "
                      "</dev/null & echo $! $(start_time $!)")
    requests = len(agent.requests)
    runner.stop_many([Program("n1", 4242, 9876), Program("n1", 77, 5), Program("n1", 78, None)])
    assert len(agent.requests) == requests + 1              # one script for all; its grace is waited in the VM
    stop = agent.requests[-1]["argv"][2]
    assert stop.startswith(START_TIME) and "for g in 4242:9876 77:5; do" in stop   # 78: no start time, left alone
    assert 'kill -TERM $ours; sleep 1; kill -KILL $ours' in stop


def test_the_guests_stop_script_signals_only_a_pid_with_its_start_time(agent):
    """The scripts the VM runs, run here by the fake agent: the same pid with another start time (a recycled
    pid) is left alone; with its real start time it is stopped."""
    spawn = subprocess.run(["/bin/sh", "-c", START_TIME + "setsid sleep 30 >/dev/null 2>&1 </dev/null & "
                            "echo $! $(start_time $!)"], capture_output=True, text=True, check=True)
    pid, start = (int(word) for word in spawn.stdout.split())
    assert start == procs.start_time(pid)
    runner = GuestRunner(agent.client())
    runner.stop_many([Program("n1", pid, start + 1)])
    assert procs.is_alive(pid)
    runner.stop_many([Program("n1", pid, start)])
    deadline = time.monotonic() + 5
    while procs.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not procs.is_alive(pid)


def test_a_spawn_the_guest_cannot_start_says_why(agent):
    (spawned,) = GuestRunner(agent.client()).spawn_many([_spawn("zz", ["sleep", "9"], "s", None)])
    assert spawned.pid is None and "no node 'zz'" in str(spawned.error)


def _spawn(node: str, argv: list[str], name: str, env: dict[str, str] | None) -> Any:
    from nestbed.agent.runners import Spawn
    return Spawn(node, argv, name, env)
