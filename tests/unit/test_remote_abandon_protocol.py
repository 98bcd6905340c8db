"""An apply abandoned by its controller (agent/remote.py): when the channel ends (EOF, or a write that fails) an
apply under way stops at its next step and rolls back before the agent's `serve` returns; `shutdown` still lets it
finish, and so does the channel's end a remove under way. Then the real lifecycle.up on the fake kernel: the
cancellation check in the progress stops realize mid-way and nothing of the experiment is left."""
from __future__ import annotations

import json
import socket
import textwrap
import threading
from typing import Any

import pytest
from fake_kernel import FakeKernel

from nestbed.agent import lifecycle, remote, supervision
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize.state import experiment

HELLO = {"version": "x", "python": "3.11.2", "host": "fake"}


class StepOps:
    """apply: a step per 10 ms through StreamedProgress, like realize; on any exception it 'rolls back' (as
    lifecycle.up does). remove: blocks until released and never looks at its cancellation."""

    def __init__(self, steps: int = 500) -> None:
        self.steps = steps
        self.started = threading.Event()
        self.release = threading.Event()
        self.done: list[str] = []

    def apply(self, request: remote.Request) -> dict[str, Any]:
        progress = remote.StreamedProgress(request)
        try:
            progress.phase("namespaces", self.steps)
            self.started.set()
            for _ in range(self.steps):
                threading.Event().wait(0.01)
                progress.advance()
        except BaseException:
            self.done.append("rolled back")
            raise
        self.done.append("finished")
        return {"seconds": 1.0}

    def remove(self, request: remote.Request) -> dict[str, Any]:
        self.started.set()
        assert self.release.wait(10)
        self.done.append("removed")
        return {"namespaces": 3}


def serving(ops: Any) -> tuple[socket.socket, Any, threading.Thread, list[int]]:
    ours, theirs = socket.socketpair()
    agent = remote.RemoteAgent(theirs.makefile("rb"), theirs.makefile("wb"), ops, hello=dict(HELLO))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(agent.serve()), daemon=True)
    thread.start()
    reader = ours.makefile("rb")
    assert json.loads(reader.readline()) == {"hello": HELLO}
    return ours, reader, thread, result


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def test_the_channels_end_stops_an_apply_under_way_and_serving_ends_after_its_rollback():
    ops = StepOps()
    sock, reader, thread, result = serving(ops)
    send(sock, {"id": 1, "op": "apply", "plan": "{}"})
    assert ops.started.wait(5)
    sock.shutdown(socket.SHUT_WR)                     # EOF on the agent's stdin; its answers can still come
    thread.join(10)
    assert not thread.is_alive() and result == [0]
    assert ops.done == ["rolled back"]                # not let finish: 500 steps would take 5 s
    answers = [json.loads(line) for line in reader]
    assert answers[-1]["id"] == 1 and answers[-1]["error"].startswith("apply abandoned: the controller's channel")
    sock.close()


def test_a_write_to_a_closed_channel_abandons_the_apply_too():
    ops = StepOps()
    ours, theirs = socket.socketpair()

    class Closing:
        """The agent's stdout: fails once the controller is gone (EPIPE), while stdin stays open."""
        def __init__(self) -> None:
            self.gone = False
            self.real = theirs.makefile("wb")

        def write(self, data: bytes) -> int:
            if self.gone:
                raise BrokenPipeError(32, "Broken pipe")
            return self.real.write(data)

        def flush(self) -> None:
            self.real.flush()
    writer = Closing()
    agent = remote.RemoteAgent(theirs.makefile("rb"), writer, ops, hello=dict(HELLO))     # type: ignore[arg-type]
    thread = threading.Thread(target=agent.serve, daemon=True)
    thread.start()
    send(ours, {"id": 1, "op": "apply", "plan": "{}"})
    assert ops.started.wait(5)
    writer.gone = True                                # the next progress line fails: the apply is abandoned
    deadline = threading.Event()
    for _ in range(500):
        if ops.done:
            break
        deadline.wait(0.01)
    assert ops.done == ["rolled back"]
    ours.shutdown(socket.SHUT_WR)
    thread.join(5)
    assert not thread.is_alive()
    ours.close()
    theirs.close()


def test_shutdown_lets_an_apply_under_way_finish_and_answers_after_it():
    ops = StepOps(steps=20)
    sock, reader, thread, result = serving(ops)
    send(sock, {"id": 1, "op": "apply", "plan": "{}"})
    assert ops.started.wait(5)
    send(sock, {"id": 2, "op": "shutdown"})
    answers = [json.loads(line) for line in reader]
    finals = [a for a in answers if "more" not in a]
    assert finals == [{"id": 1, "ok": {"seconds": 1.0}}, {"id": 2, "ok": {}}]
    assert ops.done == ["finished"]
    thread.join(5)
    assert result == [0]
    sock.close()


