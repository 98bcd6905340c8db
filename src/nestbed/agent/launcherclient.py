"""The host agent's side of the launcher (launcher.py): the process that enters process nodes' namespaces.

The agent and its launcher talk JSON datagrams over a SOCK_SEQPACKET pair: a node table first (in parts of a
datagram each: 10,000 nodes are ~1.5 MB, a datagram at most the socket's send buffer), then `launch`
requests (argv, env and three fds each, answered with the child's pid, then its exit) and batches (`run_batch`:
many programs started at once, their output read by the launcher and sent back in [index, field, value] entries)
and node-set changes (`change_nodes`: the host agent's reload; each added node's namespace fd passed along).
"""
from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

from nestbed import paths, procs
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import NodePlan
from nestbed.realize.state import ExperimentState


class Launcher(Protocol):
    """What the agent needs of a launcher (LauncherClient; a fake in tests)."""

    def launch(self, node: str, argv: list[str], env: dict[str, str], fds: tuple[int, int, int]) -> Launched: ...

    def run_batch(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]: ...

    def change_nodes(self, added: list[NodePlan], removed: list[str]) -> None: ...


class Launched:
    """A child started by the launcher: its pid, and its exit code once the launcher reports it."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.error: str | None = None
        self.rc: int | None = None
        self.started = threading.Event()
        self.done = threading.Event()


LAUNCHER_MESSAGE_BYTES = 48 * 1024
BATCH_GRACE_SECONDS = 10.0     # after a batch's timeout, how long the launcher has to send the results
CHANGE_SECONDS = 10.0          # for the launcher to acknowledge a node-set change
FDS_PER_CHANGE = 16            # launcher.MAX_FDS: namespace fds one message carries


def _parts(items: list[Any], budget: int) -> list[list[Any]]:
    """items in consecutive lists of about `budget` bytes of JSON each (at least one list)."""
    parts: list[list[Any]] = [[]]
    size = 0
    for item in items:
        length = len(json.dumps(item, separators=(",", ":")))
        if parts[-1] and size + length > budget:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += length
    return parts


def table_messages(hosts: str, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """The launcher's node table as datagrams: {"nodes": {name: node, …}, "more": true} …, then the last part
    with the hosts file's path (launcher.receive_table puts them together)."""
    parts = _parts(rows, LAUNCHER_MESSAGE_BYTES)
    messages: list[dict[str, Any]] = [{"nodes": dict(part), "more": True} for part in parts[:-1]]
    messages.append({"hosts": hosts, "nodes": dict(parts[-1])})
    return messages


def node_rows(state: ExperimentState, nodes: list[NodePlan]) -> list[list[Any]]:
    """The launcher's table rows of `nodes`: [name, {netns, identity, mailbox}] (the mailbox when it exists)."""
    from nestbed.realize import identity
    # Strings and one listing, not a Path and a stat per node: the agent answers `up` after this.
    identities, mailboxes = str(identity.identity_root(state.directory)), paths.mailbox_root(state.directory)
    try:
        with_mailbox = {entry.name for entry in os.scandir(mailboxes) if entry.is_dir()}
    except FileNotFoundError:
        with_mailbox = set()
    return [[n.name, {"netns": n.netns, "identity": f"{identities}/{n.name}",
                      "mailbox": f"{mailboxes}/{n.name}" if n.name in with_mailbox else None}] for n in nodes]


class BatchResults:
    """A run_many's results as the launcher sends them: [index, field, value] entries, long texts in pieces."""

    def __init__(self, count: int) -> None:
        self.results: list[dict[str, Any]] = [{"rc": None, "out": "", "err": ""} for _ in range(count)]
        self.done = threading.Event()

    def add(self, entries: list[list[Any]]) -> None:
        """Raises ValueError on an entry that is not [index, field, value] of this batch (nothing added of it)."""
        for entry in entries:
            try:
                index, field, value = entry
                result = self.results[index]
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"not a result entry: {str(entry)[:80]}") from None
            if field in ("out", "err") and isinstance(value, str):
                result[field] += value
            elif field == "rc" and isinstance(value, int):
                result[field] = value
            elif field == "timeout":
                result[field] = bool(value)
            else:
                raise ValueError(f"not a result entry: {str(entry)[:80]}")

    def fail(self, why: str) -> None:
        """The batch ends: those without an exit code get 126 and `why`."""
        for result in self.results:
            if result["rc"] is None:
                result.update(rc=126, err=result["err"] + f"nestbed: {why}\n")
        self.done.set()


class SpawnedLauncher:
    """The launcher's process, journaled, waiting for its node table. The host agent starts it before `up` has
    realized the experiment, so the interpreter's start (~25 ms) is off the path `up` waits on."""

    def __init__(self, state: ExperimentState) -> None:
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
                               "start": procs.start_time(self.process.pid)}])


