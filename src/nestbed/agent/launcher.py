"""The host agent's launcher: a small process that starts programs in process nodes, fast.

Why a process of its own: starting programs in nodes from the agent would mean (1) copying the host's mount
table on unshare(CLONE_NEWNS) — with a thousand nodes the host has a thousand netns mounts under /run/netns —
and (2) forking a big, threaded Python process. The launcher holds an open fd of every node's network namespace,
then leaves the host's mount namespace for a private (slave) one without /run/netns (~20 mounts to copy).

It never forks to start a program. The first time a node is used (or while idle, a few nodes at a time) the
launcher itself enters it — the node's network namespace, then mount and UTS namespaces of its own with the
node's /etc/hosts, /var/emulab, mailbox and /sys (processes.enter_node) — keeps fds of those namespaces and steps
back home (setns; it is single-threaded). To start a program it steps into the node's three namespaces,
posix_spawn()s it (vfork+exec: ~0.4 ms; a fork of this process costs ~1-2 ms) and steps back.

Protocol with the agent, over a SOCK_SEQPACKET socketpair (one JSON object per message):
    agent → {"nodes": {name: {netns, identity, mailbox}, …}, "more": true} …, {"hosts": H, "nodes": {…}}
               (the node table, in parts of a datagram each); launcher → {"ready": true} or {"error": "..."}
    agent → {"id": K, "node": N, "argv": [...], "env": {...}} + SCM_RIGHTS [stdin, stdout, stderr]
    launcher → {"id": K, "pid": P} or {"id": K, "error": "..."}; later {"exit": P, "rc": RC}
    agent → {"id": K, "more": [items]} …, {"id": K, "batch": [items], "timeout": T|null}   (run_many; an item
               is {"node", "argv", "env"}; a batch comes in parts of a datagram each, the last one starts it)
    launcher → {"id": K, "r": [[index, field, value], ...]} … then {"id": K, "done": true}: each program's
               "rc", "out", "err" (text; long ones in several pieces, to be joined) and "timeout" (killed)
    agent → {"id": K, "add": [[name, node], …], "remove": [name, …]} + SCM_RIGHTS [netns fd per added node]
               (the host agent's reload: at most MAX_FDS added per message; this process has left the host's mount
               namespace, so it cannot open /run/netns itself) → {"id": K, "nodes": N} or {"id": K, "error"}.
               A removed node's fds are closed here: nothing of ours keeps its namespace alive.
A batch's programs run with pipes the launcher reads itself: one request and a few replies for a thousand
programs instead of a message with three fds and two replies each. Every child starts a session of its own (its
pid is its process group). The launcher exits when the agent's end closes (the agent died or stopped); its
children live on (teardown finds them by namespace).

    python -S -m nestbed.agent.launcher EXPERIMENT FD   (FD: the launcher's end; first messages: node table)
"""
from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 1 << 20
MAX_FDS = 16                    # per message: three of a launch, up to this many namespaces of a node-set change
WARM_STEP = 8                   # nodes prepared per idle turn (~0.3 ms each): requests wait at most a few ms
REPLY_BYTES = 48 * 1024          # batch results go back in messages of about this size (a datagram each)
TEXT_PIECE = REPLY_BYTES // 6    # characters of output per entry: at most REPLY_BYTES once JSON-escaped
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)   # Python ignores the first two; programs must not


def _receive(sock: socket.socket) -> tuple[dict, list[int]] | None:
    fds = array.array("i")
    # close-on-exec: a program gets the passed fds as its 0, 1, 2 (dup2), not as copies of its own
    data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize),
                                         socket.MSG_CMSG_CLOEXEC)
    if not data:
        return None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - (len(payload) % fds.itemsize)])
    try:
        return json.loads(data), list(fds)
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise


def _send(sock: socket.socket, message: dict) -> None:
    sock.send(json.dumps(message, separators=(",", ":")).encode())


def receive_table(sock: socket.socket) -> dict | None:
    """The node table from its parts: {"hosts", "nodes": {name → {netns, identity, mailbox}}}; None at EOF."""
    nodes: dict[str, dict] = {}
    while True:
        received = _receive(sock)
        if received is None:
            return None
        part, fds = received
        for passed in fds:          # none belong to the table
            os.close(passed)
        nodes.update(part["nodes"])
        if not part.get("more"):
            return {"hosts": part["hosts"], "nodes": nodes}


