"""Programs in the experiment's nodes, for the host agent: each node's placement has its runner
(agent/runners.py: process nodes through the launcher, nodes inside VMs through their guest agents).

    exec {node, argv, env?, timeout?}      → stream {"o": b64} / {"e": b64} … {"rc": N} (+ "timeout": true)
    run_many {items: [{node, argv}], timeout?}
                                           → {"results": [{"node", "rc", "out", "err", "timeout"?}]} in item order;
                                             a call per placement, at once: process nodes' programs are one
                                             launcher batch, nodes in a VM a thread each
    spawn {node, argv, name}               → {"handle"}; output to <state>/logs/<node>-<name>.log, pid journaled
    stop {handle}                          → {"ok"} (SIGTERM to its process group, SIGKILL after 1 s)
    spawn_many {items: [{node, argv, name}]} → {"handles"};  stop_many {handles} → {"ok"}

stop signals only what this agent spawned: a handle it did not hand out is refused (nothing is stopped), and a
program is signalled only while its pid still names the process started (pid and start time, kept per handle
as the journal has them): a program that ended, whose pid the kernel gave to another process, is left alone.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from nestbed.agent.launcherclient import Launcher
from nestbed.agent.runners import NodeRunner, Program, Runners, Spawn, Spawned
from nestbed.agent.server import Handler, Request
from nestbed.channel import Connection, encode
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.realize.state import ExperimentState


class Programs:
    def __init__(self, state: ExperimentState, plan: HostPlan, launcher: Launcher | None):
        self.state = state
        self.plan = plan
        self.nodes = {n.name: n for n in plan.nodes}
        self.runners = Runners(state, plan, launcher)     # launcher: None when every node is inside a VM
        self.spawned: dict[str, Program] = {}              # handle → what it started (kept: stop may repeat)

    def reload(self, plan: HostPlan, removed: list[str], launcher: Launcher | None) -> None:
        """The agent's reload: serve `plan`'s nodes. What was spawned in nodes that stay keeps its handle (stop
        works on it as before); a removed node's handles go (reconcile killed its programs)."""
        gone = set(removed)
        self.plan, self.nodes = plan, {n.name: n for n in plan.nodes}
        self.runners.plan = plan
        if launcher is not self.runners.launcher:       # the first process node of a plan that had none
            self.runners.launcher = launcher
            self.runners.forget(None)
        for handle, program in list(self.spawned.items()):
            if program.node in gone:
                del self.spawned[handle]

    def handlers(self) -> dict[str, Handler]:
        return {"exec": self.exec_stream, "run_many": self._run_many,
                "spawn": lambda conn, request: self.spawn(request),
                "spawn_many": lambda conn, request: {"handles": self.spawn_many(list(request.get("items") or []))},
                "stop": lambda conn, request: self.stop(request),
                "stop_many": lambda conn, request: self.stop_many(request)}

    def _run_many(self, conn: Connection, request: Request) -> dict[str, Any]:
        timeout = request.get("timeout")
        return {"results": self.run_many(list(request.get("items") or []), float(timeout) if timeout else None)}

    def node(self, name: Any) -> NodePlan:
        node = self.nodes.get(str(name))
        if node is None:
            raise ExperimentError(f"experiment {self.state.name} has no node {name!r}")
        return node

    def _by_runner(self, nodes: list[NodePlan]) -> list[tuple[NodeRunner, list[int]]]:
        """The indexes of `nodes`, grouped by their placement's runner (in order of first appearance)."""
        groups: dict[int, tuple[NodeRunner, list[int]]] = {}
        for k, node in enumerate(nodes):
            runner = self.runners.of(node)
            groups.setdefault(id(runner), (runner, []))[1].append(k)
        return list(groups.values())

    def run_many(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        """argv in many nodes at once: one call per placement, each in a thread but the last (the one batch of a
        host without VMs runs in the caller's)."""
        results: list[dict[str, Any]] = [{"node": str(item.get("node")), "rc": None, "out": "", "err": ""}
                                         for item in items]
        valid: list[tuple[int, NodePlan, dict[str, Any]]] = []
        for k, item in enumerate(items):
            try:
                node = self.node(item.get("node"))
                argv = [str(a) for a in item["argv"]]
                if not argv:
                    raise ExperimentError("empty argv")
            except (ExperimentError, KeyError, TypeError) as error:
                results[k].update(rc=-1, err=f"nestbed: {error}\n")
                continue
            valid.append((k, node, {"node": node.name, "argv": argv, "env": item.get("env")}))

        def run_group(runner: NodeRunner, members: list[int]) -> None:
            try:
                answers = runner.run_many([valid[m][2] for m in members], timeout)
            except (ExperimentError, OSError) as error:
                answers = [{"rc": -1, "out": "", "err": f"nestbed: {error}\n"} for _ in members]
            for m, answer in zip(members, answers):
                results[valid[m][0]].update(answer)
        groups = self._by_runner([node for _, node, _ in valid])
        threads = [threading.Thread(target=run_group, args=group, daemon=True) for group in groups[:-1]]
        for thread in threads:
            thread.start()
        if groups:
            run_group(*groups[-1])
        for thread in threads:
            thread.join()
        for result in results:         # every answer has an exit code (a runner that gave none says so)
            if not isinstance(result["rc"], int):
                result.update(rc=-1, err=f"{result['err']}nestbed: no exit code from the runner of "
                                         f"{result['node']}\n")
        return results

    def exec_stream(self, conn: Connection, request: dict[str, Any]) -> None:
        node = self.node(request.get("node"))
        argv = [str(a) for a in request.get("argv") or []]
        if not argv:
            raise ExperimentError("exec: no argv")
        timeout = request.get("timeout")
        finished = self.runners.of(node).stream(node.name, argv, lambda data: conn.send({"o": encode(data)}),
                                                lambda data: conn.send({"e": encode(data)}), request.get("env"),
                                                float(timeout) if timeout else None)
        if not isinstance(finished.rc, int):
            conn.send({"e": encode(f"nestbed: no exit code from the runner of {node.name}\n".encode())})
        answer: dict[str, Any] = {"rc": finished.rc if isinstance(finished.rc, int) else -1}
        if finished.timed_out:
            answer["timeout"] = True
        conn.send(answer)

    def _spawns(self, items: list[dict[str, Any]]) -> list[tuple[NodePlan, Spawn]]:
        spawns = []
        for item in items:
            node = self.node(item.get("node"))
            argv = [str(a) for a in item.get("argv") or []]
            name = str(item.get("name") or "")
            if not argv or not name or "/" in name:
                raise ExperimentError("spawn needs argv and a name without '/'")
            spawns.append((node, Spawn(node.name, argv, name, item.get("env"))))
        return spawns

    def _spawn_all(self, spawns: list[tuple[NodePlan, Spawn]]) -> list[Spawned]:
        """Each placement's spawns in one call of its runner; the handles kept for stop."""
        done: list[Spawned] = [Spawned(error="not started")] * len(spawns)
        for runner, members in self._by_runner([node for node, _ in spawns]):
            for m, spawned in zip(members, runner.spawn_many([spawns[m][1] for m in members])):
                done[m] = spawned
                if spawned.pid is not None:
                    self.spawned[self._handle(spawns[m][1], spawned.pid)] = Program(spawns[m][0].name, spawned.pid,
                                                                                    spawned.start)
        return done

    @staticmethod
    def _handle(spawn: Spawn, pid: int) -> str:
        return f"{spawn.node}/{spawn.name}/{pid}"

    def spawn(self, request: dict[str, Any]) -> dict[str, Any]:
        argv = [str(a) for a in request.get("argv") or []]
        name = request.get("name") or (os.path.basename(argv[0]) if argv else "")
        ((node, spawn),) = self._spawns([{**request, "name": name}])
        (spawned,) = self._spawn_all([(node, spawn)])
        if spawned.pid is None:
            raise ExperimentError(f"spawn {spawn.name} in {node.name}: {spawned.error}")
        return {"handle": self._handle(spawn, spawned.pid), "pid": spawned.pid, "log": spawned.log}

    def spawn_many(self, items: list[dict[str, Any]]) -> list[str]:
        """spawn for many nodes: each placement's in one call (a journal write before and one after)."""
        spawns = self._spawns(items)
        done = self._spawn_all(spawns)
        failures = [f"{node.name}: {spawned.error}" for (node, _), spawned in zip(spawns, done) if spawned.pid is None]
        if failures:
            raise ExperimentError(f"spawn failed on {len(failures)} nodes: {'; '.join(failures[:3])}")
        return [self._handle(spawn, spawned.pid) for (_, spawn), spawned in zip(spawns, done)
                if spawned.pid is not None]

    def stop(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.stop_many({"handles": [request.get("handle")]})

    def stop_many(self, request: dict[str, Any]) -> dict[str, Any]:
        """SIGTERM every handle's process group at once, SIGKILL what is left after 1 s (each placement's runner
        in a thread of its own). Every handle is checked before anything is signalled."""
        programs: list[tuple[NodePlan, Program]] = []
        for handle in [str(h) for h in request.get("handles") or []]:
            try:
                node_name, _, pid_text = handle.split("/")
                int(pid_text)
            except ValueError:
                raise ExperimentError(f"not a handle: {handle!r}") from None
            node = self.node(node_name)
            program = self.spawned.get(handle)
            if program is None:
                raise ExperimentError(f"stop: {handle!r} is not a program this agent started")
            programs.append((node, program))
        failures: list[str] = []

        def stop_group(runner: NodeRunner, members: list[int]) -> None:
            try:
                runner.stop_many([programs[m][1] for m in members])
            except ExperimentError as error:
                failures.append(str(error))
        threads = [threading.Thread(target=stop_group, args=group, daemon=True)
                   for group in self._by_runner([node for node, _ in programs])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise ExperimentError(f"stop: {'; '.join(failures[:3])}")
        return {"ok": True}
