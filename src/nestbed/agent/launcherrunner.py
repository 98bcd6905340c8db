"""LauncherRunner: process nodes of this host, from the host agent, through its launcher (agent/launcher.py).

The launcher keeps every node's namespaces open and posix_spawns into them: a program costs no Python fork, and
run_many is one launcher batch (started at once, their output read by the launcher), what makes a fan-out to a
thousand nodes take well under a second. Programs get a clean environment (PATH, HOME, LANG, the node's
NESTBED_* variables), not the agent's.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from nestbed import procs
from nestbed.agent.launcherclient import Launched, Launcher
from nestbed.agent.runners import (
    TIMED_OUT,
    Exit,
    Output,
    Program,
    Running,
    Spawn,
    Spawned,
    log_path,
    pump,
    spawned_on_host,
    stop_groups,
)
from nestbed.errors import ExperimentError
from nestbed.realize.state import FILE_MODE, ExperimentState

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_WAIT_SECONDS = 10.0          # for the launcher to report an exit once the output ended


class LauncherRunner:
    def __init__(self, state: ExperimentState, launcher: Launcher):
        self.state = state
        self.launcher = launcher

    def environment(self, node: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        from nestbed.realize import processes
        env = {"PATH": PATH, "HOME": "/root", "LANG": os.environ.get("LANG", "C.UTF-8"), "TERM": "dumb"}
        base = processes.node_environment(self.state.name, node)
        for key in ("NESTBED_EXPERIMENT", "NESTBED_NODE", "NESTBED_MAILBOX", "PATH"):
            env[key] = base[key]
        return {**env, **(extra or {})}

    def _launch(self, node: str, argv: list[str], env: dict[str, str] | None,
                log: int | None = None) -> tuple[Launched, int, int]:
        """Start argv in the node: (launched, stdout read fd, stderr read fd); with `log` (an fd taking both
        outputs) the read fds are -1."""
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            if log is not None:
                return self.launcher.launch(node, argv, self.environment(node, env), (devnull, log, log)), -1, -1
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                launched = self.launcher.launch(node, argv, self.environment(node, env), (devnull, out_w, err_w))
            finally:
                os.close(out_w)
                os.close(err_w)
            return launched, out_r, err_r
        finally:
            os.close(devnull)

    def _follow(self, launched: Launched, out_r: int, err_r: int, on_out: Output, on_err: Output,
                deadline: float | None) -> Exit:
        """Its output until the pipes close (or the deadline: then its group is killed), then its exit."""
        try:
            timed_out = pump(out_r, err_r, on_out, on_err, deadline)
        finally:
            os.close(out_r)
            os.close(err_r)
        if timed_out:
            self._kill(launched)
        launched.done.wait(EXIT_WAIT_SECONDS)
        if launched.error:
            raise ExperimentError(launched.error)
        if launched.rc is None:
            on_err(f"nestbed: the launcher did not report how it ended within {EXIT_WAIT_SECONDS:g} s\n".encode())
            return Exit(TIMED_OUT if timed_out else -1, timed_out)
        return Exit(TIMED_OUT if timed_out else launched.rc, timed_out)

    @staticmethod
    def _kill(launched: Launched) -> None:
        import signal
        launched.started.wait(5.0)
        if launched.pid and not launched.done.is_set():
            procs.kill_group(launched.pid, signal.SIGKILL)

    def start(self, node: str, argv: list[str], env: dict[str, str] | None = None) -> Running:
        launched, out_r, err_r = self._launch(node, argv, env)
        return Running(lambda on_out, on_err: self._follow(launched, out_r, err_r, on_out, on_err, None).rc,
                       lambda: self._kill(launched))

    def run(self, node: str, argv: list[str], timeout: float | None = 60.0,
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
        (result,) = self.run_many([{"node": node, "argv": argv, "env": env}], timeout)
        return int(result["rc"]), str(result["out"]), str(result["err"])

    def run_many(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        """One launcher batch: every program started at once, their output read by the launcher."""
        batch = [{"node": item["node"], "argv": item["argv"], "env": self.environment(item["node"], item.get("env"))}
                 for item in items]
        return self.launcher.run_batch(batch, timeout)

    def stream(self, node: str, argv: list[str], on_out: Output, on_err: Output, env: dict[str, str] | None = None,
               timeout: float | None = None) -> Exit:
        launched, out_r, err_r = self._launch(node, argv, env)
        return self._follow(launched, out_r, err_r, on_out, on_err,
                            None if timeout is None else time.monotonic() + timeout)

    def spawn_many(self, spawns: list[Spawn]) -> list[Spawned]:
        """One journal write before (the logs) and one after (the pids); the children started at once."""
        logs = [log_path(self.state, s.node, s.name) for s in spawns]
        self.state.journal.record([{"t": "file", "path": log} for log in logs])
        launched = []
        for spawn, log in zip(spawns, logs):
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
            try:
                launched.append(self._launch(spawn.node, spawn.argv, spawn.env, log=fd)[0])
            finally:
                os.close(fd)
        spawned, entries = [], []
        for spawn, log, child in zip(spawns, logs, launched):
            child.started.wait(10.0)
            if child.error or child.pid is None:
                spawned.append(Spawned(error=child.error or "no answer"))
                continue
            entry, result = spawned_on_host(spawn, child.pid, log)
            entries.append(entry)
            spawned.append(result)
        self.state.journal.record(entries)
        return spawned

    def stop_many(self, programs: list[Program]) -> None:
        stop_groups(programs)

    def exec(self, node: str, argv: list[str]) -> int:
        """argv's output to this process's stdout and stderr, as it comes; its exit code."""
        def write(stream: Any) -> Output:
            return lambda data: (stream.write(data), stream.flush())
        return self.stream(node, argv, write(sys.stdout.buffer), write(sys.stderr.buffer)).rc

    def shell(self, node: str) -> int:
        raise ExperimentError(f"the host agent has no terminal for a shell in {node}: use 'nestbed shell "
                              f"{self.state.name} {node}'")
