"""Programs in the experiment's nodes, for the host agent: process nodes through the launcher, nodes inside VMs
through their guest agents.

    exec {node, argv, env?, timeout?}      → stream {"o": b64} / {"e": b64} … {"rc": N} (+ "timeout": true)
    run_many {items: [{node, argv}], timeout?}
                                           → {"results": [{"node", "rc", "out", "err", "timeout"?}]} in item order;
                                             process nodes' programs are one launcher batch (started at once,
                                             their output read by the launcher), nodes in VMs a thread each
    spawn {node, argv, name}               → {"handle"}; output to <state>/logs/<node>-<name>.log, pid journaled
    stop {handle}                          → {"ok"} (SIGTERM to its process group, SIGKILL after 1 s)
    spawn_many {items: [{node, argv, name}]} → {"handles"};  stop_many {handles} → {"ok"}
"""
from __future__ import annotations

import os
import selectors
import signal
import threading
import time
from typing import Any

from nestbed import procs
from nestbed.agent import guestrelay
from nestbed.agent.launcherclient import Launched, Launcher
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
        self.launcher = launcher          # None when every node is inside a VM
        self.spawned: dict[str, tuple[str, int]] = {}     # handle → (node, pid)

    def handlers(self) -> dict[str, Handler]:
        return {"exec": self.exec_stream, "run_many": self._run_many,
                "spawn": lambda conn, request: self.spawn(request),
                "spawn_many": lambda conn, request: {"handles": self.spawn_many(list(request.get("items") or []))},
                "stop": lambda conn, request: self.stop(request),
                "stop_many": lambda conn, request: self.stop_many(request)}

    def _run_many(self, conn: Connection, request: Request) -> dict[str, Any]:
        timeout = request.get("timeout")
        return {"results": self.run_many(list(request.get("items") or []), float(timeout) if timeout else None)}

    def environment(self, node: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        from nestbed.realize import processes
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": os.environ.get("LANG", "C.UTF-8"), "TERM": "dumb"}
        base = processes.node_environment(self.state.name, node)
        for key in ("NESTBED_EXPERIMENT", "NESTBED_NODE", "NESTBED_MAILBOX", "PATH"):
            env[key] = base[key]
        return {**env, **(extra or {})}

    def node(self, name: Any) -> NodePlan:
        node = self.nodes.get(str(name))
        if node is None:
            raise ExperimentError(f"experiment {self.state.name} has no node {name!r}")
        return node

    def guest(self, node: NodePlan) -> Any:
        """The client of the guest agent holding `node`, a node inside a VM."""
        return guestrelay.vm_client(self.state, self.plan, node)

    def _start_local(self, node: NodePlan, argv: list[str], env: dict[str, str] | None = None,
                     stdout: int | None = None) -> tuple[Launched, int | None, int | None]:
        """Start argv in a process node; returns (launched, stdout read fd, stderr read fd) — fds None when
        `stdout` (a log fd) takes both."""
        assert self.launcher is not None
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            if stdout is not None:
                launched = self.launcher.launch(node.name, argv, self.environment(node.name, env),
                                                (devnull, stdout, stdout))
                return launched, None, None
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                launched = self.launcher.launch(node.name, argv, self.environment(node.name, env),
                                                (devnull, out_w, err_w))
            finally:
                os.close(out_w)
                os.close(err_w)
            return launched, out_r, err_r
        finally:
            os.close(devnull)

    def run_many(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        """argv in many nodes at once: process nodes in one launcher batch, nodes inside VMs through their guest
        agents (a thread each)."""
        results: list[dict[str, Any]] = [{"node": str(item.get("node")), "rc": None, "out": "", "err": ""}
                                         for item in items]
        local: list[tuple[int, dict[str, Any]]] = []
        vm_threads = []
        for k, item in enumerate(items):
            try:
                node = self.node(item.get("node"))
                argv = [str(a) for a in item["argv"]]
                if not argv:
                    raise ExperimentError("empty argv")
            except (ExperimentError, KeyError, TypeError) as error:
                results[k].update(rc=-1, err=f"nestbed: {error}\n")
                continue
            if node.vm is not None:
                thread = threading.Thread(target=self._run_in_vm, args=(node, argv, results[k], timeout),
                                          daemon=True)
                thread.start()
                vm_threads.append(thread)
                continue
            local.append((k, {"node": node.name, "argv": argv, "env": self.environment(node.name, item.get("env"))}))
        if local:
            assert self.launcher is not None
            for (k, _), result in zip(local, self.launcher.run_batch([item for _, item in local], timeout)):
                results[k].update(result)
        for thread in vm_threads:
            thread.join()
        return results

    def _run_in_vm(self, node: NodePlan, argv: list[str], result: dict[str, Any], timeout: float | None) -> None:
        import io
        out, err = io.BytesIO(), io.BytesIO()
        try:
            result["rc"] = self.guest(node).run(node.name, argv, stdout=out, stderr=err)
        except ExperimentError as error:
            result["rc"] = -1
            err.write(f"nestbed: {error}\n".encode())
        result["out"] = out.getvalue().decode(errors="replace")
        result["err"] = err.getvalue().decode(errors="replace")

    def exec_stream(self, conn: Connection, request: dict[str, Any]) -> None:
        node = self.node(request.get("node"))
        argv = [str(a) for a in request.get("argv") or []]
        if not argv:
            raise ExperimentError("exec: no argv")
        if node.vm is not None:            # relay the guest agent's stream as it comes
            guest = self.guest(node).connect()
            try:
                guest.send({"op": "exec", "node": node.name, "argv": argv, "env": request.get("env") or {}})
                while True:
                    message = guest.receive()
                    if message is None:
                        conn.send({"error": f"the agent of VM {node.vm} went away while the command ran"})
                        return
                    conn.send(message)
                    if "rc" in message or "error" in message:
                        return
            finally:
                guest.close()
        launched, out_r, err_r = self._start_local(node, argv, request.get("env"))
        assert out_r is not None and err_r is not None
        timeout = request.get("timeout")
        deadline = time.monotonic() + float(timeout) if timeout else None
        selector = selectors.DefaultSelector()
        selector.register(out_r, selectors.EVENT_READ, "o")
        selector.register(err_r, selectors.EVENT_READ, "e")
        timed_out = False
        try:
            while selector.get_map():
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = selector.select(wait)
                if not ready and deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    break
                for key, _ in ready:
                    data = os.read(key.fd, 65536)
                    if data:
                        conn.send({key.data: encode(data)})
                    else:
                        selector.unregister(key.fd)
        finally:
            selector.close()
            os.close(out_r)
            os.close(err_r)
        if timed_out:
            launched.started.wait(5.0)
            if launched.pid and not launched.done.is_set():
                procs.kill_group(launched.pid, signal.SIGKILL)
        launched.done.wait(10.0)
        if launched.error:
            conn.send({"error": launched.error})
            return
        answer: dict[str, Any] = {"rc": launched.rc}
        if timed_out:
            answer["timeout"] = True
        conn.send(answer)

    def spawn(self, request: dict[str, Any]) -> dict[str, Any]:
        node = self.node(request.get("node"))
        argv = [str(a) for a in request.get("argv") or []]
        name = str(request.get("name") or (os.path.basename(argv[0]) if argv else ""))
        if not argv or not name or "/" in name:
            raise ExperimentError("spawn needs argv and a name without '/'")
        if node.vm is not None:      # in a VM: detached there, output in the guest's /run/nestbed-NODE-NAME.log
            import shlex
            log = f"/run/nestbed-{node.name}-{name}.log"
            script = f"setsid {shlex.join(argv)} >>{shlex.quote(log)} 2>&1 </dev/null & echo $!"
            import io
            out = io.BytesIO()
            rc = self.guest(node).run(node.name, ["/bin/sh", "-c", script], stdout=out, stderr=io.BytesIO())
            if rc != 0:
                raise ExperimentError(f"spawn {name} in {node.name} failed ({rc})")
            pid = int(out.getvalue().split()[-1])
            handle = f"{node.name}/{name}/{pid}"
            self.spawned[handle] = (node.name, pid)
            return {"handle": handle, "pid": pid, "log": f"{node.vm}:{log}"}
        log = self.state.log_dir / f"{node.name}-{name}.log"
        self.state.journal.record([{"t": "file", "path": str(log)}])
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            launched, _, _ = self._start_local(node, argv, request.get("env"), stdout=fd)
        finally:
            os.close(fd)
        launched.started.wait(10.0)
        if launched.error or launched.pid is None:
            raise ExperimentError(f"spawn {name} in {node.name}: {launched.error or 'no answer'}")
        self.state.journal.record([{"t": "pid", "pid": launched.pid, "node": node.name, "name": name,
                                    "start": procs.start_time(launched.pid)}])
        handle = f"{node.name}/{name}/{launched.pid}"
        self.spawned[handle] = (node.name, launched.pid)
        return {"handle": handle, "pid": launched.pid, "log": str(log)}

    def spawn_many(self, items: list[dict[str, Any]]) -> list[str]:
        """spawn for many nodes: one journal write before (logs) and one after (pids), children started at once."""
        handles: list[str | None] = [None] * len(items)
        local = []
        for k, item in enumerate(items):
            node = self.node(item.get("node"))
            argv = [str(a) for a in item.get("argv") or []]
            name = str(item.get("name") or "")
            if not argv or not name or "/" in name:
                raise ExperimentError("spawn needs argv and a name without '/'")
            if node.vm is not None:
                handles[k] = self.spawn(item)["handle"]
            else:
                local.append((k, node, argv, name, item.get("env")))
        logs = {k: self.state.log_dir / f"{node.name}-{name}.log" for k, node, _, name, _ in local}
        self.state.journal.record([{"t": "file", "path": str(log)} for log in logs.values()])
        launched = []
        for k, node, argv, name, env in local:
            fd = os.open(logs[k], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                launched.append((k, node, name, self._start_local(node, argv, env, stdout=fd)[0]))
            finally:
                os.close(fd)
        entries, failures = [], []
        for k, node, name, child in launched:
            child.started.wait(10.0)
            if child.error or child.pid is None:
                failures.append(f"{node.name}: {child.error or 'no answer'}")
                continue
            entries.append({"t": "pid", "pid": child.pid, "node": node.name, "name": name,
                            "start": procs.start_time(child.pid)})
            handles[k] = f"{node.name}/{name}/{child.pid}"
            self.spawned[handles[k]] = (node.name, child.pid)
        self.state.journal.record(entries)
        if failures:
            raise ExperimentError(f"spawn failed on {len(failures)} nodes: {'; '.join(failures[:3])}")
        return [str(h) for h in handles]

    def stop(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.stop_many({"handles": [request.get("handle")]})

    def stop_many(self, request: dict[str, Any]) -> dict[str, Any]:
        """SIGTERM every handle's process group at once, SIGKILL what is left after 1 s."""
        local = []
        for handle in [str(h) for h in request.get("handles") or []]:
            try:
                node_name, name, pid_text = handle.split("/")
                pid = int(pid_text)
            except ValueError:
                raise ExperimentError(f"not a handle: {handle!r}") from None
            node = self.node(node_name)
            self.spawned.pop(handle, None)
            if node.vm is not None:
                import io
                self.guest(node).run(node.name, ["/bin/sh", "-c", f"kill -TERM -{pid} 2>/dev/null; sleep 1; "
                                                                f"kill -KILL -{pid} 2>/dev/null; true"],
                                     stdout=io.BytesIO(), stderr=io.BytesIO())
                continue
            procs.kill_group(pid, signal.SIGTERM)
            local.append(pid)
        deadline = time.monotonic() + 1.0
        while local and time.monotonic() < deadline:
            local = [pid for pid in local if procs.group_alive(pid)]
            if local:
                time.sleep(0.02)
        for pid in local:
            procs.kill_group(pid, signal.SIGKILL)
        return {"ok": True}

