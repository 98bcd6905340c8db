"""The host agent's launcher: a small process that forks programs into process nodes, fast.

Why a process of its own: forking into a node costs mostly (1) copying the mount table on unshare(CLONE_NEWNS) —
with a thousand nodes the host has a thousand netns mounts under /run/netns, ~1.2 ms per copy — and (2) forking
a big Python process. The launcher holds an open fd of every node's network namespace, then leaves the host's
mount namespace for a private (slave) one without /run/netns: its children copy ~20 mounts, not a thousand. It
imports little, so it forks cheaply. Children enter their node with processes.enter_node (netns by fd).

Protocol with the agent, over a SOCK_SEQPACKET socketpair (one JSON object per message):
    agent → {"id": K, "node": N, "argv": [...], "env": {...}} + SCM_RIGHTS [stdin, stdout, stderr]
    launcher → {"id": K, "pid": P} or {"id": K, "error": "..."}; later {"exit": P, "rc": RC}
Every child starts a session of its own (its pid is its process group). The launcher exits when the agent's end
closes (the agent died or stopped); its children live on (teardown finds them by namespace).

Entering a node the first time (enter_node: unshare, bind mounts, a sysfs of the node) costs ~2 ms of kernel
work; the launcher keeps that node's mount and UTS namespaces (fds of a first child's, taken while it waits on a
pipe), so later children only setns into net, mnt and uts — what lets one event reach 1000 nodes in well under
a second. Idle, the launcher warms the nodes not entered yet, a few at a time.

    python -S -m nestbed.agent.launcher EXPERIMENT FD   (FD: the launcher's end; first message: node table)
"""
from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys

MAX_MESSAGE = 1 << 20


def _receive(sock: socket.socket) -> tuple[dict, list[int]] | None:
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(16 * fds.itemsize))
    if not data:
        return None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - (len(payload) % fds.itemsize)])
    return json.loads(data), list(fds)


def _send(sock: socket.socket, message: dict) -> None:
    sock.send(json.dumps(message, separators=(",", ":")).encode())


def serve(sock: socket.socket) -> None:
    from nestbed.realize import processes, syscalls
    first = _receive(sock)
    if first is None:
        return
    table, _ = first
    nodes: dict[str, dict] = table["nodes"]          # name → {netns, identity, mailbox}
    hosts = table["hosts"]
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

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    import select
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    entered = Entered()
    cold = list(nodes)                              # nodes whose namespaces are not kept yet, warmed when idle
    while True:
        try:
            events = poller.poll(0 if cold else None)
        except InterruptedError:
            continue
        if not events:
            while cold and len(entered.kept) < len(nodes):
                name = cold.pop()
                if name not in entered.kept:
                    entered.warm(name, nodes[name], netns_fds[name], hosts, processes)
                    break
            _reap(sock, entered)
            continue
        for fd, _ in events:
            if fd == wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                _reap(sock, entered)
                continue
            received = _receive(sock)
            if received is None:
                return
            request, fds = received
            try:
                _launch(sock, request, fds, nodes, netns_fds, hosts, processes, entered)
            finally:
                for passed in fds:
                    os.close(passed)
        _reap(sock, entered)


class Entered:
    """Each node's mount and UTS namespaces as a first child made them (fds), and the warm-up children's pids."""

    def __init__(self) -> None:
        self.kept: dict[str, tuple[int, int]] = {}
        self.warming: set[int] = set()

    def enter(self, name: str, node: dict, netns_fd: int, hosts: str, processes: object) -> tuple[int, int] | None:
        """In the child: enter the node; returns the pipe ends to hand over on when this is a first entry."""
        from nestbed.realize import syscalls
        kept = self.kept.get(name)
        if kept is not None:
            syscalls.setns(netns_fd, syscalls.CLONE_NEWNET)
            syscalls.setns(kept[0], syscalls.CLONE_NEWNS)
            syscalls.setns(kept[1], syscalls.CLONE_NEWUTS)
            return None
        processes.enter_node(node["netns"], hosts, name, node.get("identity"),   # type: ignore[attr-defined]
                             node.get("mailbox"), netns_fd)
        return None

    def keep(self, name: str, pid: int, entered_r: int, go_w: int) -> None:
        """In the launcher: wait until the first child of a node has entered it, keep its namespaces, let it go."""
        try:
            if os.read(entered_r, 1) == b"x":
                mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
                uts = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
                self.kept[name] = (mnt, uts)
        except OSError:
            pass            # the child failed to enter: the next one tries again
        finally:
            os.close(entered_r)
            try:
                os.write(go_w, b"x")
            except OSError:
                pass
            os.close(go_w)

    def warm(self, name: str, node: dict, netns_fd: int, hosts: str, processes: object) -> None:
        """Enter a node in a child that only hands its namespaces over, then exits."""
        pipes = _first_entry_pipes()
        pid = os.fork()
        if pid == 0:
            try:
                self.enter(name, node, netns_fd, hosts, processes)
                _handshake(pipes)
            finally:
                os._exit(0)
        self.warming.add(pid)
        os.close(pipes[1])
        os.close(pipes[2])
        self.keep(name, pid, pipes[0], pipes[3])


def _first_entry_pipes() -> tuple[int, int, int, int]:
    entered_r, entered_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    return entered_r, entered_w, go_r, go_w


def _handshake(pipes: tuple[int, int, int, int]) -> None:
    """In a first child: tell the launcher it is inside the node, wait until it has taken the namespaces."""
    os.write(pipes[1], b"x")
    os.read(pipes[2], 1)


def _launch(sock: socket.socket, request: dict, fds: list[int], nodes: dict, netns_fds: dict, hosts: str,
            processes: object, entered: Entered) -> None:
    name = request["node"]
    node = nodes.get(name)
    if node is None or len(fds) != 3:
        _send(sock, {"id": request["id"], "error": f"no node {name!r}" if node is None else "3 fds expected"})
        return
    argv = request["argv"]
    env = request["env"]
    first = name not in entered.kept
    pipes = _first_entry_pipes() if first else None
    pid = os.fork()
    if pid == 0:
        try:
            for target, source in enumerate(fds):
                os.dup2(source, target)
            os.setsid()
            entered.enter(name, node, netns_fds[name], hosts, processes)
            if pipes is not None:
                _handshake(pipes)
            os.chdir(request.get("cwd") or "/")
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.execvpe(argv[0], argv, env)
        except FileNotFoundError:
            os.write(2, f"nestbed: {argv[0]}: command not found in node {name}\n".encode())
            os._exit(127)
        except BaseException as error:
            try:
                os.write(2, f"nestbed: cannot start {argv[0]} in node {name}: {error}\n".encode())
            finally:
                os._exit(126)
        os._exit(126)
    if pipes is not None:
        os.close(pipes[1])
        os.close(pipes[2])
        entered.keep(name, pid, pipes[0], pipes[3])
    _send(sock, {"id": request["id"], "pid": pid})


def _reap(sock: socket.socket, entered: Entered) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in entered.warming:       # a warm-up child: the agent never heard of it
            entered.warming.discard(pid)
            continue
        _send(sock, {"exit": pid, "rc": os.waitstatus_to_exitcode(status)})


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
