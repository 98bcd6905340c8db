"""SshHost: a host of the ptopo reached over SSH (asyncssh), as HostTransport (cluster/transport.py).

    host = SshHost("emu0", cluster.connect_info("emu0"))    # or ConnectInfo.from_destination("root@192.0.2.10")
    connect_all([host, …])                                  # all hosts at once; one line per host that fails
    host.apply(plan); host.status("lab"); host.control("lab").run("a", ["ping", "-c1", "b"]); host.remove("lab")

ONE connection per host and ONE long-lived session channel on it, running the host's remote agent
(`python -m nestbed.agent.remote --stdio`, agent/remote.py, JSON lines with ids): every request to the host — apply,
status, programs in nodes, records, events, link changes, subscriptions — is multiplexed on that channel, never a
channel per node or command (sshd's MaxSessions is 10). The asyncio loop runs in one background thread shared by
every SshHost; the public methods are synchronous, and what a stream brings (output, events, progress) is handed to
callbacks in the caller's thread. Known hosts are pinned (the emulated hosts' own file, else ~/.ssh/known_hosts);
keepalives find a dead host. For an emulated host, the TCP socket is opened inside the underlay namespace
(`netns`), so nothing is added to this machine's own namespace.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import queue
import shlex
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestbed import __version__
from nestbed.channel import decode
from nestbed.errors import ExperimentError

if TYPE_CHECKING:
    from nestbed.cluster.bundle import Bundle
    from nestbed.cluster.control import ExperimentControl
    from nestbed.cluster.transport import HostTransport
    from nestbed.plan.hostplan import HostPlan
    from nestbed.realize.apply import Progress
    from nestbed.realize.teardown import TeardownReport

CONNECT_SECONDS = 10.0
HELLO_SECONDS = 20.0            # the agent's interpreter starts (and imports) on the host
KEEPALIVE_SECONDS = 5.0
KEEPALIVE_MISSES = 3
CONNECTING = 64                 # hosts connecting at once (sshd's MaxStartups is per host: no limit of theirs)
SCRIPT_SECONDS = 60.0           # a command beside the agent (systemctl enable --now waits for the start)
STDERR_LINES = 50               # the agent's last stderr lines, kept for what to say when it dies


@dataclass(frozen=True)
class ConnectInfo:
    """How to reach a host and start its agent."""
    address: str
    port: int = 22
    username: str = "root"
    client_keys: tuple[str, ...] | None = None   # None: the user's own keys and ssh-agent
    known_hosts: str | None = None               # None: ~/.ssh/known_hosts
    netns: str | None = None                     # open the TCP socket in this namespace (emulated hosts)
    python: str = "python3"                      # the host's interpreter (with nestbed, unless `bring`)
    bring: bool = False                          # bring this nestbed there (cluster/bundle.py) and run that
    state_dir: str | None = None                 # the host agent's NESTBED_STATE_DIR (None: its default)
    prefix: str | None = None                    # its NESTBED_PREFIX (None: its default)
    connect_seconds: float = CONNECT_SECONDS
    keepalive_seconds: float = KEEPALIVE_SECONDS

    @classmethod
    def from_destination(cls, destination: str, **options: Any) -> ConnectInfo:
        """`root@192.0.2.10`, `192.0.2.10`, `root@h1:2222` (a cluster file's `ssh:`)."""
        user, _, rest = destination.rpartition("@")
        host, port = rest, 22
        if rest.count(":") == 1:
            host, _, text = rest.partition(":")
            if not text.isdigit():
                raise ExperimentError(f"ssh destination {destination!r}: port {text!r} is not a number")
            port = int(text)
        if not host:
            raise ExperimentError(f"ssh destination {destination!r} has no host")
        return cls(address=host, port=port, username=user or "root", **options)

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}" if self.port != 22 else self.address

    def command(self, bundle_dir: str | None = None) -> str:
        """The agent's command line there; with a brought nestbed, its interpreter runs that alone (-S: none of
        the host's own site packages)."""
        env = [f"PYTHONPATH={shlex.quote(bundle_dir)}"] if bundle_dir else []
        env += [f"NESTBED_STATE_DIR={shlex.quote(self.state_dir)}"] if self.state_dir else []
        env += [f"NESTBED_PREFIX={shlex.quote(self.prefix)}"] if self.prefix else []
        flags = ["-S"] if bundle_dir else []
        return " ".join(["exec", "env", *env, shlex.quote(self.python), *flags, "-m", "nestbed.agent.remote",
                         "--stdio"])


