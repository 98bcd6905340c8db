"""The first program every VM runs: configure the guest, say ready, serve the controller; the rest on demand.
(Longer than our other modules on purpose: every file a booting guest imports costs it CPU time under emulation.)

    python -S -c 'import sys; from nestbed.agent.guestboot import main; sys.exit(main())' \
        --config /var/lib/nestbed/EXP/vms/VM/guest.json

Under software emulation (TCG) each module a guest imports costs tens to hundreds of milliseconds of CPU, and ten
VMs booting together share two cores. So this module imports only what the interpreter has built in (_socket, _json,
_thread, os) and two nestbed modules that import nothing more (guestproto, guestsys). For a qemu node the host
compiled the whole configuration ahead (realize/bootconfig.py): rtnetlink messages numbered against the ifindexes
its NICs get, the identity directory, the mailbox, the start commands. This agent checks the NICs are where the host
expected (by MAC), sends the batch, copies files, starts the commands and is ready in well under a second of guest
time. A vhost (namespaces, bridges inside the VM), or a guest whose NICs are not where expected, is configured by
the full agent (agent/guest.py) instead.

Every connection starts with a challenge the client answers with the VM's own credential (nestbed.guestproto;
the credential comes from qemu's fw_cfg).
Served here: `ping` (ready?) and, for a qemu node configured here, `counters` (from /sys) and `mailbox` (raw lines,
which the host agent parses as it does its own nodes'). Every other request (exec, shell, link, shutdown) goes to
the full agent, imported on first use and then kept.
"""
from __future__ import annotations

import _json
import _signal  # type: ignore[import-not-found]  # built in, and typeshed has no stub for it
import _thread
import os
import sys
import time
from _operator import _compare_digest
from _socket import (
    AF_INET,
    AF_NETLINK,
    MSG_PEEK,
    SO_REUSEADDR,
    SOCK_RAW,
    SOCK_STREAM,
    SOL_SOCKET,
)
from _socket import socket as raw_socket

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.agent.guestsys import follow, nics_by_mac, node_environment
from nestbed.guestproto import (
    BOOT_PROGRAM,
    CHALLENGE_BYTES,
    CREDENTIAL_SYSFS,
    FAILED_LINE,
    HOSTS,
    READY_LINE,
    REFUSED,
    answer,
)
from nestbed.guestproto import MAILBOX_MOUNTPOINT as MAILBOX

NLMSG_ERROR = 2


# ---------------------------------------------------------------------------------------------------- JSON
# The json package imports re and compiles regular expressions (~0.2 s of guest CPU): its C parts suffice.

class _ScanContext:
    strict = True
    object_hook = object_pairs_hook = parse_constant = None
    parse_float, parse_int = float, int


_scan = _json.make_scanner(_ScanContext())     # type: ignore[arg-type]  # it reads only these attributes