def serve(sock: socket.socket) -> None:
    from nestbed.realize import syscalls
    table = receive_table(sock)
    if table is None:
        return
    nodes: dict[str, dict] = table["nodes"]          # name → {netns, identity, mailbox}
    netns_fds = {}
    for name, node in nodes.items():
        try:
            netns_fds[name] = os.open(f"/run/netns/{node['netns']}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            _send(sock, {"error": f"cannot open the namespace of node {name}: {error.strerror}"})
            return
    # A private mount namespace without the netns mounts: children copy a small table.
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_SLAVE | syscalls.MS_REC)
    try:
        syscalls.umount("/run/netns", syscalls.MNT_DETACH)
    except OSError:
        pass
    _send(sock, {"ready": True, "nodes": len(netns_fds)})
    from nestbed.realize import processes  # after "ready": the agent does not wait for its imports (0.1 s)
    launcher = Launcher(sock, nodes, netns_fds, table["hosts"], processes, syscalls)
    launcher.loop()


class Batch:
    """One run_many: its programs' output read here, sent back when every program ended (or was killed)."""

    def __init__(self, key: int, count: int, timeout: float | None):
        self.key = key
        self.results: list[dict] = [{"rc": None, "out": [], "err": []} for _ in range(count)]
        self.fds: set[int] = set()
        self.pids: dict[int, int] = {}               # pid → index
        self.deadline = time.monotonic() + timeout if timeout else None

    def finished(self) -> bool:
        return not self.fds and not self.pids


