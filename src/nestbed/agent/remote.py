"""The remote agent: what the controller's SSH transport (cluster/ssh.py) talks to on a host, over ONE long-lived
session channel, started once per host as `python -m nestbed.agent.remote --stdio` with the host's
NESTBED_STATE_DIR and NESTBED_PREFIX.

JSON lines on stdin/stdout. First line out: {"hello": {"version", "python", "host"}}. Requests {"id": N, "op": OP,
…}; answers {"id": N, "ok": {…}} or {"id": N, "error": "one line"}; a stream (exec output, subscribe, apply's
progress) sends {"id": N, "more": {…}} lines before its answer. Every request runs in a thread of its own, so
answers come as they are ready (by id): a slow apply never holds up a status.

Ops: apply {plan} (HostPlan JSON: agent.lifecycle.reconcile here: up when absent, else only the difference;
streams {"phase", "total"} and {"advance"}; answers {"seconds", "action", "summary"}), remove {experiment}
(lifecycle.down: the TeardownReport's fields, or {"absent": true}), cleanup {everything} ({"reports": […]}),
status {experiment}, control {experiment, request, args} (the host agent's op
`request` for that experiment, through agent/hostclient.py: its answer; exec and subscribe stream, records reads
the store here, info gives nodes, addresses and subnets), check {features} (this host's nestbed, Python and kernel,
its kernel features, addresses and clock: agent/hostcheck.py), probe_mtu {peer, seconds} (the underlay's path MTU
to another host: agent/pathmtu.py), store_copy {experiment} (a copy of its store here, streamed in base64 parts:
how a real host's records and counters reach the controller's plots), cancel {target} (ends a stream; an apply
stops at its next step and rolls back), shutdown (streams end, an apply, remove or cleanup under way is let finish
first).

When the channel ends (EOF on stdin, or a write that fails: the controller died or lost its connection), an apply
under way is abandoned: nobody would learn that it finished, and the controller's rollback may never come. It
stops at its next step (StreamedProgress raises), lifecycle.up removes what it made from its journal,
and only then does the agent exit. A remove or cleanup under way is let finish.

`--cleanup` is a one-shot mode for emulated hosts' teardown (cluster/emulated.py): lifecycle.cleanup of every
experiment under this state root, one JSON line of what was removed and left.

It starts per host, so the top imports only the standard library's basics; lifecycle and friends load on first use.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

TYPE_CHECKING = False     # typing costs start-up time here too
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    from nestbed.agent.hostclient import HostAgentClient
    from nestbed.agent.store import Store

STORE_CHUNK = 1 << 20       # store_copy's parts (base64 on the channel: ~1.4 MiB lines)
PROGRESS_SECONDS = 0.1      # apply's progress is sent at most this often (advances add up in between)


class Request:
    """One request being answered: its id, op and arguments, a way to stream, and its cancellation."""

    def __init__(self, agent: RemoteAgent, ident: Any, op: str, args: dict[str, Any]):
        self.agent, self.id, self.op, self.args = agent, ident, op, args
        self.cancelled = threading.Event()
        self._on_cancel: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def more(self, data: dict[str, Any]) -> None:
        self.agent.send({"id": self.id, "more": data})

    def on_cancel(self, action: Callable[[], None]) -> None:
        with self._lock:
            if not self.cancelled.is_set():
                self._on_cancel.append(action)
                return
        action()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            actions, self._on_cancel = self._on_cancel, []
        for action in actions:
            try:
                action()
            except OSError:
                pass


class RemoteAgent:
    """The protocol: reads requests, runs each in a thread, writes answers. `ops` does the work: an object with
    a method per op taking the Request (HostOps here; tests give fakes)."""

    OPS = ("apply", "remove", "cleanup", "status", "control", "check", "probe_mtu", "store_copy")
    LIFECYCLE = ("apply", "remove", "cleanup")     # waited for at the end: a half-made experiment rolls back itself

    def __init__(self, reader: BinaryIO, writer: BinaryIO, ops: Any, hello: dict[str, Any] | None = None):
        self.reader, self.writer, self.ops = reader, writer, ops
        self.hello = hello if hello is not None else default_hello()
        self._write_lock = threading.Lock()
        self._running: dict[Any, Request] = {}
        self._running_lock = threading.Lock()
        self._lifecycle: list[threading.Thread] = []
        self._shutdown_id: Any = None

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            with self._write_lock:
                self.writer.write(line)
                self.writer.flush()
        except (OSError, ValueError):
            self._cancel(lifecycle=True)     # the controller is gone: an apply under way is abandoned
            raise

    def serve(self) -> int:
        """Until stdin ends or `shutdown`: 0. However serving ends (a write to a closed channel raises too), the
        lifecycle threads are waited for: the process must not exit with an experiment half-made."""
        try:
            if self._serve():
                self._finish(abandon=False)
                self.send({"id": self._shutdown_id, "ok": {}})
                return 0
        except (OSError, ValueError):
            pass               # the channel broke under a write
        self._finish(abandon=True)
        return 0

    def _serve(self) -> bool:
        """Read and dispatch requests; True at `shutdown`, False when stdin ends."""
        self.send({"hello": self.hello})
        for line in self.reader:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not a JSON object")
            except ValueError as error:
                self.send({"id": None, "error": f"bad request line: {error}"})
                continue
            ident, op = message.pop("id", None), message.pop("op", None)
            if op == "shutdown":
                self._shutdown_id = ident
                return True
            if op == "cancel":
                with self._running_lock:
                    target = self._running.get(message.get("target"))
                if target is not None:
                    target.cancel()
                self.send({"id": ident, "ok": {"cancelled": target is not None}})
                continue
            request = Request(self, ident, str(op), message)
            with self._running_lock:
                self._running[ident] = request
            thread = threading.Thread(target=self._answer, args=(request,), daemon=True, name=f"request-{ident}")
            thread.start()
            if request.op in self.LIFECYCLE:
                self._lifecycle = [t for t in self._lifecycle if t.is_alive()] + [thread]
        return False

    def _finish(self, abandon: bool) -> None:
        """Streams end, then the lifecycle threads are waited for. `shutdown` (abandon False) lets an apply under
        way finish: its answer still reaches the controller. The channel's end (abandon True) cancels it: it
        stops at its next step and rolls back. A remove or cleanup never looks at its cancellation: ended
        mid-way, it would leave a half-removed experiment for `cleanup`."""
        self._cancel(lifecycle=abandon)
        for thread in self._lifecycle:
            thread.join()

    def _cancel(self, lifecycle: bool) -> None:
        with self._running_lock:
            running = [r for r in self._running.values() if lifecycle or r.op not in self.LIFECYCLE]
        for request in running:
            request.cancel()

    def _answer(self, request: Request) -> None:
        try:
            answer: dict[str, Any] = {"id": request.id, "ok": self._run(request)}
        except Exception as error:
            answer = {"id": request.id, "error": one_line(request.op, error)}
        finally:
            with self._running_lock:
                self._running.pop(request.id, None)
        try:
            self.send(answer)
        except (BrokenPipeError, ValueError, OSError):
            pass          # the controller is gone: nobody to tell

    def _run(self, request: Request) -> dict[str, Any]:
        if request.op == "hello":
            return dict(self.hello)
        if request.op not in self.OPS:
            from nestbed.errors import ExperimentError
            raise ExperimentError(f"unknown request {request.op!r} (known: {', '.join(self.OPS)}, cancel, shutdown)")
        return dict(getattr(self.ops, request.op)(request))


def one_line(op: str, error: BaseException) -> str:
    """What the controller shows: a nestbed error as it is; a bad request or anything else in one line (the
    traceback goes to stderr, which the controller keeps for the host's log)."""
    from nestbed.errors import NestbedError
    if isinstance(error, NestbedError):
        return " ".join(str(error).split())
    if isinstance(error, (KeyError, TypeError, ValueError)):
        return f"bad {op!r} request: {error.__class__.__name__}: {' '.join(str(error).split())}"
    import traceback
    traceback.print_exc(file=sys.stderr)
    return f"{op} failed on this host: {error.__class__.__name__}: {' '.join(str(error).split())}"


def default_hello() -> dict[str, Any]:
    import platform
    import socket

    from nestbed import __version__, paths
    from nestbed.agent.hostcheck import address_links
    # prefix, state_dir and links: what the controller's plan for this host needs (its objects' names, where
    # its journals are, which interface holds its underlay address)
    return {"version": __version__, "python": platform.python_version(), "host": socket.gethostname(),
            "pid": os.getpid(), "prefix": paths.object_prefix(), "state_dir": str(paths.state_root()),
            "links": address_links()}


def abandoned() -> Exception:
    from nestbed.errors import ExperimentError
    return ExperimentError("apply abandoned: the controller's channel ended (or it cancelled the apply); "
                           "everything made on this host was removed")


class StreamedProgress:
    """apply's progress as `more` lines: phases at once, advances added up and sent at most every 0.1 s. It is
    also where an apply learns that it was cancelled (the channel ended): each step raises then, and
    lifecycle.up rolls back what was made (the realizer calls it between steps, from its worker threads too)."""

    def __init__(self, request: Request):
        self.request = request
        self.pending = 0
        self.sent = 0.0

    def phase(self, description: str, total: int) -> None:
        self.check()
        self.flush()
        self.request.more({"phase": description, "total": total})

    def advance(self, amount: int = 1) -> None:
        self.check()
        self.pending += amount
        now = time.monotonic()
        if now - self.sent >= PROGRESS_SECONDS:
            self.flush()
            self.sent = now

    def check(self) -> None:
        if self.request.cancelled.is_set():
            raise abandoned()

    def flush(self) -> None:
        if self.pending:
            self.request.more({"advance": self.pending})
            self.pending = 0


class HostOps:
    """The ops on this host: the experiment lifecycle, and each experiment's host agent for control."""

    def __init__(self) -> None:
        self._clients: dict[str, HostAgentClient] = {}
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    # -- the lifecycle ------------------------------------------------------------------------------------------
    def apply(self, request: Request) -> dict[str, Any]:
        from nestbed.agent import lifecycle
        from nestbed.plan.hostplan import HostPlan
        plan = HostPlan.from_json(request.args["plan"])
        self._forget(plan.experiment)
        progress = StreamedProgress(request)
        done = lifecycle.reconcile(plan, progress)     # up when absent, else only the difference (a modify)
        if request.cancelled.is_set() and done.action == "up":   # finished as the channel ended: nobody knows it
            lifecycle.down(plan.experiment)
            raise abandoned()
        progress.flush()
        return {"seconds": done.seconds, "action": done.action, "summary": done.diff.summary()}

    def remove(self, request: Request) -> dict[str, Any]:
        from dataclasses import asdict

        from nestbed.agent import lifecycle
        name = str(request.args["experiment"])
        self._forget(name)
        report = lifecycle.down(name)
        return asdict(report) if report is not None else {"absent": True}

    def cleanup(self, request: Request) -> dict[str, Any]:
        from dataclasses import asdict

        from nestbed.agent import lifecycle
        reports = lifecycle.cleanup(bool(request.args.get("everything")))
        for report in reports:
            self._forget(report.name)
        return {"reports": [asdict(r) for r in reports]}

    def status(self, request: Request) -> dict[str, Any]:
        from nestbed.agent import supervision
        from nestbed.realize.state import experiment
        state = experiment(str(request.args["experiment"]))
        if not state.directory.is_dir():
            return {"state": "absent", "agent": None}
        return {**state.status(), "agent": supervision.agent_status(state)}

    # -- the host itself: `nestbed cluster check` --------------------------------------------------------------
    def check(self, request: Request) -> dict[str, Any]:
        """This host's versions, kernel features, addresses and clock (agent/hostcheck.py); `busy`: the seconds
        spent here before `time` was read, so the controller can take them out of the round trip."""
        from nestbed.agent import hostcheck
        started = time.monotonic()
        answer = hostcheck.answer(features=bool(request.args.get("features", True)))
        answer["busy"] = time.monotonic() - started
        return answer

    def probe_mtu(self, request: Request) -> dict[str, Any]:
        """The underlay's path MTU to `peer` (an IPv4 address), from this host's namespace (agent/pathmtu.py)."""
        import ipaddress

        from nestbed.agent import pathmtu
        peer = str(ipaddress.IPv4Address(str(request.args["peer"])))
        return pathmtu.probe(peer, float(request.args.get("seconds", pathmtu.SECONDS)))

    def store_copy(self, request: Request) -> dict[str, Any]:
        """A consistent copy of the experiment's store here (SQLite's online backup, while its agent writes),
        streamed as `more` parts {"b": base64}; {"absent": true} when it has none."""
        import sqlite3
        import tempfile

        from nestbed import paths
        from nestbed.channel import encode
        path = paths.store(paths.experiment_dir(str(request.args["experiment"])))
        if not path.exists():
            return {"absent": True}
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "store.sqlite"
            source, target = sqlite3.connect(f"file:{path}?mode=ro", uri=True), sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            data = copy.read_bytes()
        for start in range(0, len(data), STORE_CHUNK):
            request.more({"b": encode(data[start:start + STORE_CHUNK])})
        return {"bytes": len(data)}

    # -- control: the experiment's host agent -------------------------------------------------------------------
    def control(self, request: Request) -> dict[str, Any]:
        name = str(request.args["experiment"])
        op = str(request.args["request"])
        args = dict(request.args.get("args") or {})
        client = self._client(name)
        if op == "info":
            plan = client.plan
            return {"nodes": client.nodes(), "addresses": {n.name: client.addresses(n.name) for n in plan.nodes},
                    "subnets": client.subnets()}
        if op == "exec":
            return self._exec(request, client, args)
        if op == "run_many":
            return {"results": client.run_many(list(args["items"]), args.get("timeout"))}
        if op == "records":
            return {"records": self._store(name, client).records(args.get("agent"))}
        if op == "subscribe":
            return self._subscribe(request, client, args.get("since"))
        return client.request(op, **args)

    def _exec(self, request: Request, client: HostAgentClient, args: dict[str, Any]) -> dict[str, Any]:
        from nestbed.channel import encode
        rc = client.exec(str(args["node"]), list(args["argv"]), lambda data: request.more({"o": encode(data)}),
                         lambda data: request.more({"e": encode(data)}), timeout=args.get("timeout"),
                         env=args.get("env"))
        return {"rc": rc}

    def _subscribe(self, request: Request, client: HostAgentClient, since: int | None) -> dict[str, Any]:
        import socket

        from nestbed.errors import ExperimentError
        conn = client.connect()
        try:
            conn.conn.send({"op": "subscribe", **({"since": since} if since is not None else {})})
            first = client._receive(conn)
            if "error" in first:
                raise ExperimentError(first["error"])
            conn.sock.settimeout(None)
            request.on_cancel(lambda: conn.sock.shutdown(socket.SHUT_RDWR))
            request.more({"subscribed": True})
            while not request.cancelled.is_set():
                try:
                    message = client._receive(conn)
                except ExperimentError:
                    if request.cancelled.is_set():
                        break
                    raise
                if "event" in message:
                    request.more({"event": message["event"]})
            return {"cancelled": True}
        finally:
            conn.close()

    def _client(self, name: str) -> HostAgentClient:
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                from nestbed.agent.hostclient import HostAgentClient
                client = self._clients[name] = HostAgentClient(name)
            return client

    def _store(self, name: str, client: HostAgentClient) -> Any:
        from nestbed import paths
        from nestbed.agent.store import Store
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                path = paths.store(client.state.directory)
                if not path.exists():
                    return _NoRecords()
                store = self._stores[name] = Store(path)
            return store

    def _forget(self, name: str) -> None:
        with self._lock:
            client, store = self._clients.pop(name, None), self._stores.pop(name, None)
        if client is not None:
            client.close()
        if store is not None:
            store.close()


class _NoRecords:
    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        return []


def cleanup_main() -> int:
    """--cleanup: every experiment of this state root, from its journal; one JSON line on stdout."""
    from dataclasses import asdict

    from nestbed.agent import lifecycle
    from nestbed.errors import NestbedError
    try:
        reports = lifecycle.cleanup(everything=True)
    except NestbedError as error:
        print(f"nestbed cleanup: {error}", file=sys.stderr)
        return 1
    left = [line for r in reports for line in [*r.left, *r.kept, *r.processes_left]]
    print(json.dumps({"reports": [asdict(r) for r in reports], "left": left}))
    return 0


def stdio_main() -> int:
    """--stdio: the protocol on stdin/stdout. Our fds 0 and 1 become /dev/null and stderr first, so nothing a
    library or a child prints can corrupt the channel, and no child reads the controller's requests."""
    reader = os.fdopen(os.dup(0), "rb")
    writer = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    try:
        return RemoteAgent(reader, writer, HostOps()).serve()
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--stdio"]:
        return stdio_main()
    if args == ["--cleanup"]:
        return cleanup_main()
    print("usage: python -m nestbed.agent.remote --stdio | --cleanup", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
