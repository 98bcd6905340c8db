"""LocalRunner: process nodes of this host, from the controller's own process (the CLI's exec, shell, linktest).

A program enters its node itself (realize.processes.enter_node: network, mounts, hostname) before it execs: in a
child (Popen's preexec_fn), or, for `exec` and `shell`, in this very process, so the user's terminal, signals
and exit code pass straight through.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any, NoReturn

from nestbed.agent.runners import (
    Exit,
    Output,
    Program,
    Running,
    RunsByStart,
    Spawn,
    Spawned,
    log_path,
    pump,
    spawned_on_host,
    stop_groups,
)
from nestbed.errors import CommandNotFound, ExperimentError
from nestbed.plan.hostplan import HostPlan
from nestbed.realize import identity, processes
from nestbed.realize.state import FILE_MODE, ExperimentState


class LocalRunner(RunsByStart):
    def __init__(self, state: ExperimentState, plan: HostPlan):
        self.state = state
        self.nodes = {n.name: n for n in plan.nodes if n.vm is None}

    def _node(self, name: str) -> Any:
        node = self.nodes.get(name)
        if node is None:
            raise ExperimentError(f"experiment {self.state.name} has no node {name!r} on this host")
        return node

    def enter(self, name: str) -> None:
        """Move this (single-threaded) process into the node."""
        node = self._node(name)
        processes.enter_node(node.netns, str(self.state.hosts_path), node.name,
                             str(identity.node_dir(self.state.directory, node.name)),
                             processes.mailbox_dir(self.state, node.name))

    def environment(self, node: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**processes.node_environment(self.state.name, node), **(extra or {})}

    def _popen(self, node: str, argv: list[str], env: dict[str, str] | None, **how: Any) -> subprocess.Popen[bytes]:
        self._node(node)
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd="/", env=self.environment(node, env),
                                    preexec_fn=lambda: self.enter(node), **how)
        except FileNotFoundError:
            raise CommandNotFound(f"command {argv[0]!r} not found in node {node}") from None

    def start(self, node: str, argv: list[str], env: dict[str, str] | None = None) -> Running:
        child = self._popen(node, argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def work(on_out: Output, on_err: Output) -> int:
            assert child.stdout is not None and child.stderr is not None
            pump(child.stdout.fileno(), child.stderr.fileno(), on_out, on_err, None)
            child.stdout.close()
            child.stderr.close()
            return child.wait()
        return Running(work, child.kill)

    def stream(self, node: str, argv: list[str], on_out: Output, on_err: Output, env: dict[str, str] | None = None,
               timeout: float | None = None) -> Exit:
        child = self._popen(node, argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout is not None and child.stderr is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            timed_out = pump(child.stdout.fileno(), child.stderr.fileno(), on_out, on_err, deadline)
        finally:
            child.stdout.close()
            child.stderr.close()
        if timed_out:
            child.kill()
        return Exit(child.wait(), timed_out)

    def spawn_many(self, spawns: list[Spawn]) -> list[Spawned]:
        """One journal write before (the logs) and one after (the pids), as `up` starts commands."""
        logs = [log_path(self.state, s.node, s.name) for s in spawns]
        self.state.journal.record([{"t": "file", "path": log} for log in logs])
        spawned, entries = [], []
        for spawn, log in zip(spawns, logs):
            with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE), "ab") as out:
                try:
                    child = self._popen(spawn.node, spawn.argv, spawn.env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                except (ExperimentError, OSError) as error:
                    spawned.append(Spawned(error=str(error)))
                    continue
            entry, result = spawned_on_host(spawn, child.pid, log)
            entries.append(entry)
            spawned.append(result)
        self.state.journal.record(entries)
        return spawned

    def stop_many(self, programs: list[Program]) -> None:
        stop_groups(programs)

    def exec(self, node: str, argv: list[str]) -> NoReturn:
        """Replace this process with argv running inside the node (exit code and output pass straight through)."""
        try:
            self.enter(node)
        except OSError as err:
            raise ExperimentError(f"cannot enter node {node} of {self.state.name} ({err.strerror}); its namespace "
                                  f"may be gone: see 'nestbed status {self.state.name}', or "
                                  f"'nestbed down {self.state.name}'") from None
        os.chdir("/")
        restore_signals()
        try:
            os.execvpe(argv[0], argv, processes.node_environment(self.state.name, node))
        except FileNotFoundError:
            raise CommandNotFound(f"command {argv[0]!r} not found in node {node}") from None

    def shell(self, node: str) -> NoReturn:
        """An interactive bash in the node whose prompt names node and experiment (the rc file `up` wrote)."""
        self.exec(node, ["bash", "--rcfile", str(self.state.directory / "shellrc"), "-i"])


def restore_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec: give programs the defaults
    (else `yes | head -1` complains of a broken pipe instead of ending quietly)."""
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