class Launcher:
    def __init__(self, sock: socket.socket, nodes: dict, netns_fds: dict, hosts: str, processes: object,
                 syscalls: object):
        import select
        self.sock, self.nodes, self.netns_fds, self.hosts = sock, nodes, netns_fds, hosts
        self.processes, self.syscalls = processes, syscalls
        # where to step back to after starting a program inside a node
        self.home = {kind: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                     for kind in ("net", "mnt", "uts")}
        self.batches: dict[int, Batch] = {}
        self.pending: dict[int, list[dict]] = {}        # a batch's items received so far (it comes in parts)
        self.by_fd: dict[int, tuple[Batch, int, str]] = {}
        self.by_pid: dict[int, Batch] = {}
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poller = select.epoll()          # a batch adds two pipes per program: poll() would be quadratic
        self.poller.register(sock.fileno(), select.EPOLLIN)
        self.poller.register(self.wake_r, select.EPOLLIN)
        self.kept: dict[str, tuple[int, int]] = {}      # node → its mount and UTS namespaces (fds)
        self.cold = list(nodes)                     # nodes whose namespaces are not kept yet, warmed when idle

    def loop(self) -> None:
        cold = self.cold
        while True:
            try:
                events = self.poller.poll(self._wait(bool(cold)))
            except InterruptedError:
                continue
            if not events:
                for name in cold[-WARM_STEP:]:
                    if name in self.nodes and name not in self.kept:
                        try:
                            self._make_namespaces(name, self.nodes[name])
                        except OSError as error:
                            print(f"launcher: cannot prepare node {name}: {error}", file=sys.stderr, flush=True)
                del cold[-WARM_STEP:]
            for fd, _ in events:
                if fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif fd == self.sock.fileno():
                    if not self._serve_one():
                        return
                else:
                    self._read_output(fd)
            self._reap()
            self._expire()

    def _serve_one(self) -> bool:
        """One request of the agent; False when the agent's end closed. A malformed one is logged and dropped."""
        try:
            received = _receive(self.sock)
        except ValueError as error:
            print(f"launcher: ignored a message that is not JSON: {error}", file=sys.stderr, flush=True)
            return True
        if received is None:
            return False
        request, fds = received
        try:
            if "more" in request:
                self.pending.setdefault(request["id"], []).extend(request["more"])
            elif "batch" in request:
                request["batch"] = self.pending.pop(request["id"], []) + request["batch"]
                self._start_batch(request)
            elif "add" in request or "remove" in request:
                owned = list(fds)
                fds.clear()                 # kept (the namespaces' fds), not closed below
                self._change_nodes(request, owned)
            else:
                self._launch(request, fds)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            print(f"launcher: ignored a malformed request ({error!r})", file=sys.stderr, flush=True)
            key = request.get("id") if isinstance(request, dict) else None
            if isinstance(key, int) and "batch" in request:
                _send(self.sock, {"id": key, "done": True})          # the agent stops waiting for it
            elif isinstance(key, int) and "more" not in request:
                _send(self.sock, {"id": key, "error": f"malformed request ({error})"})
        finally:
            for passed in fds:
                os.close(passed)
        return True

    def _wait(self, warming: bool) -> float:
        deadlines = [b.deadline for b in self.batches.values() if b.deadline is not None]
        if deadlines:
            return max(0.0, min(deadlines) - time.monotonic())
        return 0 if warming else -1

    # -- the node set (the host agent's reload) --------------------------------------------------------------
    def _change_nodes(self, request: dict, fds: list[int]) -> None:
        """Forget the removed nodes (their fds closed), learn the added ones with the namespace fds that came
        with them, in their order. Programs already started are not touched: they run in sessions of their own."""
        added = request.get("add") or []
        if len(added) != len(fds):
            for fd in fds:
                os.close(fd)
            _send(self.sock, {"id": request["id"], "error": f"{len(added)} nodes added with {len(fds)} fds"})
            return
        for name in request.get("remove") or []:
            self._forget(str(name))
        for (name, node), fd in zip(added, fds):
            self._forget(name)               # a node of that name again: its new namespace
            self.nodes[name], self.netns_fds[name] = node, fd
            self.cold.append(name)
        _send(self.sock, {"id": request["id"], "nodes": len(self.nodes)})

    def _forget(self, name: str) -> None:
        self.nodes.pop(name, None)
        for fd in (self.netns_fds.pop(name, None), *self.kept.pop(name, ())):
            if fd is not None:
                os.close(fd)

    # -- starting programs ----------------------------------------------------------------------------------
    def start(self, name: str, argv: list[str], env: dict[str, str], fds: tuple[int, int, int]) -> int:
        """Start argv in node `name` with fds as stdin/stdout/stderr; returns its pid (a session leader)."""
        node = self.nodes.get(name)
        if node is None:
            raise LookupError(f"no node {name!r}")
        try:
            if name not in self.kept:
                self._make_namespaces(name, node)
            return self._spawn_inside(name, argv, env, fds)
        except FileNotFoundError:
            return self._failed(fds, f"nestbed: {argv[0]}: command not found in node {name}\n", 127)
        except OSError as error:
            return self._failed(fds, f"nestbed: cannot start {argv[0]} in node {name}: {error.strerror}\n", 126)

    def _make_namespaces(self, name: str, node: dict) -> None:
        """Enter the node once, here: its network namespace, then mount and UTS namespaces of its own with its
        /etc/hosts, /var/emulab, mailbox and /sys (processes.enter_node); keep them, step back home."""
        sc = self.syscalls
        try:
            self.processes.enter_node(node["netns"], self.hosts, name, node.get("identity"),  # type: ignore[attr-defined]
                                      node.get("mailbox"), self.netns_fds[name])
            mnt = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            uts = os.open("/proc/thread-self/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
            self.kept[name] = (mnt, uts)
        finally:
            self._home(sc)

    def _home(self, sc: Any) -> None:
        sc.setns(self.home["net"], sc.CLONE_NEWNET)
        sc.setns(self.home["mnt"], sc.CLONE_NEWNS)
        sc.setns(self.home["uts"], sc.CLONE_NEWUTS)

    def _spawn_inside(self, name: str, argv: list[str], env: dict[str, str], fds: tuple[int, int, int]) -> int:
        sc = self.syscalls
        mnt, uts = self.kept[name]
        path = env.get("PATH", "")
        if os.environ.get("PATH") != path:
            os.environ["PATH"] = path           # posix_spawnp searches the launcher's PATH: make it the node's
        sc.setns(self.netns_fds[name], sc.CLONE_NEWNET)   # type: ignore[attr-defined]
        try:
            sc.setns(mnt, sc.CLONE_NEWNS)                  # type: ignore[attr-defined]  # the node's / is the cwd
            sc.setns(uts, sc.CLONE_NEWUTS)                 # type: ignore[attr-defined]
            return os.posix_spawnp(argv[0], argv, env, setsid=True, setsigdef=DEFAULT_SIGNALS,
                                   file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)])
        finally:
            self._home(sc)

    def _failed(self, fds: tuple[int, int, int], message: str, rc: int) -> int:
        """A child that only says why a program could not start (on its stderr) and exits like a shell would."""
        pid = os.fork()
        if pid == 0:
            try:
                os.write(fds[2], message.encode())
            finally:
                os._exit(rc)
        return pid

    def _launch(self, request: dict, fds: list[int]) -> None:
        if len(fds) != 3:
            _send(self.sock, {"id": request["id"], "error": "3 fds expected"})
            return
        try:
            pid = self.start(request["node"], request["argv"], request["env"], (fds[0], fds[1], fds[2]))
        except (LookupError, OSError) as error:
            _send(self.sock, {"id": request["id"], "error": str(error).strip('"')})
            return
        _send(self.sock, {"id": request["id"], "pid": pid})

    # -- batches (run_many) ---------------------------------------------------------------------------------
    def _start_batch(self, request: dict) -> None:
        import select
        items = request["batch"]
        batch = Batch(request["id"], len(items), request.get("timeout"))
        self.batches[batch.key] = batch
        for index, item in enumerate(items):
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                pid = self.start(item["node"], item["argv"], item["env"], (self.devnull, out_w, err_w))
            except (LookupError, OSError, TypeError) as error:
                batch.results[index].update(rc=126, err=[f"nestbed: {str(error).strip(chr(34))}\n".encode()])
                os.close(out_r)
                os.close(err_r)
                continue
            finally:
                os.close(out_w)
                os.close(err_w)
            batch.pids[pid] = index
            self.by_pid[pid] = batch
            for fd, channel in ((out_r, "out"), (err_r, "err")):
                batch.fds.add(fd)
                self.by_fd[fd] = (batch, index, channel)
                self.poller.register(fd, select.EPOLLIN)
        self._finish_if_done(batch)

    def _read_output(self, fd: int) -> None:
        owner = self.by_fd.get(fd)
        if owner is None:
            return
        batch, index, channel = owner
        data = os.read(fd, 65536)
        if data:
            batch.results[index][channel].append(data)
        else:
            self._close_output(fd)
            self._finish_if_done(batch)

    def _close_output(self, fd: int) -> None:
        batch, _, _ = self.by_fd.pop(fd)
        batch.fds.discard(fd)
        self.poller.unregister(fd)
        os.close(fd)

    def _expire(self) -> None:
        """Batches past their timeout: kill what still runs (its process group), keep what it wrote."""
        now = time.monotonic()
        for batch in [b for b in self.batches.values() if b.deadline is not None and now >= b.deadline]:
            batch.deadline = None
            for fd in list(batch.fds):
                self._close_output(fd)
            for pid, index in batch.pids.items():
                batch.results[index]["timeout"] = True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self._finish_if_done(batch)

    def _finish_if_done(self, batch: Batch) -> None:
        if not batch.finished():
            return
        del self.batches[batch.key]
        entries: list[tuple[list, int]] = []          # (entry, its size in the reply)
        for index, result in enumerate(batch.results):
            for channel in ("out", "err"):
                text = b"".join(result[channel]).decode(errors="replace")
                for at in range(0, len(text), TEXT_PIECE):
                    piece = text[at:at + TEXT_PIECE]      # escaped, a character may take 6 bytes: measure it
                    entries.append(([index, channel, piece], len(json.dumps(piece))))
            entries.append(([index, "rc", result["rc"]], 16))
            if result.get("timeout"):
                entries.append(([index, "timeout", True], 16))
        part: list[list] = []
        size = 0
        for entry, length in entries:
            if part and size + length > REPLY_BYTES:
                _send(self.sock, {"id": batch.key, "r": part})
                part, size = [], 0
            part.append(entry)
            size += length + 16
        if part:
            _send(self.sock, {"id": batch.key, "r": part})
        _send(self.sock, {"id": batch.key, "done": True})

    # -- children that ended --------------------------------------------------------------------------------
    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rc = os.waitstatus_to_exitcode(status)
            batch = self.by_pid.pop(pid, None)
            if batch is None:
                _send(self.sock, {"exit": pid, "rc": rc})
                continue
            batch.results[batch.pids.pop(pid)]["rc"] = rc
            self._finish_if_done(batch)


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[2]))
    os.set_inheritable(sock.fileno(), False)       # not into the programs it starts
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
