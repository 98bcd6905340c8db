"""The host agent: one daemon per host per experiment, started by `nestbed up`, stopped first by teardown.

It lives in the host's namespaces and serves a root-only unix socket `<state>/agent.sock` (0600) with the channel
protocol (channel.py): the first line carries the experiment's credential (`<state>/credential`); then any number
of requests on the same connection, each {"op": …}:

    ping                                   → {"ok", "experiment", "host", "pid", "nodes"}
    exec {node, argv, env?, timeout?}      → stream {"o": b64} / {"e": b64} … {"rc": N} (+ "timeout": true)
    run_many {items: [{node, argv}], timeout?}
                                           → {"results": [{"node", "rc", "out", "err", "timeout"?}]} in item order;
                                             process nodes' programs are one launcher batch (started at once,
                                             their output read by the launcher), nodes in VMs a thread each
    spawn {node, argv, name}               → {"handle"}; output to <state>/logs/<node>-<name>.log, pid journaled
    stop {handle}                          → {"ok"} (SIGTERM to its process group, SIGKILL after 1 s)
    spawn_many {items: [{node, argv, name}]} → {"handles"};  stop_many {handles} → {"ok"}
    record {agent, node?, data}            → {"id"} (store.add_record, host = this host's name)
    record_many {agent, items: [{node, data}]} → {"count"} (one store transaction)
    event {name, data?, source?}           → {"id"} (store.add_event, and to every subscriber)
    subscribe {since?}                     → stream {"event": {id, created, source, name, data}} until the client
                                             closes (events after id `since` from the store first)
    counters                               → {"created", "rows": [{node, iface, rx_bytes, …}]}
    link {segment, action, shaping?}       → {"ok"} (nestbed.realize.links.change, where that exists)

Process nodes are entered by the launcher (launcher.py); nodes inside VMs are forwarded to their VM's guest
agent. Mailboxes (mailbox.py) of process nodes are watched here; those of nodes in VMs are streamed from each
guest agent's "mailbox" op. Counters are sampled every NESTBED_COUNTER_INTERVAL seconds (default 1) with
nestbed.agent.sampler.Sampler when that module exists.

    python -m nestbed.agent.host EXPERIMENT     (waits for "go" on stdin: `up` journals the pid first)
"""
from __future__ import annotations

import array
import hmac
import json
import os
import queue
import resource
import selectors
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nestbed.agent.channel import Connection, encode
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.realize.state import ExperimentState

SOCKET = "agent.sock"
LOG = "agent.log"
STORE = "control.sqlite"
READY_SECONDS = 15.0
STOP_GRACE = 1.0


def socket_path(state: ExperimentState) -> Path:
    return state.directory / SOCKET


def log_path(state: ExperimentState) -> Path:
    return state.log_dir / LOG


def credential_path(state: ExperimentState) -> Path:
    return state.directory / "credential"


def ensure_credential(state: ExperimentState) -> Path:
    """The experiment's credential (0600), journaled; made once by `up`, reused by VMs and the host agent."""
    import secrets
    path = credential_path(state)
    if path.exists():
        return path
    state.journal.record([{"t": "file", "path": str(path)}])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path


# -- the controller's side: start, stop, status ----------------------------------------------------------------

def start_agent(plan: HostPlan, state: ExperimentState) -> int:
    """Start the experiment's host agent and wait until it answers; returns its pid. Journaled before it runs."""
    from nestbed.realize import processes
    ensure_credential(state)
    state.log_dir.mkdir(exist_ok=True)
    files = [socket_path(state), log_path(state)] + [state.directory / (STORE + s) for s in ("", "-wal", "-shm")]
    state.journal.record([{"t": "file", "path": str(f)} for f in files])
    log = open(log_path(state), "ab")
    env = {**os.environ, "NESTBED_STATE_DIR": str(state.directory.parent), "PYTHONUNBUFFERED": "1"}
    try:
        child = subprocess.Popen([sys.executable, "-m", "nestbed.agent.host", state.name], stdin=subprocess.PIPE,
                                 stdout=log, stderr=log, cwd="/", env=env, start_new_session=True)
    finally:
        log.close()
    # The agent waits for "go" on stdin: its pid is journaled before it does anything (and it exits on EOF).
    state.journal.record([{"t": "pid", "pid": child.pid, "start": processes.process_start_time(child.pid),
                           "role": "agent"}])
    assert child.stdin is not None
    child.stdin.write(b"go\n")
    child.stdin.close()
    deadline = time.monotonic() + READY_SECONDS
    path = socket_path(state)
    while True:
        if child.poll() is not None:
            raise ExperimentError(f"the host agent of {state.name} exited at start ({child.returncode}): "
                                  f"{_last_line(log_path(state))} (see {log_path(state)})")
        if path.exists():
            try:
                HostAgentConnection(state).request("ping", timeout=2.0)
                return child.pid
            except (OSError, ExperimentError):
                pass
        if time.monotonic() > deadline:
            raise ExperimentError(f"the host agent of {state.name} did not answer within {READY_SECONDS:.0f} s "
                                  f"(see {log_path(state)})")
        time.sleep(0.02)


