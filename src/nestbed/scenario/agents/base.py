"""What built-in agents share: one object per AAL agent, acting on every node of its group at once.

An agent is constructed with (runner, agent_name, nodes, execargs, base=the AAL file's directory, which relative
file names in execargs start from); each AAL method is a Python method taking the
event's `args` as keyword arguments and returning {node: value} (a single value means "the same for every node").
Methods run in a worker thread of the engine (other streams go on meanwhile) and should return promptly:
long-running work is a spawned program; a method that waits for something bounds its wait.
Work on many nodes goes through `run_all` / `spawn_all`, which batch through the runner (`run_many`, `spawn_many`)
when it offers them and otherwise use a thread pool, so an event to 1000 nodes takes well under a second.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nestbed
from nestbed.cluster.control import ExperimentControl
from nestbed.errors import NestbedError

PARALLEL = 32


class AgentError(NestbedError):
    """An agent cannot do what the scenario asked (bad arguments, target outside the experiment, …)."""


# `python -I -S`: no site module. Its venv and .pth processing cost ~1.2 s of every start in a TCG guest; the
# programs need only the standard library and the directory nestbed is in (put first on the path here).
_BOOT = ("import sys; module = sys.argv.pop(1); sys.argv[0] = module; sys.path.insert(0, {source!r}); "
         "__import__(module, fromlist=['main']).main()")


def app_argv(module: str, *args: Any) -> list[str]:
    """argv of one of nestbed's own programs (nestbed.apps.MODULE's main()), run by this Python: the same path
    works in process nodes, vhosts and VMs (they see this machine's root)."""
    source = str(Path(nestbed.__file__).resolve().parents[1])
    return [sys.executable, "-I", "-S", "-c", _BOOT.format(source=source), f"nestbed.apps.{module}",
            *(str(a) for a in args)]


def app_of(argv: list[str]) -> str | None:
    """The nestbed.apps module an app_argv runs (None for any other argv)."""
    return argv[5] if len(argv) > 5 and argv[1:4] == ["-I", "-S", "-c"] else None


def _result(result: Any) -> tuple[int, str, str]:
    """A run_many result: the host agent's {"node", "rc", "out", "err"} (rc None: killed) or a 3-tuple."""
    if isinstance(result, dict):
        rc = result.get("rc")
        return (-1 if rc is None else int(rc), str(result.get("out") or ""), str(result.get("err") or ""))
    rc, out, err = result
    return int(rc), out, err


class BuiltinAgent:
    methods: tuple[str, ...] = ()
    kind = "agent"

    def __init__(self, runner: ExperimentControl, agent_name: str, nodes: list[str], execargs: dict[str, Any],
                 base: Path | None = None):
        self.runner = runner
        self.base = Path.cwd() if base is None else Path(base)
        self.name = agent_name
        self.nodes = list(nodes)
        self.config: dict[str, Any] = dict(execargs or {})
        self.handles: dict[str, dict[str, str]] = {}       # program name → node → handle
        self.warn: Callable[[str], None] = lambda message: None

    # -- MAGI's DispatchAgent had it on every agent ---------------------------------------------------------
    def setConfiguration(self, **kwargs: Any) -> bool:
        self.config.update(kwargs)
        return True

    # -- batching helpers -----------------------------------------------------------------------------------
    def _each(self, function: Callable[[str], Any]) -> dict[str, Any]:
        if len(self.nodes) <= 1:
            return {node: function(node) for node in self.nodes}
        with ThreadPoolExecutor(min(PARALLEL, len(self.nodes))) as pool:
            return dict(zip(self.nodes, pool.map(function, self.nodes)))

    def run_all(self, argv_of: Callable[[str], list[str]],
                timeout: float | None = 60) -> dict[str, tuple[int, str, str]]:
        run_many = getattr(self.runner, "run_many", None)
        if run_many is not None and len(self.nodes) > 1:
            results = run_many([(node, argv_of(node)) for node in self.nodes], timeout)
            return dict(zip(self.nodes, (_result(r) for r in results)))
        return self._each(lambda node: self.runner.run(node, argv_of(node), timeout))

    def record(self, node: str | None, data: dict[str, Any]) -> None:
        """A record filed under this agent's scenario name and its kind (`client_agent`, `http_client`)."""
        self.runner.record(self.name, node, data, kind=self.kind)

    def record_all(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """A record per node, in one request when the runner can (a thousand nodes: one store transaction)."""
        record_many = getattr(self.runner, "record_many", None)
        if record_many is not None and len(items) > 1:
            record_many(self.name, items, kind=self.kind)
            return
        for node, data in items:
            self.record(node, data)

    def spawn_all(self, program: str, argv_of: Callable[[str], list[str]]) -> dict[str, bool]:
        """Start `program` on every node (stopping an earlier one of the same name first)."""
        self.stop_all(program)
        label = f"{self.name}-{program}"
        spawn_many = getattr(self.runner, "spawn_many", None)
        if spawn_many is not None and len(self.nodes) > 1:
            handles = dict(zip(self.nodes, spawn_many([(node, argv_of(node), label) for node in self.nodes])))
        else:
            handles = self._each(lambda node: self.runner.spawn(node, argv_of(node), label))
        self.handles[program] = handles
        return {node: True for node in self.nodes}

    def stop_all(self, program: str) -> dict[str, bool]:
        handles = self.handles.pop(program, {})
        if handles:
            self._stop(list(handles.values()))
        return {node: node in handles for node in self.nodes} if handles else {node: True for node in self.nodes}

    def _stop(self, handles: list[str]) -> None:
        stop_many = getattr(self.runner, "stop_many", None)
        if stop_many is not None and len(handles) > 1:
            stop_many(handles)
        elif len(handles) == 1:
            self.runner.stop(handles[0])
        else:
            with ThreadPoolExecutor(min(PARALLEL, len(handles))) as pool:
                list(pool.map(self.runner.stop, handles))

    def cleanup(self) -> None:
        """Stop whatever this agent still runs (the scenario ended)."""
        for program in list(self.handles):
            self.stop_all(program)
