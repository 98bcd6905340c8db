"""Timeouts that reach nodes inside VMs: the guest agent's exec kills a program's group at its timeout (for real,
on this machine), the host side gives up on a guest agent that never answers and names the VM."""
from __future__ import annotations

import json
import os
import socket
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest

from nestbed import channel, procs
from nestbed.agent.guest import Guest
from nestbed.agent.guestrunner import GuestRunner
from nestbed.channel import AgentClient, Connection
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import NodePlan


class SilentGuestAgent:
    """Accepts, sends its challenge, reads the answer and the request, then never answers (a hung VM)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[dict[str, Any]] = []
        self.held: list[Connection] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            conn = Connection(sock)
            self.held.append(conn)
            try:
                conn.send({"challenge": "00" * 16})
                conn.receive()
                request = conn.receive()
            except OSError:
                return
            if request is not None:
                self.requests.append(request)

    def client(self) -> AgentClient:
        return AgentClient("vm7", "127.0.0.1", self.port, "c" * 64)


@pytest.fixture
def silent(monkeypatch) -> Iterator[SilentGuestAgent]:
    monkeypatch.setattr(channel, "TIMEOUT_GRACE", 0.2)
    fake = SilentGuestAgent()
    yield fake
    for sock in [fake.server] + [conn.sock for conn in fake.held]:
        try:
            sock.shutdown(socket.SHUT_RDWR)       # wakes its thread before the fd number can be reused
        except OSError:
            pass
    fake.thread.join(10.0)
    fake.server.close()
    for conn in fake.held:
        conn.close()


def _in_thread(work: Any) -> Any:
    """work() in a thread, so a hang fails the test instead of stopping the suite."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as error:  # noqa: BLE001 -- handed to the test
            outcome.append(error)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30.0)
    assert not thread.is_alive(), "the call did not give up"
    return outcome[0]


def test_the_timeout_travels_with_the_request_and_a_silent_vm_is_named(silent):
    error = _in_thread(lambda: silent.client().run("n1", ["sleep", "30"], timeout=0.3))
    assert isinstance(error, ExperimentError)
    assert str(error) == "the agent of VM vm7 did not answer: the command's timeout passed 0.2 s ago"
    assert silent.requests[-1]["timeout"] == 0.3


def test_run_many_in_a_vm_that_never_answers_gives_each_item_an_error_naming_the_vm(silent):
    results = _in_thread(lambda: GuestRunner(silent.client()).run_many(
        [{"node": "n1", "argv": ["sleep", "30"]}, {"node": "n1", "argv": ["true"]}], timeout=0.3))
    assert [r["rc"] for r in results] == [-1, -1]
    assert all("the agent of VM vm7 did not answer" in r["err"] for r in results)


# -- the guest agent's exec, for real: a program that outlives its timeout -----------------------------------
def _guest() -> Any:
    """What Guest._exec uses of a Guest: the node's environment and how to enter it (nothing: the VM itself)."""
    return types.SimpleNamespace(_environment=lambda node: {"PATH": os.environ["PATH"]}, preexec=lambda node: None)


NODE = NodePlan(name="n1", kind="qemu", netns="", forwarding=False)


def _exec(argv: list[str], timeout: float | None) -> tuple[list[dict[str, Any]], threading.Thread, socket.socket]:
    ours, theirs = socket.socketpair()

    def serve() -> None:
        conn = Connection(theirs)
        try:
            _quiet(Guest._exec, _guest(), conn, NODE, argv, {}, timeout)
        finally:
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return [], thread, ours


def _quiet(work: Any, *args: Any) -> None:
    try:
        work(*args)
    except OSError:
        pass                # the controller went away: expected in one test


def _messages(sock: socket.socket) -> list[dict[str, Any]]:
    reader = sock.makefile("rb")
    messages = []
    for line in reader:
        messages.append(json.loads(line))
        if "rc" in messages[-1]:
            break
    return messages


def test_the_guest_agent_kills_the_program_group_at_its_timeout_and_says_so():
    _, thread, sock = _exec(["sh", "-c", "sleep 30 & echo $!; sleep 30"], 0.5)
    messages = _messages(sock)
    thread.join(10.0)
    sock.close()
    assert messages[-1] == {"rc": -9, "timeout": True}
    background = int(channel.decode(messages[0]["o"]).split()[0])
    assert _ends(background)         # the program's whole group, not only its first process


def test_the_guest_agent_answers_the_exit_code_when_the_program_ends_in_time():
    _, thread, sock = _exec(["sh", "-c", "echo hi; exit 3"], 5.0)
    messages = _messages(sock)
    sock.close()
    assert messages == [{"o": channel.encode(b"hi\n")}, {"rc": 3}]


def test_a_program_that_closes_its_output_but_runs_on_is_killed_at_the_timeout():
    _, thread, sock = _exec(["sh", "-c", "exec >&- 2>&-; sleep 30"], 0.5)
    messages = _messages(sock)
    sock.close()
    assert messages == [{"rc": -9, "timeout": True}]


def test_the_guest_agent_kills_the_program_when_the_controller_hangs_up():
    _, thread, sock = _exec(["sh", "-c", "echo $$; while true; do echo x; sleep 0.05; done"], None)
    reader = sock.makefile("rb")
    pid = int(channel.decode(json.loads(reader.readline())["o"]).split()[0])
    reader.close()
    sock.close()
    thread.join(10.0)
    assert not thread.is_alive() and _ends(pid)
    sock.close()


def _ends(pid: int) -> bool:
    """The process dies within a few seconds (SIGKILL is delivered, not waited for)."""
    import time
    deadline = time.monotonic() + 5.0
    while procs.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not procs.is_alive(pid)