def test_the_channels_end_lets_a_remove_under_way_finish():
    ops = StepOps()
    sock, reader, thread, _ = serving(ops)
    send(sock, {"id": 1, "op": "remove", "experiment": "lab"})
    assert ops.started.wait(5)
    sock.shutdown(socket.SHUT_WR)
    thread.join(0.3)
    assert thread.is_alive()                          # serving waits for the remove
    ops.release.set()
    thread.join(5)
    assert not thread.is_alive() and ops.done == ["removed"]
    sock.close()


def test_cancel_of_an_apply_stops_it_and_it_answers_the_abandonment():
    ops = StepOps()
    sock, reader, thread, _ = serving(ops)
    send(sock, {"id": 1, "op": "apply", "plan": "{}"})
    assert ops.started.wait(5)
    send(sock, {"id": 2, "op": "cancel", "target": 1})
    finals: dict[int, dict[str, Any]] = {}
    while len(finals) < 2:
        message = json.loads(reader.readline())
        if "more" not in message:
            finals[message["id"]] = message
    assert finals[2] == {"id": 2, "ok": {"cancelled": True}}
    assert "apply abandoned" in finals[1]["error"] and ops.done == ["rolled back"]
    sock.shutdown(socket.SHUT_WR)
    thread.join(5)
    sock.close()


# -- the real lifecycle.up on the fake kernel -----------------------------------------------------------------
TOPOLOGY = "name: ab\nnodes:\n" + "".join(f"  n{i}: {{}}\n" for i in range(8)) + textwrap.dedent("""\
    lans:
      lan0: {members: [n0, n1, n2, n3, n4, n5, n6, n7]}
    """)


class FakeAgent:
    def start(self) -> int:
        return 4242


class CancelAt:
    """A Request whose channel ends when the apply reaches the phase `at` (after `advances` advances in it)."""

    def __init__(self, at: str, advances: int = 0) -> None:
        self.cancelled = threading.Event()
        self.at, self.advances, self.seen = at, advances, 0
        self.phases: list[str] = []
        self.in_phase = False

    def more(self, data: dict[str, Any]) -> None:
        if "phase" in data:
            self.phases.append(data["phase"])
            self.in_phase = data["phase"] == self.at
            if self.in_phase and self.advances == 0:
                self.cancelled.set()
        elif self.in_phase:
            self.seen += data["advance"]
            if self.seen >= self.advances:
                self.cancelled.set()


@pytest.mark.parametrize("at, advances", [("namespaces", 0), ("namespaces", 3), ("links and bridges", 0),
                                          ("addresses, routes, shaping", 2)])
def test_lifecycle_up_stops_at_the_next_step_and_removes_what_it_made(tmp_path, monkeypatch, at, advances):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(supervision, "spawn_agent", lambda state: FakeAgent())
    monkeypatch.setattr(remote, "PROGRESS_SECONDS", 0.0)          # every advance is a line: cancel mid-phase
    kernel = FakeKernel()
    plan = compile_plan(load_topology_text(TOPOLOGY, "t.yaml"))
    request = CancelAt(at, advances)
    with pytest.raises(ExperimentError, match="apply abandoned"):
        lifecycle.up(plan, remote.StreamedProgress(request), kernel=kernel)     # type: ignore[arg-type]
    assert request.phases[-1] == at                                # it went no further than that phase
    assert kernel.log                                              # something was made before it stopped
    assert kernel.objects() == set()                               # every namespace and link removed again
    assert not experiment("ab").directory.exists()                 # journal, plan and status gone with it


def test_host_ops_apply_removes_an_experiment_that_finished_as_the_channel_ended(monkeypatch):
    calls: list[str] = []
    request = remote.Request(None, 1, "apply", {"plan": "{}"})            # type: ignore[arg-type]

    def reconcile(plan: Any, progress: Any) -> lifecycle.Reconciled:
        calls.append("up")
        request.cancelled.set()                 # the channel ended just as up finished: no step left to stop
        return lifecycle.Reconciled("up", 1.0)
    monkeypatch.setattr(lifecycle, "reconcile", reconcile)   # apply reconciles: up when absent
    monkeypatch.setattr(lifecycle, "down", lambda name: calls.append(f"down {name}"))
    monkeypatch.setattr("nestbed.plan.hostplan.HostPlan.from_json",
                        staticmethod(lambda text: type("P", (), {"experiment": "lab"})()))
    with pytest.raises(ExperimentError, match="apply abandoned"):
        remote.HostOps().apply(request)
    assert calls == ["up", "down lab"]