_bundle: Bundle | None = None
_bundle_lock = threading.Lock()


def built_bundle() -> Bundle:
    """This controller's bundle, built once per process (hosts connecting at once share it)."""
    global _bundle
    with _bundle_lock:
        if _bundle is None:
            from nestbed.cluster import bundle
            _bundle = bundle.build()
        return _bundle


# -- the shared event loop ----------------------------------------------------------------------------------------
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def event_loop() -> asyncio.AbstractEventLoop:
    """The loop every SshHost's connection lives on, in a daemon thread of its own (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="nestbed-ssh", daemon=True).start()
            _loop = loop
        return _loop


def _on_loop(coroutine: Any, timeout: float | None = None) -> Any:
    return asyncio.run_coroutine_threadsafe(coroutine, event_loop()).result(timeout)


# -- one request on the channel -----------------------------------------------------------------------------------
class Call:
    """A request in flight: the reader (loop thread) puts its lines in a queue, the caller's thread takes them."""

    def __init__(self, channel: AgentChannel, ident: int, op: str):
        self.channel, self.id, self.op = channel, ident, op
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def stream(self) -> Iterator[dict[str, Any]]:
        """The `more` parts as they come; the final answer is `self.answer` (an error raises, in one line)."""
        while True:
            line = self.lines.get()
            if "more" in line:
                yield line["more"]
            elif "ok" in line:
                self.answer: dict[str, Any] = line["ok"]
                return
            else:
                raise ExperimentError(f"{self.channel.label}: {line.get('error')}")

    def wait(self, on_more: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        for part in self.stream():
            if on_more is not None:
                on_more(part)
        return self.answer

    def cancel(self) -> None:
        """End a stream (the agent stops it and answers)."""
        self.channel.send({"id": self.channel.next_id(), "op": "cancel", "target": self.id})


class AgentChannel:
    """The client side of the remote agent's protocol over a reader and writer (asyncssh's or asyncio's): ids,
    routing answers to their calls, failing every call in flight when the channel ends."""

    def __init__(self, reader: Any, writer: Any, label: str, lost: Callable[[], Awaitable[str]] | None = None):
        self.reader, self.writer, self.label = reader, writer, label
        self.lost = lost or _closed     # why the channel ended (the agent's last stderr line), once it has
        self.calls: dict[int, Call] = {}
        self.closed: str | None = None
        self._ids = 0
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None     # the loop it was opened on (handshake)

    async def handshake(self, seconds: float) -> dict[str, Any]:
        """The agent's hello (its first line); a different nestbed version is refused in one line."""
        try:
            line = await asyncio.wait_for(self.reader.readline(), seconds)
        except TimeoutError:
            raise ExperimentError(f"{self.label}: the agent sent no hello in {seconds:g} s") from None
        try:
            hello = json.loads(line)["hello"] if line else None
        except (ValueError, KeyError, TypeError):
            hello = None
        if not isinstance(hello, dict):
            said = _text(line).strip()[:200]
            raise ExperimentError(f"{self.label}: the agent did not start: {said or await self.lost()}")
        if hello.get("version") != __version__:
            raise ExperimentError(f"{self.label} runs nestbed {hello.get('version')}, this controller runs "
                                  f"nestbed {__version__}: install nestbed {__version__} there")
        self.loop = asyncio.get_running_loop()
        self._task = self.loop.create_task(self._read())
        return hello

    def next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def call(self, op: str, **args: Any) -> Call:
        """Send a request (from any thread); its answer comes through the Call."""
        ident = self.next_id()
        call = Call(self, ident, op)
        with self._lock:
            if self.closed is not None:
                raise ExperimentError(self.closed)
            self.calls[ident] = call
        self.send({"id": ident, "op": op, **args})
        return call

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        assert self.loop is not None, "send before the handshake"
        self.loop.call_soon_threadsafe(self._write, data)

    def _write(self, data: bytes) -> None:
        if self.closed is None:
            self.writer.write(data)

    async def _line(self) -> bytes:
        """The next whole line (b"" at the end). asyncssh hands a line longer than the channel's window (2 MiB)
        over in pieces without their newline: they are joined here."""
        pieces = []
        while True:
            piece = await self.reader.readline()
            if not piece:
                return b""          # the end (a torn last line is no answer)
            pieces.append(piece)
            if piece.endswith(b"\n"):
                return b"".join(pieces)

    async def _read(self) -> None:
        reason = None
        try:
            while True:
                line = await self._line()
                if not line:
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    continue        # not ours (the agent's stdout is the channel's alone; be lenient anyway)
                ident = message.get("id")
                with self._lock:
                    call = self.calls.get(ident) if "more" in message else self.calls.pop(ident, None)
                if call is not None:
                    call.lines.put(message)
        except (OSError, EOFError) as error:
            reason = str(error)
        except Exception as error:      # asyncssh's channel errors: the connection is gone
            reason = f"{error.__class__.__name__}: {error}"
        self._close(f"{self.label}: lost the connection to its agent: {reason or await self.lost()}")

    def _close(self, reason: str) -> None:
        with self._lock:
            self.closed = reason
            calls, self.calls = list(self.calls.values()), {}
        for call in calls:
            call.lines.put({"id": call.id, "error": reason.removeprefix(f"{self.label}: ")})


async def _closed() -> str:
    return "the channel closed"


def _text(data: Any) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")


# -- the transport ------------------------------------------------------------------------------------------------
class SshHost:
    """HostTransport over SSH. Connects on first use (or `connect()`); `close()` ends the channel and connection."""

    def __init__(self, name: str, info: ConnectInfo):
        self.name, self.info = name, info
        self.label = f"host {name} ({info.where})"
        self.hello: dict[str, Any] | None = None
        self._conn: Any = None           # asyncssh.SSHClientConnection
        self._process: Any = None        # the agent's session (asyncssh.SSHClientProcess)
        self._channel: AgentChannel | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._stderr_task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()

    # -- connection -----------------------------------------------------------------------------------------------
    def connect(self) -> dict[str, Any]:
        """Connect, start the agent, check its hello (idempotent); returns the hello."""
        with self._lock:
            if self._channel is None or self._channel.closed is not None:
                made = built_bundle() if self.info.bring else None
                _on_loop(self._connect(made))
            assert self.hello is not None
            return self.hello

    async def _connect(self, made: Bundle | None = None) -> None:
        import asyncssh
        info = self.info
        await self._disconnect()
        await self._open()
        try:
            directory = None
            if made is not None:
                from nestbed.cluster import bundle
                directory = await bundle.ensure(self._conn, made, self.label, info.python, info.state_dir)
            self._process = await self._conn.create_process(info.command(directory), encoding=None)
            self._stderr.clear()
            self._stderr_task = asyncio.get_running_loop().create_task(self._keep_stderr(self._process.stderr))
            channel = AgentChannel(self._process.stdout, self._process.stdin, self.label, self._last_words)
            self.hello = await channel.handshake(HELLO_SECONDS)
            self._channel = channel
        except asyncssh.Error as error:
            await self._disconnect()
            raise ExperimentError(f"{self.label}: cannot start its agent: {error.reason or error}") from None
        except TimeoutError:
            await self._disconnect()
            raise ExperimentError(f"{self.label}: installing nestbed there took too long") from None
        except BaseException:
            await self._disconnect()
            raise

    async def _open(self) -> None:
        """The SSH connection alone (no agent yet), errors in one line."""
        import asyncssh
        info = self.info
        options: dict[str, Any] = {"username": info.username, "known_hosts": info.known_hosts or (),
                                   "keepalive_interval": info.keepalive_seconds,
                                   "keepalive_count_max": KEEPALIVE_MISSES, "login_timeout": info.connect_seconds}
        if info.known_hosts is None:
            del options["known_hosts"]                    # asyncssh's default: ~/.ssh/known_hosts
        if info.client_keys is not None:
            options.update(client_keys=list(info.client_keys), agent_path=None, config=None)   # ours alone
        try:
            if info.netns:
                sock = await self._socket_in_netns()
                self._conn = await asyncio.wait_for(
                    asyncssh.connect(info.address, info.port, sock=sock, **options), info.connect_seconds)
            else:
                self._conn = await asyncio.wait_for(asyncssh.connect(info.address, info.port, **options),
                                                    info.connect_seconds)
        except TimeoutError:
            raise ExperimentError(f"{self.label} is unreachable: no answer in {info.connect_seconds:g} s") from None
        except asyncssh.HostKeyNotVerifiable:
            raise ExperimentError(f"{self.label}: its host key is not the one pinned in "
                                  f"{info.known_hosts or '~/.ssh/known_hosts'}") from None
        except asyncssh.PermissionDenied:
            raise ExperimentError(f"{self.label}: {info.username}@{info.address} refused our key") from None
        except asyncssh.Error as error:
            raise ExperimentError(f"{self.label}: ssh: {error.reason or error}") from None
        except OSError as error:
            raise ExperimentError(f"{self.label} is unreachable: {error.strerror or error}") from None

    async def _socket_in_netns(self) -> socket.socket:
        """A TCP socket made inside the namespace by a short-lived thread (a socket stays in the namespace it was
        made in; this loop's thread never changes namespace), connected from here."""
        made: list[Any] = []

        def make() -> None:
            from nestbed.realize import namespaces
            try:
                with namespaces.entered(str(self.info.netns)):
                    made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            except BaseException as error:
                made.append(error)
        thread = threading.Thread(target=make, name=f"socket-in-{self.name}")
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        if isinstance(made[0], BaseException):
            raise made[0] if isinstance(made[0], OSError) else OSError(str(made[0]))
        sock: socket.socket = made[0]
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (self.info.address, self.info.port)),
                                   self.info.connect_seconds)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _keep_stderr(self, stream: Any) -> None:
        try:
            while line := await stream.readline():
                self._stderr.append(_text(line).rstrip())
        except Exception:
            pass

    async def _last_words(self) -> str:
        """The agent's last stderr line: what it said before its stdout ended (stderr comes on a stream of its own,
        so it is given a moment to arrive)."""
        if self._stderr_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
            except TimeoutError:
                pass
        lines = [line for line in self._stderr if line.strip()]
        return lines[-1] if lines else "the session ended"

    async def _disconnect(self) -> None:
        if self._process is not None:
            self._process.close()
            self._process = None
        if self._conn is not None:
            self._conn.close()
            try:
                await asyncio.wait_for(self._conn.wait_closed(), 2.0)
            except (TimeoutError, OSError):
                pass
            self._conn = None
        self._channel = None

    def close(self) -> None:
        """Say goodbye to the agent (it finishes an apply under way), then close the channel and connection."""
        with self._lock:
            if self._channel is not None and self._channel.closed is None:
                try:
                    self._channel.call("shutdown").wait()
                except ExperimentError:
                    pass
            if self._conn is not None:
                _on_loop(self._disconnect())

    # -- commands beside the agent (cluster/agentunit.py) ---------------------------------------------------------
    def shell(self, script: str, stdin: str | None = None, seconds: float = SCRIPT_SECONDS) -> tuple[int, str, str]:
        """Run an sh script there in an exec session of this host's one connection (opened if need be; no agent
        is started for it): (exit status, stdout, stderr)."""
        import asyncssh
        with self._lock:
            if self._conn is None:
                _on_loop(self._open())
            try:
                result = _on_loop(asyncio.wait_for(self._conn.run(script, input=stdin, check=False), seconds))
            except TimeoutError:
                raise ExperimentError(f"{self.label}: no answer from a command there in {seconds:g} s") from None
            except asyncssh.Error as error:
                raise ExperimentError(f"{self.label}: ssh: {error.reason or error}") from None
            status = result.exit_status if result.exit_status is not None else 255
            return status, _text(result.stdout), _text(result.stderr)

    def bring(self, state_dir: str | None = None) -> str:
        """This controller's nestbed on the host (cluster/bundle.py; unpacked unless present) under `state_dir`
        (default: the host's state root as the agent would use it); its directory there."""
        from nestbed.cluster import bundle
        made = built_bundle()
        with self._lock:
            if self._conn is None:
                _on_loop(self._open())
            directory: str = _on_loop(bundle.ensure(self._conn, made, self.label, self.info.python,
                                                    state_dir or self.info.state_dir))
            return directory

    def sessions(self) -> int:
        """Session channels open on this host's connection (the test asserts exactly one)."""
        return len(getattr(self._conn, "_channels", {})) if self._conn is not None else 0

    # -- requests -------------------------------------------------------------------------------------------------
    def call(self, op: str, **args: Any) -> Call:
        self.connect()
        assert self._channel is not None
        return self._channel.call(op, **args)

    def request(self, op: str, on_more: Callable[[dict[str, Any]], Any] | None = None, **args: Any) -> dict[str, Any]:
        return self.call(op, **args).wait(on_more)

    # -- HostTransport --------------------------------------------------------------------------------------------
    def apply(self, plan: HostPlan, progress: Progress | None = None) -> float:
        return float(self.reconcile(plan, progress)["seconds"])

    def reconcile(self, plan: HostPlan, progress: Progress | None = None) -> dict[str, Any]:
        """The host's agent makes it hold `plan` (up when absent, else only the difference): {seconds, action
        ("up" | "changed" | "unchanged" | "down"), summary (the diff's lines)}."""
        def shown(part: dict[str, Any]) -> None:
            if progress is None:
                return
            if "phase" in part:
                progress.phase(str(part["phase"]), int(part["total"]))
            elif "advance" in part:
                progress.advance(int(part["advance"]))
        return self.request("apply", shown, plan=plan.to_json())

    def remove(self, experiment: str) -> TeardownReport | None:
        answer = self.request("remove", experiment=experiment)
        return None if answer.get("absent") else _report(answer)

    def cleanup(self, everything: bool = False) -> list[TeardownReport]:
        return [_report(r) for r in self.request("cleanup", everything=everything)["reports"]]

    def status(self, experiment: str) -> dict[str, Any]:
        return self.request("status", experiment=experiment)

    def control(self, experiment: str) -> SshControl:
        return SshControl(self, experiment)

    def store_copy(self, experiment: str, into: Path) -> bool:
        """The experiment's store on that host, copied to `into` (False: it has none)."""
        parts: list[bytes] = []
        answer = self.request("store_copy", lambda part: parts.append(decode(part["b"])), experiment=experiment)
        if answer.get("absent"):
            return False
        partial = into.with_name(into.name + ".part")
        partial.write_bytes(b"".join(parts))
        os.replace(partial, into)
        return True


