"""NodeRunner: how programs run in the nodes of one placement, the same for every caller.

A placement is where a node's programs run: this host's namespaces, or one VM (a qemu node, or a vhost holding
process nodes). Its kind (kinds/: the node's own kind on this host, the VM's kind inside a VM) picks the runner:

    LocalRunner     (agent/localrunner.py)     process nodes of this host, from the controller's process: enters
                                               the node itself (Popen with enter_node; exec and shell in place)
    LauncherRunner  (agent/launcherrunner.py)  process nodes of this host, from the host agent: its launcher
                                               (posix_spawn in kept namespaces; run_many is one batch)
    GuestRunner     (agent/guestrunner.py)     nodes inside a VM, through that VM's guest agent

    runner = runner_for(state, plan, node)           # exec, shell, linktest: one node
    runner.run(node.name, ["ip", "addr"])            # (rc, out, err)
    runners = Runners(state, plan, launcher)         # the host agent: one runner per placement, kept
    runners.of(node).run_many(items, timeout)

A runner serves every node of its placement: calls name the node, so a batch of one placement is one call.
"""
from __future__ import annotations

import os
import selectors
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nestbed import procs
from nestbed.kinds import registry
from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.realize.state import ExperimentState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.agent.launcherclient import Launcher

Output = Callable[[bytes], Any]          # where a stream's stdout or stderr bytes go, as they come
STOP_GRACE_SECONDS = 1.0                 # SIGTERM, then SIGKILL what is left after this long
TIMED_OUT = -9                           # the exit code of a program that reached its timeout


class Running:
    """A program started in a node: its stdout line by line, then finish(timeout) → (exit code, whole stdout,
    stderr). `work(on_out, on_err)` runs it to its exit code in a thread of its own; `kill` ends it at the
    timeout (None: it is left to end by itself, reported as timed out). After finish, `timed_out` says so."""

    def __init__(self, work: Callable[[Output, Output], int], kill: Callable[[], None] | None = None):
        self._kill = kill
        self._out = bytearray()
        self._read = 0                          # how much of _out readline handed out (finish gives it all)
        self._err = bytearray()
        self._changed = threading.Condition()
        self._rc: int | None = None
        self.timed_out = False
        self._thread = threading.Thread(target=self._work, args=(work,), daemon=True)
        self._thread.start()

    def _work(self, work: Callable[[Output, Output], int]) -> None:
        try:
            rc = work(self._add_out, self._err.extend)
        except Exception as error:              # noqa: BLE001 — could not run: reported as its failure
            self._err.extend(f"{error}\n".encode())
            rc = -1
        with self._changed:
            self._rc = rc
            self._changed.notify_all()

    def _add_out(self, data: bytes) -> None:
        with self._changed:
            self._out.extend(data)
            self._changed.notify_all()

    def readline(self) -> str:
        """The next line of stdout (with its newline), or what is left ("" at the end)."""
        with self._changed:
            while self._out.find(b"\n", self._read) < 0 and self._rc is None:
                self._changed.wait()
            newline = self._out.find(b"\n", self._read)
            end = len(self._out) if newline < 0 else newline + 1
            line = bytes(self._out[self._read:end])
            self._read = end
        return line.decode(errors="replace")

    def finish(self, timeout: float | None = 60.0) -> tuple[int, str, str]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.timed_out = True
            if self._kill is not None:
                self._kill()
                self._thread.join(10.0)
        with self._changed:
            rc = TIMED_OUT if self.timed_out or self._rc is None else self._rc
            out, err = bytes(self._out), bytes(self._err)
        note = "(timed out)" if self.timed_out else ""
        return rc, out.decode(errors="replace"), err.decode(errors="replace") + note


@dataclass(frozen=True)
class Exit:
    """How a streamed program ended."""
    rc: int
    timed_out: bool = False


@dataclass(frozen=True)
class Spawn:
    """A long-running program to start detached in a node, its output to a log named after `name`."""
    node: str
    argv: list[str]
    name: str
    env: dict[str, str] | None = None


@dataclass(frozen=True)
class Spawned:
    """A spawned program: its pid (process group), its start time (procs.start_time, as its placement's kernel
    counts) and log, or why it did not start."""
    pid: int | None = None
    log: str = ""
    error: str | None = None
    start: int | None = None


@dataclass(frozen=True)
class Program:
    """A program a runner started, to stop: pid alone is not enough (pids are recycled), start time names it."""
    node: str
    pid: int
    start: int | None