def agent_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("t") == "pid" and e.get("role") in ("agent", "launcher")]


def stop_agent(entries: list[dict[str, Any]]) -> int:
    """Teardown, first thing: SIGTERM the agent (and its launcher), SIGKILL after a moment. Returns how many ran."""
    from nestbed.realize import processes
    pids = [e["pid"] for e in agent_entries(entries)
            if e.get("start") is not None and processes.process_start_time(e["pid"]) == e["start"]]
    pids = [pid for pid in pids if pid != os.getpid()]
    if pids:
        processes.kill_all(pids, grace=STOP_GRACE)
    return len(pids)


def agent_status(state: ExperimentState) -> dict[str, Any] | None:
    """{"pid", "alive"} of the experiment's host agent (None when it has none). For `nestbed status --json`."""
    from nestbed.realize import processes
    for entry in reversed(state.journal.entries()):
        if entry.get("t") == "pid" and entry.get("role") == "agent":
            alive = entry.get("start") is not None and processes.process_start_time(entry["pid"]) == entry["start"]
            if alive:
                try:
                    stat = Path(f"/proc/{entry['pid']}/stat").read_text()
                    alive = stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
                except OSError:
                    alive = False
            return {"pid": entry["pid"], "alive": alive}
    return None


def died_message(state: ExperimentState, pid: int | None) -> str:
    return (f"the host agent of {state.name} died (pid {pid}); see {log_path(state)}; "
            f"run 'nestbed down {state.name}'")


class HostAgentConnection:
    """One authenticated connection to the host agent (used by the client and by start_agent)."""

    def __init__(self, state: ExperimentState, timeout: float | None = None):
        self.state = state
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(socket_path(state)))
        except OSError:
            self.sock.close()
            raise
        self.conn = Connection(self.sock)
        self.conn.send({"credential": credential_path(state).read_text().strip()})

    def request(self, op: str, timeout: float | None = None, **arguments: Any) -> dict[str, Any]:
        if timeout is not None:
            self.sock.settimeout(timeout)
        self.conn.send({"op": op, **arguments})
        answer = self.conn.receive()
        if answer is None:
            raise ExperimentError(f"the host agent of {self.state.name} closed the connection on {op!r}")
        if "error" in answer:
            raise ExperimentError(answer["error"])
        return answer

    def close(self) -> None:
        self.conn.close()


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(no output)"


# -- the agent ------------------------------------------------------------------------------------------------

class Launched:
    """A child started by the launcher: its pid, and its exit code once the launcher reports it."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.error: str | None = None
        self.rc: int | None = None
        self.started = threading.Event()
        self.done = threading.Event()


LAUNCHER_MESSAGE_BYTES = 48 * 1024


def _parts(items: list[dict[str, Any]], budget: int) -> list[list[dict[str, Any]]]:
    """items in consecutive lists of about `budget` bytes of JSON each (at least one list)."""
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for item in items:
        length = len(json.dumps(item, separators=(",", ":")))
        if parts[-1] and size + length > budget:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += length
    return parts


class BatchResults:
    """A run_many's results as the launcher sends them: [index, field, value] entries, long texts in pieces."""

    def __init__(self, count: int) -> None:
        self.results: list[dict[str, Any]] = [{"rc": None, "out": "", "err": ""} for _ in range(count)]
        self.done = threading.Event()

    def add(self, entries: list[list[Any]]) -> None:
        for index, field, value in entries:
            if field in ("out", "err"):
                self.results[index][field] += value
            else:
                self.results[index][field] = value

    def fail(self, why: str) -> None:
        for result in self.results:
            if result["rc"] is None:
                result.update(rc=126, err=result["err"] + f"nestbed: {why}\n")
        self.done.set()