class LauncherClient:
    """The agent's side of the launcher (launcher.py)."""

    def __init__(self, state: ExperimentState, nodes: list[NodePlan], spawned: SpawnedLauncher | None = None):
        """Start the launcher (or take one started ahead, `spawned`), send it the node table, wait until ready."""
        spawned = spawned or SpawnedLauncher(state)
        self.state = state
        self.sock, self.process = spawned.sock, spawned.process
        for message in table_messages(str(state.hosts_path), node_rows(state, nodes)):
            self._send(message, [])
        answer = json.loads(self.sock.recv(1 << 20) or b"{}")
        if not answer.get("ready"):
            raise ExperimentError(f"launcher: {answer.get('error', 'did not start')}")
        self._lock = threading.Lock()
        self._next = 0
        self._by_id: dict[int, Launched] = {}
        self._by_pid: dict[int, Launched] = {}
        self._early_exits: dict[int, int] = {}
        self._batches: dict[int, BatchResults] = {}
        self._changes: dict[int, tuple[threading.Event, dict[str, Any]]] = {}
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
        if timeout is None:
            batch.done.wait()           # as long as the programs run: a launcher that dies ends it (_read)
        elif not batch.done.wait(timeout + BATCH_GRACE_SECONDS):
            with self._lock:
                self._batches.pop(key, None)
            batch.fail(f"the launcher did not answer within {BATCH_GRACE_SECONDS:g} s of the batch's timeout "
                       f"({timeout:g} s)")
        return batch.results

    def change_nodes(self, added: list[NodePlan], removed: list[str]) -> None:
        """The launcher forgets `removed` and learns `added` (the agent opens their namespaces: the launcher left
        the host's mount namespace), in messages of FDS_PER_CHANGE nodes each, all acknowledged before this
        returns. ExperimentError when the launcher refused one, or did not answer."""
        from nestbed.realize import namespaces
        rows = node_rows(self.state, added)
        parts = [rows[k:k + FDS_PER_CHANGE] for k in range(0, len(rows), FDS_PER_CHANGE)] or [[]]
        waiting: list[tuple[threading.Event, dict[str, Any]]] = []
        for k, part in enumerate(parts):
            fds: list[int] = []
            try:
                for name, node in part:
                    try:
                        fds.append(os.open(namespaces.netns_path(node["netns"]), os.O_RDONLY | os.O_CLOEXEC))
                    except OSError as error:
                        raise ExperimentError(f"launcher: cannot open the namespace of node {name}: "
                                              f"{error.strerror or error}") from None
                ack: tuple[threading.Event, dict[str, Any]] = (threading.Event(), {})
                with self._lock:
                    self._next += 1
                    self._changes[self._next] = ack
                    try:
                        self._send({"id": self._next, "add": part, "remove": removed if k == 0 else []}, fds)
                    except OSError as error:
                        del self._changes[self._next]
                        raise ExperimentError(f"launcher: {error.strerror or error}") from None
                waiting.append(ack)
            finally:
                for fd in fds:
                    os.close(fd)
        for event, answer in waiting:
            if not event.wait(CHANGE_SECONDS):
                raise ExperimentError(f"launcher: no answer to a node-set change within {CHANGE_SECONDS:g} s")
            if "error" in answer:
                raise ExperimentError(f"launcher: {answer['error']}")

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
                    for event, answer in self._changes.values():
                        answer["error"] = "the launcher went away"
                        event.set()
                return
            try:
                self._handle(json.loads(data))
            except (ValueError, KeyError, TypeError, AttributeError) as error:     # a bad message: not the end
                print(f"launcher: ignored a malformed message ({error}): {data[:120]!r}", file=sys.stderr,
                      flush=True)

    def _handle(self, message: dict[str, Any]) -> None:
        """One message of the launcher (KeyError, TypeError, ValueError: not one it sends)."""
        with self._lock:
            if "r" in message or "done" in message:
                batch = self._batches.get(message["id"])
                if batch is None:
                    return            # one run_batch gave up on
                try:
                    batch.add(message.get("r") or [])
                finally:             # a bad entry in the last message still ends the batch
                    if message.get("done"):
                        del self._batches[message["id"]]
                        batch.fail("the launcher sent no exit code")     # for any left without one
                return
            if message.get("id") in self._changes:       # a node-set change acknowledged (or refused)
                event, answer = self._changes.pop(message["id"])
                answer.update(message)
                event.set()
                return
            if "exit" in message:
                exited = self._by_pid.pop(message["exit"], None)
                if exited is None:
                    return
                exited.rc = int(message["rc"])
                exited.done.set()
                return
            launched = self._by_id[message["id"]]
            if "error" in message:
                del self._by_id[message["id"]]
                launched.error = str(message["error"])
                launched.started.set()
                launched.done.set()
                return
            pid = int(message["pid"])
            del self._by_id[message["id"]]
            launched.pid = pid
            self._by_pid[pid] = launched
            launched.started.set()