class NodeRunner(Protocol):
    """What a placement's runner does for any of its nodes (named by `node`)."""

    def start(self, node: str, argv: list[str], env: dict[str, str] | None = None) -> Running:
        """Start argv in the node, stdout and stderr piped."""

    def run(self, node: str, argv: list[str], timeout: float | None = 60.0,
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run argv to completion: (exit code, stdout, stderr); killed at the timeout (exit code TIMED_OUT)."""

    def run_many(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        """Each {node, argv, env?} at once: a result {rc, out, err, timeout?} each, in item order."""

    def stream(self, node: str, argv: list[str], on_out: Output, on_err: Output, env: dict[str, str] | None = None,
               timeout: float | None = None) -> Exit:
        """Run argv, its output to on_out/on_err as it comes. ExperimentError when it could not run."""

    def spawn_many(self, spawns: list[Spawn]) -> list[Spawned]:
        """Start each detached (a process group of its own), output to its log; in order."""

    def stop_many(self, programs: list[Program]) -> None:
        """SIGTERM each program's process group, SIGKILL what is left after STOP_GRACE_SECONDS. A program whose
        pid now names another process (or none: it ended) is skipped: only what the runner started is signalled."""

    def exec(self, node: str, argv: list[str]) -> int:
        """argv in the foreground of this process: its output, and the exit code returned (or passed straight
        through, when the runner replaces this process)."""

    def shell(self, node: str) -> int:
        """An interactive shell in the node on this terminal; its exit code."""


def placement_kind(plan: HostPlan, node: NodePlan) -> str:
    """The kind of where the node's programs run: its VM's kind inside a VM, its own on this host."""
    return plan.vm(node.vm).kind if node.vm is not None else node.kind


def runner_for(state: ExperimentState, plan: HostPlan, node: NodePlan, launcher: Launcher | None = None) -> NodeRunner:
    """The runner of `node`'s placement, as the placement's kind makes it (a launcher: the host agent's)."""
    vm = plan.vm(node.vm) if node.vm is not None else None
    return registry.get(placement_kind(plan, node)).runner(state, plan, vm, launcher)


class Runners:
    """The host agent's runners: one per placement (this host, each VM), made on first use and kept."""

    def __init__(self, state: ExperimentState, plan: HostPlan, launcher: Launcher | None):
        self.state, self.plan, self.launcher = state, plan, launcher
        self._made: dict[str | None, NodeRunner] = {}

    def forget(self, vm: str | None) -> None:
        """The runner of that placement is made anew on next use (its launcher or VM changed)."""
        self._made.pop(vm, None)

    def of(self, node: NodePlan) -> NodeRunner:
        runner = self._made.get(node.vm)
        if runner is None:
            runner = self._made[node.vm] = runner_for(self.state, self.plan, node, self.launcher)
        return runner


class RunsByStart:
    """run and run_many of a runner from its start: each program in a thread of its own (no batch)."""

    def start(self, node: str, argv: list[str], env: dict[str, str] | None = None) -> Running:
        raise NotImplementedError      # each runner has its own

    def run(self, node: str, argv: list[str], timeout: float | None = 60.0,
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
        return self.start(node, argv, env).finish(timeout)

    def run_many(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        started = [self.start(str(item["node"]), list(item["argv"]), item.get("env")) for item in items]
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for running in started:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            rc, out, err = running.finish(left)
            results.append({"rc": rc, "out": out, "err": err, **({"timeout": True} if running.timed_out else {})})
        return results


# -- parts the host's runners share ------------------------------------------------------------------------
def pump(out_fd: int, err_fd: int, on_out: Output, on_err: Output, deadline: float | None) -> bool:
    """Read two pipes to their ends, handing the bytes on as they come; True when `deadline` passed first."""
    selector = selectors.DefaultSelector()
    selector.register(out_fd, selectors.EVENT_READ, on_out)
    selector.register(err_fd, selectors.EVENT_READ, on_err)
    try:
        while selector.get_map():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = selector.select(wait)
            if not ready and deadline is not None and time.monotonic() >= deadline:
                return True
            for key, _ in ready:
                data = os.read(key.fd, 65536)
                if data:
                    key.data(data)
                else:
                    selector.unregister(key.fd)
        return False
    finally:
        selector.close()


def stop_groups(programs: list[Program]) -> list[Program]:
    """SIGTERM every program's process group at once, SIGKILL what is left after STOP_GRACE_SECONDS (this host's
    pids). Only groups whose leader is still the process started (pid and start time): a recycled pid is left
    alone, and is returned among the skipped. Once checked, the group's id cannot be given to another process
    while a member of the group lives (the kernel does not reuse a pid in use as a group id)."""
    pids: list[int] = []
    skipped: list[Program] = []
    for program in programs:
        if procs.is_same(program.pid, program.start):
            pids.append(program.pid)
        else:
            skipped.append(program)
    for pid in pids:
        procs.kill_group(pid, signal.SIGTERM)
    left = list(pids)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if procs.group_alive(pid)]
        if left:
            time.sleep(0.02)
    for pid in left:
        procs.kill_group(pid, signal.SIGKILL)
    return skipped


def log_path(state: ExperimentState, node: str, name: str) -> str:
    """Where a spawned program of a node on this host writes its output."""
    return str(state.log_dir / f"{node}-{name}.log")


def spawned_on_host(spawn: Spawn, pid: int, log: str) -> tuple[dict[str, Any], Spawned]:
    """A program started on this host: its journal entry (pid with its start time) and what the caller gets."""
    start = procs.start_time(pid)
    return {"t": "pid", "pid": pid, "node": spawn.node, "name": spawn.name, "start": start}, \
        Spawned(pid, log, start=start)