class LauncherClient:
    """The agent's side of the launcher (launcher.py)."""

    def __init__(self, state: ExperimentState, nodes: list[NodePlan]):
        from nestbed.realize import identity, processes
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        import nestbed
        source = str(Path(nestbed.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen([sys.executable, "-S", "-m", "nestbed.agent.launcher", state.name,
                                         str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env, cwd="/")
        theirs.close()
        state.journal.record([{"t": "pid", "pid": self.process.pid, "role": "launcher",
                               "start": processes.process_start_time(self.process.pid)}])
        table = {"hosts": str(state.hosts_path),
                 "nodes": {n.name: {"netns": n.netns, "identity": str(identity.node_dir(state.directory, n.name)),
                                    "mailbox": processes.mailbox_dir(state, n.name)} for n in nodes}}
        self._send(table, [])
        answer = json.loads(self.sock.recv(1 << 20) or b"{}")
        if not answer.get("ready"):
            raise ExperimentError(f"launcher: {answer.get('error', 'did not start')}")
        self._lock = threading.Lock()
        self._next = 0
        self._by_id: dict[int, Launched] = {}
        self._by_pid: dict[int, Launched] = {}
        self._early_exits: dict[int, int] = {}
        self._batches: dict[int, BatchResults] = {}
        self._reader = threading.Thread(target=self._read, name="launcher", daemon=True)
        self._reader.start()

    def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.send(data)

    def launch(self, node: str, argv: list[str], env: dict[str, str], fds: tuple[int, int, int]) -> Launched:
        launched = Launched()
        with self._lock:
            self._next += 1
            key = self._next
            self._by_id[key] = launched
            self._send({"id": key, "node": node, "argv": argv, "env": env}, list(fds))
        return launched

    def run_batch(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        """Run every {node, argv, env} at once, the launcher reading their output; each result has rc, out, err
        (and timeout: True when killed at the timeout)."""
        batch = BatchResults(len(items))
        with self._lock:
            self._next += 1
            key = self._next
            self._batches[key] = batch
            # a datagram each: the first parts are kept by the launcher, the last one starts them all
            parts = _parts(items, LAUNCHER_MESSAGE_BYTES)
            for part in parts[:-1]:
                self._send({"id": key, "more": part}, [])
            self._send({"id": key, "batch": parts[-1], "timeout": timeout}, [])
        batch.done.wait()
        return batch.results

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)        # a datagram each; a shorter buffer would cut one short
            except OSError:
                data = b""
            if not data:
                print("launcher went away", file=sys.stderr, flush=True)
                with self._lock:
                    for launched in list(self._by_id.values()) + list(self._by_pid.values()):
                        launched.error = launched.error or "the launcher went away"
                        launched.started.set()
                        launched.done.set()
                    for batch in self._batches.values():
                        batch.fail("the launcher went away")
                return
            message = json.loads(data)
            with self._lock:
                if "r" in message or "done" in message:
                    batch = self._batches[message["id"]]
                    batch.add(message.get("r") or [])
                    if message.get("done"):
                        del self._batches[message["id"]]
                        batch.done.set()
                    continue
                if "exit" in message:
                    launched = self._by_pid.pop(message["exit"], None)
                    if launched is None:
                        continue
                    launched.rc = message["rc"]
                    launched.done.set()
                    continue
                launched = self._by_id.pop(message["id"])
                if "error" in message:
                    launched.error = message["error"]
                    launched.started.set()
                    launched.done.set()
                    continue
                launched.pid = message["pid"]
                self._by_pid[launched.pid] = launched
                launched.started.set()


class Agent:
    def __init__(self, state: ExperimentState):
        from nestbed.control.store import Store
        self.state = state
        plan = state.load_plan()
        if plan is None:
            raise ExperimentError(f"experiment {state.name}: no plan")
        self.plan: HostPlan = plan
        self.host = plan.host or "local"
        self.nodes = {n.name: n for n in plan.nodes}
        self.local = [n for n in plan.nodes if n.vm is None]
        self.credential = credential_path(state).read_text().strip()
        self.store = Store(state.directory / STORE)
        self.subscribers: list[queue.SimpleQueue] = []
        self.sub_lock = threading.Lock()
        self.spawned: dict[str, tuple[str, int]] = {}     # handle → (node, pid)
        self.launcher = LauncherClient(state, self.local) if self.local else None
        self.watcher: Any = None
        self.stopping = threading.Event()

    # -- helpers ------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

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

    def vm_client(self, node: NodePlan) -> Any:
        from nestbed.realize import vms
        assert node.vm is not None
        return vms.client(self.state, self.plan, self.plan.vm(node.vm))

    def publish(self, source: str, name: str, data: Any) -> int:
        created = time.time()
        event_id = self.store.add_event(source, name, data, created=created)
        message = {"event": {"id": event_id, "created": created, "source": source, "name": name, "data": data}}
        with self.sub_lock:
            for subscriber in self.subscribers:
                subscriber.put(message)
        return event_id

    def deliver(self, node: str, kind: str, name: str, data: Any) -> None:
        """A mailbox line (host mailboxes, or forwarded by a guest agent)."""
        if kind == "event":
            self.publish(node, name, data)
        else:
            self.store.add_record(name, host=self.host, data=data, node=node)

    # -- running programs -----------------------------------------------------------------------------------
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
            result["rc"] = self.vm_client(node).run(node.name, argv, stdout=out, stderr=err)
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
            guest = self.vm_client(node).connect()
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
                _kill_group(launched.pid, signal.SIGKILL)
        launched.done.wait(10.0)
        if launched.error:
            conn.send({"error": launched.error})
            return
        answer: dict[str, Any] = {"rc": launched.rc}
        if timed_out:
            answer["timeout"] = True
        conn.send(answer)

    def spawn(self, request: dict[str, Any]) -> dict[str, Any]:
        from nestbed.realize import processes
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
            rc = self.vm_client(node).run(node.name, ["/bin/sh", "-c", script], stdout=out, stderr=io.BytesIO())
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
                                    "start": processes.process_start_time(launched.pid)}])
        handle = f"{node.name}/{name}/{launched.pid}"
        self.spawned[handle] = (node.name, launched.pid)
        return {"handle": handle, "pid": launched.pid, "log": str(log)}

    def spawn_many(self, items: list[dict[str, Any]]) -> list[str]:
        """spawn for many nodes: one journal write before (logs) and one after (pids), children started at once."""
        from nestbed.realize import processes
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
                            "start": processes.process_start_time(child.pid)})
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
                self.vm_client(node).run(node.name, ["/bin/sh", "-c", f"kill -TERM -{pid} 2>/dev/null; sleep 1; "
                                                                      f"kill -KILL -{pid} 2>/dev/null; true"],
                                         stdout=io.BytesIO(), stderr=io.BytesIO())
                continue
            _kill_group(pid, signal.SIGTERM)
            local.append(pid)
        deadline = time.monotonic() + 1.0
        while local and time.monotonic() < deadline:
            local = [pid for pid in local if _group_alive(pid)]
            if local:
                time.sleep(0.02)
        for pid in local:
            _kill_group(pid, signal.SIGKILL)
        return {"ok": True}

    def link(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            from nestbed.realize import links       # type: ignore[attr-defined]
        except ModuleNotFoundError as error:
            if error.name != "nestbed.realize.links":
                raise
            raise ExperimentError("runtime link changes are not available in this version") from None
        links.change(self.state, self.plan, str(request.get("segment")), str(request.get("action")),
                     **dict(request.get("shaping") or {}))
        return {"ok": True}

    def counters(self) -> dict[str, Any]:
        from dataclasses import asdict
        created, rows = self.store.latest_counters()
        return {"created": created, "rows": [asdict(r) for r in rows]}

    # -- serving ------------------------------------------------------------------------------------------
    def handle(self, conn: Connection) -> None:
        hello = conn.receive()
        if not hello or not hmac.compare_digest(str(hello.get("credential", "")), self.credential):
            conn.send({"error": "refused: wrong or missing credential"})
            return
        while True:
            request = conn.receive()
            if request is None:
                return
            op = request.get("op")
            try:
                if op == "ping":
                    conn.send({"ok": True, "experiment": self.state.name, "host": self.host, "pid": os.getpid(),
                               "nodes": len(self.nodes)})
                elif op == "exec":
                    self.exec_stream(conn, request)
                elif op == "run_many":
                    timeout = request.get("timeout")
                    conn.send({"results": self.run_many(list(request.get("items") or []),
                                                        float(timeout) if timeout else None)})
                elif op == "spawn":
                    conn.send(self.spawn(request))
                elif op == "stop":
                    conn.send(self.stop(request))
                elif op == "spawn_many":
                    conn.send({"handles": self.spawn_many(list(request.get("items") or []))})
                elif op == "stop_many":
                    conn.send(self.stop_many(request))
                elif op == "record":
                    conn.send({"id": self.store.add_record(str(request["agent"]), host=self.host,
                                                           data=request.get("data"), node=request.get("node"))})
                elif op == "record_many":
                    conn.send({"count": self.store.add_records(
                        str(request["agent"]), self.host,
                        [(item.get("node"), item.get("data")) for item in request.get("items") or []])})
                elif op == "event":
                    conn.send({"id": self.publish(str(request.get("source") or "controller"), str(request["name"]),
                                                  request.get("data"))})
                elif op == "subscribe":
                    self.subscribe(conn, request.get("since"))
                    return
                elif op == "counters":
                    conn.send(self.counters())
                elif op == "link":
                    conn.send(self.link(request))
                else:
                    conn.send({"error": f"unknown request {op!r}"})
            except ExperimentError as error:
                conn.send({"error": str(error)})
            except (KeyError, TypeError, ValueError) as error:
                conn.send({"error": f"bad {op!r} request: {error.__class__.__name__}: {error}"})
            except (BrokenPipeError, ConnectionResetError):
                return
            except Exception as error:           # keep serving; the client gets one line, the log the rest
                self.log(f"{op}: {traceback.format_exc()}")
                conn.send({"error": f"{op}: {error.__class__.__name__}: {error}"})

    def subscribe(self, conn: Connection, since: Any) -> None:
        mine: queue.SimpleQueue = queue.SimpleQueue()
        with self.sub_lock:
            self.subscribers.append(mine)
            backlog = self.store.events(int(since)) if since is not None else []
        try:
            conn.send({"ok": True})
            last = 0
            for event in backlog:
                conn.send({"event": event})
                last = event["id"]
            # notice a client that went away while no events come
            conn.sock.setblocking(True)
            while True:
                try:
                    message = mine.get(timeout=5.0)
                except queue.Empty:
                    if _peer_closed(conn.sock):
                        return
                    continue
                if message["event"]["id"] <= last:
                    continue
                conn.send(message)
        finally:
            with self.sub_lock:
                self.subscribers.remove(mine)

    def serve(self) -> None:
        agent = self
        path = socket_path(self.state)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = Connection(self.request)
                try:
                    agent.handle(conn)
                except (OSError, ValueError):
                    pass

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True
            request_queue_size = 128

        path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            server = Server(str(path), Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.server = server
        self.log(f"serving {path} ({len(self.nodes)} nodes, {len(self.local)} on this host)")
        server.serve_forever(poll_interval=3600)     # shutdown() wakes it; no idle polling

    # -- background work ------------------------------------------------------------------------------------
    def start_background(self) -> None:
        from nestbed.agent import mailbox
        boxes = {n.name: str(mailbox.mailbox_dir(self.state.directory, n.name)) for n in self.local
                 if mailbox.mailbox_dir(self.state.directory, n.name).is_dir()}
        if boxes:
            self.watcher = mailbox.Watcher(boxes, self.deliver, lambda node, msg: self.log(f"mailbox {node}: {msg}"))
            self.watcher.start()
            self.log(f"watching {len(boxes)} mailboxes ({self.watcher.mode})")
        for vm in self.plan.vms:
            threading.Thread(target=self._forward_guest_mailboxes, args=(vm.name,), name=f"mailbox-{vm.name}",
                             daemon=True).start()
        threading.Thread(target=self._sample_counters, name="counters", daemon=True).start()

    def _forward_guest_mailboxes(self, vm_name: str) -> None:
        """Events and records written in mailboxes of nodes inside a VM, streamed by its guest agent."""
        from nestbed.realize import vms
        seq = 0
        while not self.stopping.is_set():
            try:
                conn = vms.client(self.state, self.plan, self.plan.vm(vm_name)).connect(timeout=5.0)
                try:
                    conn.sock.settimeout(None)
                    conn.send({"op": "mailbox", "since": seq})
                    while True:
                        message = conn.receive()
                        if message is None or "error" in message:
                            if message:
                                self.log(f"VM {vm_name} mailboxes: {message['error']}")
                                return
                            break
                        if "seq" in message:
                            seq = int(message["seq"])
                            self._deliver_guest_line(message)
                finally:
                    conn.close()
            except (ExperimentError, OSError, ValueError):
                pass
            self.stopping.wait(1.0)

    def _deliver_guest_line(self, message: dict[str, Any]) -> None:
        """A mailbox line from a guest: parsed there (a vhost's full agent) or raw (a qemu node's boot agent)."""
        from nestbed.agent import mailbox
        node = str(message["node"])
        if "line" not in message:
            self.deliver(node, str(message["kind"]), str(message["name"]), message.get("data"))
            return
        try:
            kind, name, data = mailbox.parse_line(str(message["line"]))
        except mailbox.MailboxError as error:
            self.log(f"mailbox {node}: {error}")
            return
        self.deliver(node, kind, name, data)

    def _vm_counters(self) -> list[Any]:
        """Counters of nodes inside VMs, from their guest agents (a VM that does not answer is skipped)."""
        from nestbed.control.store import CounterRow
        from nestbed.realize import vms
        rows = []
        for vm in self.plan.vms:
            try:
                answer = vms.client(self.state, self.plan, vm).request("counters", timeout=0.5)
                rows += [CounterRow(**row) for row in answer.get("rows", [])]
            except Exception:       # noqa: BLE001 — booting, busy or gone: next second
                continue
        return rows

    def _sample_counters(self) -> None:
        try:
            from nestbed.agent.attack_counters import install_attack_counters
            from nestbed.agent.sampler import Sampler
        except ModuleNotFoundError as error:
            if error.name not in ("nestbed.agent.sampler", "nestbed.agent.attack_counters"):
                self.log(f"counters: {error}")
            return
        interval = float(os.environ.get("NESTBED_COUNTER_INTERVAL") or 1.0)
        try:
            nodes = [(n.name, n.netns) for n in self.local]
            sampler = Sampler(nodes)
            try:        # flood traffic (DSCP 8) counted apart from the start: ~0.1 ms a node
                install_attack_counters(nodes, sampler)
            except Exception:       # noqa: BLE001 — no nf_tables: attack counters stay 0 and counters says why
                self.log(f"counters: attack counters not installed: {traceback.format_exc()}")
        except Exception:
            self.log(f"counters: cannot start sampling: {traceback.format_exc()}")
            return
        failures = 0
        next_time = time.monotonic()
        while not self.stopping.is_set():
            try:
                rows = sampler.sample() + self._vm_counters()
                self.store.add_counters(time.time(), rows)
                failures = 0
            except Exception:
                failures += 1
                if failures <= 3:
                    self.log(f"counters: {traceback.format_exc()}")
            next_time += interval
            delay = next_time - time.monotonic()
            if delay < 0:
                next_time = time.monotonic()
                delay = 0
            self.stopping.wait(delay)


def _kill_group(pid: int, sig: int) -> None:
    for target in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
        try:
            target()
            return
        except (ProcessLookupError, PermissionError):
            continue


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _peer_closed(sock: socket.socket) -> bool:
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return data == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m nestbed.agent.host EXPERIMENT", file=sys.stderr)
        return 2
    if sys.stdin.readline().strip() != "go":      # `up` writes it once our pid is journaled
        return 1
    from nestbed.realize.state import experiment
    state = experiment(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))     # a FIFO and a pipe pair per node
    agent = Agent(state)

    def stop(*_: Any) -> None:
        agent.stopping.set()
        threading.Thread(target=agent.server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.start_background()
    agent.serve()
    agent.log("stopped")
    socket_path(state).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