def _report(fields: dict[str, Any]) -> TeardownReport:
    from nestbed.realize.teardown import TeardownReport
    return TeardownReport(**fields)


def connect_all(hosts: list[SshHost]) -> None:
    """Connect every host at once (their handshakes overlap on the loop); one line naming each host that failed."""
    from concurrent.futures import ThreadPoolExecutor

    def each(host: SshHost) -> str | None:
        try:
            host.connect()
            return None
        except ExperimentError as error:
            return str(error)
    if not hosts:
        return
    with ThreadPoolExecutor(min(len(hosts), CONNECTING)) as pool:
        failures = [f for f in pool.map(each, hosts) if f is not None]
    if failures:
        raise ExperimentError("; ".join(failures))


# -- ExperimentControl over the channel ---------------------------------------------------------------------------
class SshControl:
    """ExperimentControl (cluster/control.py) of one experiment on an SSH host: each method is a `control` request
    on the host's one channel, answered by the experiment's host agent there."""

    def __init__(self, host: SshHost, experiment: str):
        self.host, self.experiment = host, experiment
        self._info: dict[str, Any] | None = None

    def _call(self, op: str, **args: Any) -> Call:
        return self.host.call("control", experiment=self.experiment, request=op, args=args)

    def _request(self, op: str, **args: Any) -> dict[str, Any]:
        return self._call(op, **args).wait()

    def _described(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self._request("info")
        return self._info

    def nodes(self) -> list[str]:
        return list(self._described()["nodes"])

    def addresses(self, node: str) -> list[str]:
        try:
            return list(self._described()["addresses"][node])
        except KeyError:
            raise ExperimentError(f"experiment {self.experiment!r} has no node {node!r}") from None

    def subnets(self) -> list[str]:
        return list(self._described()["subnets"])

    def ping(self) -> dict[str, Any]:
        return self._request("ping")

    def run(self, node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        out, err = bytearray(), bytearray()
        rc = self.exec(node, argv, out.extend, err.extend, timeout=timeout)
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def exec(self, node: str, argv: list[str], on_out: Callable[[bytes], Any] | None = None,
             on_err: Callable[[bytes], Any] | None = None, timeout: float | None = None,
             env: dict[str, str] | None = None) -> int:
        def output(part: dict[str, Any]) -> None:
            if "o" in part and on_out is not None:
                on_out(decode(part["o"]))
            elif "e" in part and on_err is not None:
                on_err(decode(part["e"]))
        args: dict[str, Any] = {"node": node, "argv": list(argv), "env": env or {}}
        if timeout:
            args["timeout"] = timeout
        return int(self._call("exec", **args).wait(output)["rc"])

    def run_many(self, items: list[tuple[str, list[str]]] | list[dict[str, Any]], timeout: float | None = None
                 ) -> list[dict[str, Any]]:
        normalized = [item if isinstance(item, dict) else {"node": item[0], "argv": list(item[1])} for item in items]
        return list(self._request("run_many", items=normalized, timeout=timeout)["results"])

    def spawn(self, node: str, argv: list[str], name: str) -> str:
        return str(self._request("spawn", node=node, argv=list(argv), name=name)["handle"])

    def spawn_many(self, items: list[tuple[str, list[str], str]]) -> list[str]:
        answer = self._request("spawn_many", items=[{"node": n, "argv": list(a), "name": m} for n, a, m in items])
        return [str(h) for h in answer["handles"]]

    def stop(self, handle: str) -> None:
        self._request("stop", handle=handle)

    def stop_many(self, handles: list[str]) -> None:
        self._request("stop_many", handles=list(handles))

    def record(self, agent: str, node: str | None, data: dict[str, Any], kind: str | None = None) -> None:
        self._request("record", agent=agent, node=node, data=data, **({"kind": kind} if kind else {}))

    def record_many(self, agent: str, items: list[tuple[str | None, dict[str, Any]]], kind: str | None = None
                    ) -> None:
        self._request("record_many", agent=agent, items=[{"node": n, "data": d} for n, d in items],
                      **({"kind": kind} if kind else {}))

    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        return list(self._request("records", agent=agent)["records"])

    def event(self, name: str, data: dict[str, Any] | None = None, source: str = "controller") -> None:
        self._request("event", name=name, data=data, source=source)

    def link(self, segment: str, action: str, **shaping: Any) -> None:
        self._request("link", segment=segment, action=action, shaping=shaping)

    def counters(self) -> dict[str, Any]:
        return self._request("counters")

    def counter_window(self, node: str, ifaces: list[str], after: float | None = None, seconds: float = 300.0
                       ) -> dict[str, Any]:
        return self._request("counter_window", node=node, ifaces=list(ifaces), after=after, seconds=seconds)

    def subscribe(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """Events as they happen; subscribed when this returns. Closing the iterator ends the subscription."""
        call = self._call("subscribe", **({"since": since} if since is not None else {}))
        parts = call.stream()
        first = next(parts, None)            # {"subscribed": true}, or the error raised
        if first is None:
            raise ExperimentError(f"{self.host.label}: the subscription ended at once")
        return self._events(call, parts)

    @staticmethod
    def _events(call: Call, parts: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        try:
            for part in parts:
                if "event" in part:
                    yield part["event"]
        finally:
            if call.channel.calls.get(call.id) is call:
                call.cancel()

    def close(self) -> None:
        """Nothing to let go of: the channel is the host's (SshHost.close ends it)."""


if TYPE_CHECKING:
    def _conforms(host: SshHost, control: SshControl) -> tuple[HostTransport, ExperimentControl]:
        return host, control        # mypy checks that they implement the protocols