def _unserializable(value: Any) -> Any:
    raise TypeError(f"{value.__class__.__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _unserializable, _json.encode_basestring_ascii, None, ":", ",", False, False, True)


def loads(text: str | bytes) -> Any:
    text = (text.decode() if isinstance(text, bytes) else text).strip()
    try:
        value, end = _scan(text, 0)     # a malformed value raises json.JSONDecodeError (a ValueError)
    except StopIteration as missing:    # ... and a missing one this
        raise ValueError(f"expected a JSON value at {missing.value}") from None
    if end != len(text):
        raise ValueError(f"extra data after JSON at {end}")
    return value


def dumps(value: Any) -> str:
    return "".join(_encode(value, 0))


# ---------------------------------------------------------------------------------------------------- the node

def send_netlink(messages: list[tuple[bytes, str]], where: str) -> None:
    """Send numbered, ack-requesting rtnetlink messages (netlink.acked) at once; raise on the first refusal.

    Acks are read as nestbed.netlinkwire.acks reads them, but without struct: its docstring says why."""
    sock = raw_socket(AF_NETLINK, SOCK_RAW, 0)
    try:
        sock.bind((0, 0))
        sock.send(b"".join(message for message, _ in messages))
        pending, failure = len(messages), None
        while pending:
            data, offset = sock.recv(1 << 16), 0
            while offset + 16 <= len(data):
                length = int.from_bytes(data[offset:offset + 4], "little")
                kind = int.from_bytes(data[offset + 4:offset + 6], "little")
                seq = int.from_bytes(data[offset + 8:offset + 12], "little")
                if kind == NLMSG_ERROR and 0 < seq <= len(messages):
                    pending -= 1
                    code = int.from_bytes(data[offset + 16:offset + 20], "little", signed=True)
                    if code and failure is None:
                        failure = f"{where}: {messages[seq - 1][1]} failed: {os.strerror(-code)}"
                if length == 0:
                    break
                offset += (length + 3) & ~3
        if failure:
            raise RuntimeError(failure)
    finally:
        sock.close()


def copy_tree(source: str, target: str) -> None:
    """cp -a for the identity files (shutil's import costs more than this whole copy)."""
    os.makedirs(target, exist_ok=True)
    for entry in os.scandir(source):
        destination = f"{target}/{entry.name}"
        if entry.is_symlink():
            if os.path.lexists(destination):
                os.unlink(destination)
            os.symlink(os.readlink(entry.path), destination)
        elif entry.is_dir():
            copy_tree(entry.path, destination)
            os.chmod(destination, entry.stat().st_mode & 0o7777)
        else:
            with open(entry.path, "rb") as src, open(destination, "wb") as dst:
                dst.write(src.read())
            os.chmod(destination, entry.stat().st_mode & 0o7777)


def start_command(command: str, log_path: str, env: dict[str, str]) -> int:
    """`sh -c command` in a session of its own, output appended to log_path; reaped by a thread."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            for number in (_signal.SIGPIPE, _signal.SIGXFSZ):     # Python ignores them; programs must not
                _signal.signal(number, _signal.SIG_DFL)
            os.execve("/bin/sh", ["/bin/sh", "-c", command], env)
        finally:
            os._exit(127)
    os.close(log)
    _thread.start_new_thread(os.waitpid, (pid, 0))
    return pid


COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")


def interface_counters(node: str) -> list[dict[str, Any]]:
    """A qemu node's interface counters from /sys (the same rows as agent/sampler.py's netlink sampler)."""
    rows = []
    for name in sorted(os.listdir("/sys/class/net")):
        if name == "lo":
            continue
        values = [_read(f"/sys/class/net/{name}/statistics/{key}") for key in COUNTERS]
        if None not in values:
            rows.append({"node": node, "iface": name, **{k: int(v) for k, v in zip(COUNTERS, values)}})  # type: ignore[arg-type]
    return rows


class Mailbox:
    """A qemu node's mailbox: lines appended to the events file (inotify) or written to the FIFO, kept in order
    and numbered, streamed raw to the host agent (agent/mailbox.py parses them there, as for its own nodes)."""

    IN_MODIFY, IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO = 0x2, 0x8, 0x100, 0x80
    MAX_LINE = 1 << 20

    def __init__(self, node: str, directory: str, events: str, fifo: str):
        import threading
        self.node, self.directory, self.events, self.fifo = node, directory, events, fifo
        self.messages: list[dict[str, Any]] = []      # {"seq", "node", "line"}, seq from 1
        self.changed = threading.Condition()
        _thread.start_new_thread(self._watch_events, ())
        _thread.start_new_thread(self._watch_fifo, ())

    def stream(self, conn: raw_socket, since: int) -> None:
        follow(self.changed, self.messages, since, lambda message: _send(conn, message))

    def _add(self, buffer: bytes) -> bytes:
        """Keep the complete lines of buffer; return the unfinished rest."""
        *complete, rest = buffer.split(b"\n")
        if len(rest) > self.MAX_LINE:
            complete, rest = [*complete, rest], b""
        complete = [line for line in complete if line.strip()]
        if complete:
            with self.changed:
                for line in complete:
                    self.messages.append({"seq": len(self.messages) + 1, "node": self.node,
                                          "line": line.decode("utf-8", errors="replace")})
                self.changed.notify_all()
        return rest

    def _watch_events(self) -> None:
        import ctypes  # inotify: Python has no binding of its own; asyncinotify would import asyncio
        libc = ctypes.CDLL(None, use_errno=True)
        watch = libc.inotify_init1(os.O_CLOEXEC)
        mask = self.IN_MODIFY | self.IN_CLOSE_WRITE | self.IN_CREATE | self.IN_MOVED_TO
        if watch < 0 or libc.inotify_add_watch(watch, self.directory.encode(), mask) < 0:
            print(f"nestbed-agent: cannot watch {self.directory} (inotify: {os.strerror(ctypes.get_errno())})",
                  flush=True)
            return
        path, offset, rest = f"{self.directory}/{self.events}", 0, b""
        while True:
            try:
                with open(path, "rb") as handle:
                    if os.fstat(handle.fileno()).st_size < offset:
                        offset, rest = 0, b""          # truncated or replaced: read it again from the start
                    handle.seek(offset)
                    data = handle.read()
                offset += len(data)
                rest = self._add(rest + data)
            except OSError:
                pass
            os.read(watch, 4096)                        # until the next change in the directory

    def _watch_fifo(self) -> None:
        fd = os.open(f"{self.directory}/{self.fifo}", os.O_RDWR)   # read-write: no EOF when a writer closes
        rest = b""
        while True:
            rest = self._add(rest + os.read(fd, 65536))


# ---------------------------------------------------------------------------------------------------- the agent

class BootAgent:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.name: str = config["vm"]["name"]
        self.boot: dict[str, Any] | None = config.get("boot")
        # the VM's own credential, from qemu's fw_cfg (never in the tree the host shares with the guest)
        with open(config.get("credential_file") or CREDENTIAL_SYSFS) as handle:
            self.credential = handle.read().strip()
        self.ready = False
        self.failed: str | None = None
        self.started = time.monotonic()
        self.light = False          # configured here: counters and mailbox are served without the full agent
        self._full: Any = None
        self._full_lock = _thread.allocate_lock()
        self._mailbox: Mailbox | None = None
        self._mailbox_lock = _thread.allocate_lock()     # not _full_lock: that one is held through a slow import

    def configure(self) -> None:
        boot = self.boot
        found = nics_by_mac() if boot else {}
        if boot is None or any(found.get(mac) != index for mac, index in boot["nics"]):
            self.full_agent(configure=True)      # a vhost, or NICs not where the host expected
        else:
            self._configure_qemu_node(boot)
            self.light = True
        self.ready = True

    def _configure_qemu_node(self, boot: dict[str, Any]) -> None:
        try:           # tunnel modules would put fallback devices in every new namespace: keep them in this one
            with open("/proc/sys/net/core/fb_tunnels_only_for_init_net", "w") as knob:
                knob.write("2")
        except OSError:
            pass
        send_netlink([(bytes.fromhex(message), purpose) for message, purpose in boot["netlink"]], f"VM {self.name}")
        if boot["forwarding"]:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as knob:
                knob.write("1")
        hosts = _read(self.config.get("hosts_path") or "") or boot["hosts_file"]
        for path in (HOSTS, "/etc/hosts"):
            with open(path, "w") as handle:
                handle.write(hosts)
        if os.path.isdir(boot["identity"]):
            copy_tree(boot["identity"], "/var/emulab")
        os.makedirs(MAILBOX, exist_ok=True)
        os.close(os.open(f"{MAILBOX}/{boot['mailbox_events']}", os.O_WRONLY | os.O_CREAT, 0o666))
        try:
            os.mkfifo(f"{MAILBOX}/{boot['mailbox_fifo']}", 0o622)
        except FileExistsError:
            pass
        env = node_environment(boot["experiment"], boot["node"])
        for command in boot["commands"]:
            start_command(command, f"/run/nestbed-{boot['node']}.log", env)

    def mailbox(self) -> Mailbox:
        with self._mailbox_lock:
            if self._mailbox is None:
                assert self.boot is not None
                self._mailbox = Mailbox(self.boot["node"], MAILBOX, self.boot["mailbox_events"],
                                        self.boot["mailbox_fifo"])
            return self._mailbox

    def full_agent(self, configure: bool = False) -> Any:
        """The full agent (agent/guest.py), made on first use; configure=True lets it configure the guest."""
        with self._full_lock:
            if self._full is None:
                from nestbed.agent.guest import Guest
                guest = Guest(self.config)
                if configure:
                    guest.configure()
                else:
                    guest.adopt(watch_mailboxes=not self.light)
                self._full = guest
            return self._full

    # -- serving ------------------------------------------------------------------------------------------
    def serve(self) -> None:
        listener = raw_socket(AF_INET, SOCK_STREAM, 0)
        listener.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        listener.bind((self.config["vm"]["control_address"].split("/")[0], self.config["control"]["port"]))
        listener.listen(128)
        while True:
            fd, _ = listener._accept()    # type: ignore[attr-defined]  # _socket's own; socket.accept wraps it
            _thread.start_new_thread(self._connection, (raw_socket(AF_INET, SOCK_STREAM, 0, fd),))

    def _connection(self, conn: raw_socket) -> None:
        try:
            challenge = os.urandom(CHALLENGE_BYTES).hex()      # fresh per connection: an answer is good once
            _send(conn, {"challenge": challenge})
            hello = _receive(conn)
            if not isinstance(hello, dict) or not _compare_digest(str(hello.get("answer", "")),
                                                                  answer(self.credential, challenge)):
                _send(conn, {"error": REFUSED})
                return
            request = _receive(conn)
            if not isinstance(request, dict):
                return
            if request.get("op") == "ping":
                _send(conn, {"ok": True, "ready": self.ready, "failed": self.failed, "vm": self.name,
                             "uptime": time.monotonic() - self.started, "memory": _memory()})
                return
            if self.light and request.get("op") == "counters":
                _send(conn, {"rows": interface_counters(self.boot["node"])})      # type: ignore[index]
                return
            if self.light and request.get("op") == "mailbox":
                self.mailbox().stream(conn, int(request.get("since") or 0))
                return
            import socket
            guest = self.full_agent()
            handover = socket.socket(fileno=conn.detach())
            from nestbed.channel import Connection
            guest.dispatch(Connection(handover), request)
            handover.close()
        except (OSError, ValueError):
            pass
        finally:
            if conn.fileno() != -1:
                conn.close()


def _receive(conn: raw_socket) -> Any:
    """One JSON line, consuming exactly that line (the rest stays in the socket for the full agent)."""
    data = b""
    while True:
        peek = conn.recv(1 << 16, MSG_PEEK)
        if not peek:
            return None
        end = peek.find(b"\n")
        if end >= 0:
            return loads(data + conn.recv(end + 1))
        data += conn.recv(len(peek))


def _send(conn: raw_socket, message: dict[str, Any]) -> None:
    conn.sendall((dumps(message) + "\n").encode())


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _uptime() -> str:
    return (_read("/proc/uptime") or "0").split()[0]


def _memory() -> dict[str, int]:
    values = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable", "MemFree"):
            values[key] = int(value.split()[0]) * 1024
    return values


def _reap_forever(child: int) -> None:
    """As PID 1: reap orphans; when the agent itself dies, power off (the VM has no purpose without it)."""
    while True:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            break
    os.sync()
    os.execv("/.nestbed/busybox", ["poweroff", "-f"])


def main() -> int:
    # argv: --config PATH (no argparse: every import costs at boot under software emulation)
    args = sys.argv[1:]
    if len(args) != 2 or args[0] != "--config":
        print(f"usage: python -S -c '{BOOT_PROGRAM}' --config PATH", file=sys.stderr)
        return 2
    if os.getpid() == 1:           # init hands over to us: keep PID 1 a reaper, run the agent in a child
        child = os.fork()
        if child:
            _reap_forever(child)
            return 0
    with open(args[1]) as handle:
        agent = BootAgent(loads(handle.read()))
    print(f"nestbed-agent: {agent.name} configuring (guest uptime {_uptime()} s)", flush=True)
    try:
        agent.configure()
        print(READY_LINE.format(name=agent.name) + f" (guest uptime {_uptime()} s)", flush=True)
    except Exception as error:            # reported to the controller, which names the console log
        import traceback
        agent.failed = f"{error.__class__.__name__}: {error}"
        traceback.print_exc()
        print(FAILED_LINE.format(name=agent.name) + f" {agent.failed}", flush=True)
    agent.serve()
    return 0
