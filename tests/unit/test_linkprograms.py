"""linktest's programs through an ExperimentControl (control/linkprograms.py), against a fake control with
scripted answers: batches when the control has them, a program each when it has not, the receiver's "ready"
awaited before the sender runs, failures in one line; and the hosts a segment spans (control/linkchecks.py)."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from nestbed.control import linkprograms
from nestbed.control.linkchecks import hosts_of
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan

ECHO = {"sent": 3, "received": 3, "rtts": [0.001, 0.001, 0.002], "ttls": [64, 64, 64], "error": ""}


class Control:
    """Answers each program from `answer(node, argv)`; remembers the order of calls."""

    def __init__(self, answer: Any):
        self.answer = answer
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def run(self, node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        with self.lock:
            self.calls.append(("run", node))
        return self.answer(node, argv)

    def exec(self, node: str, argv: list[str], on_out: Any = None, on_err: Any = None, timeout: float | None = None,
             env: dict[str, str] | None = None) -> int:
        with self.lock:
            self.calls.append(("exec", node))
        rc, out, err = self.answer(node, argv)
        for line in out.splitlines(keepends=True):
            on_out(line.encode())
            time.sleep(0.05)            # the receiver's result comes a while after its "ready"
        if err:
            on_err(err.encode())
        return rc


class Batching(Control):
    def run_many(self, items: list[tuple[str, list[str]]], timeout: float | None = None) -> list[dict[str, Any]]:
        with self.lock:
            self.calls.append(("run_many", ",".join(node for node, _ in items)))
        return [dict(zip(("rc", "out", "err"), self.answer(node, argv)), node=node) for node, argv in items]


def pinged(node: str, argv: list[str]) -> tuple[int, str, str]:
    targets = json.loads(argv[-1])
    if node == "broken":
        return 1, "", "Traceback …\nOSError: no ping here\n"
    return 0, json.dumps({target: ECHO for target, _, _ in targets}) + "\n", ""


def test_every_pinger_is_one_batch_when_the_control_has_batches():
    control = Batching(pinged)
    jobs = {"a": {"10.0.0.2": (3, 0.05)}, "b": {"10.0.0.1": (3, 0.05), "10.0.1.2": (300, 0.005)}}
    results = linkprograms.ping_all(control, jobs)
    assert control.calls == [("run_many", "a,b")]
    assert results["b"]["10.0.1.2"]["received"] == 3 and set(results) == {"a", "b"}


def test_without_batches_each_pinger_runs_at_once_and_a_broken_one_says_its_last_line():
    control = Control(pinged)
    results = linkprograms.ping_all(control, {"a": {"10.0.0.2": (3, 0.05)}, "broken": {"10.0.0.1": (3, 0.05)}})
    assert sorted(control.calls) == [("run", "a"), ("run", "broken")]
    assert results["a"]["10.0.0.2"]["received"] == 3
    assert results["broken"]["10.0.0.1"] == {"sent": 0, "received": 0, "rtts": [], "ttls": [],
                                             "error": "OSError: no ping here"}


def test_a_transfer_starts_its_sender_after_the_receiver_is_ready():
    def answer(node: str, argv: list[str]) -> tuple[int, str, str]:
        return (0, "ready\n12345678.5\n", "") if "receive" in argv else (0, "", "")
    control = Control(answer)
    assert linkprograms.transfer(control, "a", "b", "10.0.0.3", 5201) == (12345678.5, "")
    assert control.calls == [("exec", "b"), ("run", "a")]


def test_a_transfer_says_which_end_failed():
    def no_receiver(node: str, argv: list[str]) -> tuple[int, str, str]:
        return (1, "", "OSError: address in use\n") if "receive" in argv else (0, "", "")
    control = Control(no_receiver)
    measured, problem = linkprograms.transfer(control, "a", "b", "10.0.0.3", 5201)
    assert measured == 0.0 and problem == "receiver did not start: OSError: address in use"
    assert control.calls == [("exec", "b")]                   # no sender without a receiver

    def no_sender(node: str, argv: list[str]) -> tuple[int, str, str]:
        return (0, "ready\n0.0\n", "") if "receive" in argv else (1, "", "ConnectionRefusedError\n")
    measured, problem = linkprograms.transfer(Control(no_sender), "a", "b", "10.0.0.3", 5201)
    assert measured == 0.0 and problem == "sender failed: ConnectionRefusedError"


def test_hosts_of_a_segment_are_its_members_hosts_in_order():
    from dataclasses import replace
    plan = compile_plan(load_topology_text("name: h\nnodes: {a: {}, b: {}, c: {}}\nlans: {l: {members: [a, b, c]}}\n"
                                           "links: [{ends: [a, b]}]\n", "h.yaml"))
    lan = next(s for s in plan.segments if s.name == "l")
    alone = {n.name: n for n in plan.nodes}
    assert hosts_of(lan, alone) == []                          # one host: its nodes carry none
    placed = {n.name: replace(n, host={"a": "emu2", "b": "emu0", "c": "emu2"}[n.name]) for n in plan.nodes}
    assert hosts_of(lan, placed) == ["emu2", "emu0"]
