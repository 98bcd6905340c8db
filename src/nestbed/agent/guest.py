"""The guest agent: runs inside every VM (started by the initramfs with the host's Python, which the host
exports to the VM over 9p with the rest of the guest's read-only allowlist: realize/qemu/export.py).

It configures the VM from its part of the plan — a qemu node's own interfaces, addresses, routes and shaping
(the guest kernel has netem), or, in a vhost, the namespaces of the process nodes it holds bridged to its NICs —
writes /etc/hosts and the identity files, starts the nodes' commands, then serves the controller's requests:
exec and shell in any node it holds, link changes, counters, mailbox lines, shutdown.

The VM runs agent/guestboot.py first: it configures a qemu node itself from what the host compiled (this module's
imports cost seconds of CPU under software emulation), answers pings, and makes a Guest on the first other request
(`adopt`); a vhost it has configured by a Guest at once (`configure`). guestboot checks each client's answer to
its challenge (the VM's own credential, nestbed.guestproto) before it hands a request over.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed import guestproto, paths
from nestbed.agent import guestsys
from nestbed.channel import Connection, decode, encode
from nestbed.plan.hostplan import HostPlan, NodePlan, VmPlan
from nestbed.realize import netlink

GUEST_STATE = "/run/nestbed"      # the guest's own state (the host's /var/lib/nestbed is read-only here)
HOSTS = guestproto.HOSTS


class Guest:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.vm = _vm_from_dict(config["vm"])
        self.ready = False
        assert self.vm.guest is not None
        self.guest: HostPlan = self.vm.guest
        self.nodes = {node.name: node for node in self.guest.nodes}
        self.sampler: Any = None
        self.sampling = threading.Lock()
        self.mail: list[dict[str, Any]] = []      # mailbox lines of this VM's nodes, for the host agent
        self.mail_ready = threading.Condition()
        self.handlers = {"exec": self._exec_op, "shell": self._shell_op, "link": self._link_op,
                         "counters": self._counters_op, "mailbox": self._mailbox_op, "shutdown": self._shutdown_op}

    # -- configuration ------------------------------------------------------------------------------------
    def configure(self) -> None:
        from nestbed.realize import syscalls
        # A /run of the guest's own (the exported tree's is empty and read-only).
        syscalls.mount("tmpfs", "/run", "tmpfs", 0)
        # Tunnel modules would put fallback devices (sit0, tunl0 …) in every new namespace, where the plan's
        # fixed ifindexes go: keep them in the initial namespace.
        fallback = Path("/proc/sys/net/core/fb_tunnels_only_for_init_net")
        if fallback.exists():
            fallback.write_text("2")
        socket.sethostname(self.vm.name)
        by_mac = guestsys.nics_by_mac()
        ctl = by_mac.get(self.vm.control_mac)
        if ctl is None:
            raise RuntimeError(f"no NIC with the control MAC {self.vm.control_mac}")
        address, prefix = self.vm.control_address.split("/")
        _netlink_here([(netlink.link_up(1), "lo up"),
                       (netlink.set_link(ctl, name="ctl0"), "control NIC named ctl0"),
                       (netlink.address(ctl, address, int(prefix)), f"control address {address}"),
                       (netlink.quiet_ipv6(ctl), "ctl0 without IPv6 link-local"), (netlink.link_up(ctl), "ctl0 up")])
        hosts = Path(self.config.get("hosts_path", ""))      # the host's, with nicknames (read over 9p)
        Path(HOSTS).write_text(hosts.read_text() if hosts.is_file() else self.guest.hosts_file)
        # The VM is the node (a qemu node) when its plan's one node has netns "": read off the plan, not asked of
        # the kind through nestbed.kinds, whose modules import the model and embedder (seconds under emulation).
        if len(self.guest.nodes) == 1 and not self.guest.nodes[0].netns:
            self._make_own_mailbox()
            self._configure_self(by_mac)
        else:
            self._configure_vhost(by_mac)
        self.adopt()

    def adopt(self, watch_mailboxes: bool = True) -> None:
        """Take over a guest that is configured (by guestboot, or by configure): serve, watch the mailboxes
        (unless guestboot does)."""
        self.ready = True
        if watch_mailboxes:
            threading.Thread(target=self._watch_mailboxes, name="mailboxes", daemon=True).start()

    # -- mailboxes: watched here, streamed to the host agent ("mailbox" op) -------------------------------------
    def _make_own_mailbox(self) -> None:
        """A qemu node runs its programs in the VM itself: its mailbox is /var/nestbed/mailbox (the overlay)."""
        from nestbed.realize import mailboxes as mailbox
        os.makedirs(mailbox.MOUNTPOINT, exist_ok=True)
        os.close(os.open(f"{mailbox.MOUNTPOINT}/{mailbox.EVENTS}", os.O_WRONLY | os.O_CREAT, 0o666))
        try:
            os.mkfifo(f"{mailbox.MOUNTPOINT}/{mailbox.FIFO}", 0o622)
        except FileExistsError:
            pass

    def _mailbox_dir(self, node: NodePlan) -> str:
        from nestbed.realize import mailboxes as mailbox
        if not node.netns:
            return mailbox.MOUNTPOINT
        return str(paths.mailbox_dir(f"{GUEST_STATE}/{self.guest.experiment}", node.name))

    def _watch_mailboxes(self) -> None:
        from nestbed.agent import mailbox
        boxes = {node.name: self._mailbox_dir(node) for node in self.guest.nodes}
        boxes = {name: path for name, path in boxes.items() if os.path.isdir(path)}

        def deliver(node: str, kind: str, name: str, data: Any, record_kind: str | None = None) -> None:
            with self.mail_ready:
                self.mail.append({"seq": len(self.mail) + 1, "node": node, "kind": kind, "name": name, "data": data,
                                  "record_kind": record_kind})
                self.mail_ready.notify_all()
        if boxes:
            mailbox.Watcher(boxes, deliver).start()

    def _stream_mail(self, conn: Connection, since: int) -> None:
        guestsys.follow(self.mail_ready, self.mail, since, conn.send)

    def _configure_self(self, by_mac: dict[str, int]) -> None:
        """A qemu node: its NICs take the plan's names (found by MAC), then the usual per-node batch."""
        from nestbed.realize import apply, namespaces
        node = self.guest.nodes[0]
        indexes = {}
        for iface in node.interfaces:
            index = by_mac.get(iface.mac)
            if index is None:
                raise RuntimeError(f"no NIC with MAC {iface.mac} for {iface.name}")
            indexes[iface.name] = index
        # Temporary names first: the kernel may already call another NIC eth1.
        _netlink_here([(netlink.set_link(indexes[i.name], name=f"nbtmp{k}"), f"{i.name} renamed")
                       for k, i in enumerate(node.interfaces)])
        _netlink_here([(netlink.set_link(indexes[i.name], name=i.name), f"{i.name} named") for i in node.interfaces])
        here = replace(node, interfaces=[replace(i, ifindex=indexes[i.name]) for i in node.interfaces])
        if node.forwarding:
            namespaces.write_sysctl("net/ipv4/ip_forward", "1")
        apply._configure_node(here, True)
        Path("/etc/hosts").write_text(Path(HOSTS).read_text())
        self._copy_identity(node)
        for command in node.commands:
            log = open(f"/run/nestbed-{node.name}.log", "ab")
            subprocess.Popen(["/bin/sh", "-c", command], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                             env=self._environment(node), start_new_session=True)

    def _configure_vhost(self, by_mac: dict[str, int]) -> None:
        """A vhost: its process nodes' namespaces and bridges as on a host, then each NIC joins its bridge."""
        from nestbed.realize import apply, identity, namespaces
        from nestbed.realize.state import experiment
        os.environ["NESTBED_STATE_DIR"] = GUEST_STATE
        state = experiment(self.guest.experiment)
        state.directory.mkdir(parents=True, exist_ok=True)
        state.log_dir.mkdir(exist_ok=True)
        # Start commands enter their node with <state>/nodes/NODE as /var/emulab: point that at the host's files.
        host_nodes = identity.identity_root(self.config["state_dir"])
        if host_nodes.is_dir() and not (state.directory / host_nodes.name).exists():
            (state.directory / host_nodes.name).symlink_to(host_nodes)
        _in_scratch_netns(lambda: apply.realize(self.guest, state, {"netem": True, "iptables_loss": False},
                                                write_identity=False))
        for k, uplink in enumerate(self.vm.uplinks):
            index = by_mac.get(uplink.mac)
            if index is None:
                raise RuntimeError(f"no NIC with MAC {uplink.mac}")
            name = f"uplink{k}"
            fd = os.open(namespaces.netns_path(uplink.netns), os.O_RDONLY)
            try:         # moved and renamed in one step, then found by that name inside
                _netlink_here([(netlink.set_link(index, name=name, netns_fd=fd), f"NIC {uplink.mac} to its LAN")])
            finally:
                os.close(fd)
            with namespaces.entered(uplink.netns):
                _netlink_here([(netlink.set_link(0, name=name, master=uplink.master, up=True), f"{name} bridged")])
        controlled = [node for node in self.guest.nodes if node.control_address]
        if controlled:
            from nestbed.realize import control
            control.bridge_vm_control(self.vm.control_address, controlled)

    def _identity_dir(self, node: NodePlan) -> Path:
        """The host wrote every node's identity files into its state directory, which this guest sees (9p)."""
        from nestbed.realize import identity
        return identity.node_dir(self.config["state_dir"], node.name)

    def _copy_identity(self, node: NodePlan) -> None:
        """A qemu node: its /var/emulab is the VM's own (the overlay is writable)."""
        import shutil
        source = self._identity_dir(node)
        if source.is_dir():
            shutil.copytree(source, "/var/emulab", dirs_exist_ok=True)

    def _environment(self, node: NodePlan) -> dict[str, str]:
        return guestsys.node_environment(self.guest.experiment, node.name)

    def counters(self) -> list[dict[str, Any]]:
        """This VM's nodes' interface counters (the host agent asks every second)."""
        with self.sampling:
            if self.sampler is None:
                self.sampler = self._make_sampler()
            return [row.__dict__ for row in self.sampler.sample()]

    def _make_sampler(self) -> Any:
        """Counters with attack (DSCP-marked) bytes apart, as on the host (agent/attack_counters.py). nf_tables
        is a module of the guest kernel: loaded here, once, not at every boot (~0.2 s of CPU under TCG)."""
        from nestbed.agent.attack_counters import install_attack_counters
        from nestbed.agent.sampler import Sampler
        nodes = [(n.name, n.netns) for n in self.guest.nodes]
        loaded = _load_module("nf_tables")
        sampler = Sampler(nodes, attack=loaded)
        if loaded:
            try:
                install_attack_counters(nodes, sampler)
            except Exception as error:      # noqa: BLE001 — attack counters stay 0; interface counters go on
                _log(f"counters: attack counters not installed: {error!r}")
        else:
            _log("counters: no nf_tables in the guest kernel: attack counters stay 0")
        return sampler

    # -- serving ------------------------------------------------------------------------------------------
    def preexec(self, node: NodePlan) -> Any:
        """How a program enters `node`: nothing for the VM itself, the node's namespaces in a vhost."""
        if not node.netns:
            return None
        from nestbed.realize import processes

        identity_dir = str(self._identity_dir(node))
        mailbox_dir = self._mailbox_dir(node)

        def enter() -> None:
            processes.enter_node(node.netns, HOSTS, node.name, identity_dir, mailbox_dir)
        return enter

    def dispatch(self, conn: Connection, request: dict[str, Any]) -> None:
        """One request of a connection guestboot accepted (challenge answered, request read)."""
        op = request.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            conn.send({"error": f"unknown request {op!r}"})
            return
        handler(conn, request)

    def _node_of(self, conn: Connection, request: dict[str, Any]) -> NodePlan | None:
        """The request's node, or None when this VM has no such node (answered with an error)."""
        node = self.nodes.get(request.get("node", ""))
        if node is None:
            conn.send({"error": f"no node {request.get('node')!r} in VM {self.vm.name}"})
        return node

    def _exec_op(self, conn: Connection, request: dict[str, Any]) -> None:
        node = self._node_of(conn, request)
        if node is not None:
            timeout = request.get("timeout")
            self._exec(conn, node, list(request["argv"]), dict(request.get("env") or {}),
                       float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None)

    def _shell_op(self, conn: Connection, request: dict[str, Any]) -> None:
        node = self._node_of(conn, request)
        if node is not None:
            self._shell(conn, node, request.get("size"))

    def _link_op(self, conn: Connection, request: dict[str, Any]) -> None:
        """A runtime link change on a node's interfaces (nestbed link …)."""
        node = self._node_of(conn, request)
        if node is None:
            return
        from nestbed.realize import linkmember
        try:
            linkmember.apply_in_node(node, list(request.get("interfaces") or []), str(request.get("action")),
                                     request.get("shaping"))
        except Exception as error:     # netlink, unknown interface …: one line back to the controller
            conn.send({"error": f"link {request.get('action')} on {node.name}: {error}"})
            return
        conn.send({"ok": True})

    def _counters_op(self, conn: Connection, request: dict[str, Any]) -> None:
        conn.send({"rows": self.counters()})

    def _mailbox_op(self, conn: Connection, request: dict[str, Any]) -> None:
        """The host agent: every mailbox line after `since`, then as they come."""
        self._stream_mail(conn, int(request.get("since") or 0))

    def _shutdown_op(self, conn: Connection, request: dict[str, Any]) -> None:
        conn.send({"ok": True})
        threading.Thread(target=guestsys.power_off, daemon=True).start()

    def _exec(self, conn: Connection, node: NodePlan, argv: list[str], env: dict[str, str],
              timeout: float | None = None) -> None:
        """argv in the node, its output streamed; at `timeout` seconds its process group is killed and the answer
        is {"rc": -9, "timeout": true}. A controller that hangs up also ends it (nobody waits for it any more)."""
        try:
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env={**self._environment(node), **env}, preexec_fn=self.preexec(node),
                                     start_new_session=True)
        except FileNotFoundError:
            conn.send({"e": encode(f"nestbed: {argv[0]}: command not found in {node.name}\n".encode())})
            conn.send({"rc": 127})
            return
        assert child.stdout is not None and child.stderr is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        streams = {child.stdout.fileno(): "o", child.stderr.fileno(): "e"}
        timed_out, rc = False, -9
        try:
            while streams and not timed_out:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                readable, _, _ = select.select(list(streams), [], [], wait)
                for fd in readable:
                    data = os.read(fd, 65536)
                    if data:
                        conn.send({streams[fd]: encode(data)})
                    else:
                        del streams[fd]
                timed_out = not readable and deadline is not None and time.monotonic() >= deadline
            if not timed_out:      # its output ended: the program may still run (it closed its stdout)
                try:
                    rc = child.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        except OSError:            # the controller went away: nobody waits for the program any more
            _kill_group(child)
            raise
        finally:
            child.stdout.close()
            child.stderr.close()
        if timed_out:
            _kill_group(child)
            conn.send({"rc": -9, "timeout": True})
            return
        conn.send({"rc": rc})

    def _shell(self, conn: Connection, node: NodePlan, size: Any) -> None:
        import pty
        pid, master = pty.fork()
        if pid == 0:
            try:
                enter = self.preexec(node)
                if enter:
                    enter()
                env = self._environment(node)
                env["PS1"] = f"[{self.guest.experiment}:{node.name}] \\w# "
                env["TERM"] = os.environ.get("TERM", "xterm")
                for number in (signal.SIGPIPE, signal.SIGXFSZ):      # Python ignores them; a shell must not
                    signal.signal(number, signal.SIG_DFL)
                os.execve("/bin/bash", ["bash", "--norc", "-i"], env)
            finally:
                os._exit(127)
        if size:
            fcntl_winsize(master, size)
        sock = conn.sock
        buffer = b""
        try:
            while True:
                readable, _, _ = select.select([master, sock.fileno()], [], [])
                if master in readable:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    conn.send({"o": encode(data)})
                if sock.fileno() in readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        message = json.loads(line)
                        if "i" in message:
                            os.write(master, decode(message["i"]))
                        elif "size" in message:
                            fcntl_winsize(master, message["size"])
        finally:
            os.close(master)
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            try:
                conn.send({"rc": os.waitstatus_to_exitcode(status)})
            except OSError:
                pass

def _log(line: str) -> None:
    print(f"nestbed guest: {line}", file=sys.stderr, flush=True)      # the VM's console log


def _load_module(name: str) -> bool:
    """modprobe NAME with the modprobe the guest kernel calls itself (busybox's, set up by the initramfs)."""
    try:
        with open("/proc/sys/kernel/modprobe") as handle:
            modprobe = handle.read().strip() or "modprobe"
        return subprocess.run([modprobe, name], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _kill_group(child: subprocess.Popen) -> None:
    """SIGKILL a program's process group (it leads one: start_new_session) and reap it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        child.wait(5.0)
    except subprocess.TimeoutExpired:
        pass         # in uninterruptible sleep: it goes when the kernel lets it


def _netlink_here(messages: list[tuple[bytes, str]]) -> None:
    batch = netlink.Batch()
    for message, purpose in messages:
        batch.add(message, purpose)
    sock = netlink.open_socket()
    try:
        netlink.send(sock, batch, "guest")
    finally:
        sock.close()


def _in_scratch_netns(work: Any) -> None:
    """Run `work` in a thread of its own in an empty network namespace. Kernels before ~6.6 look a new link's
    requested ifindex up in the *sender's* namespace first (EEXIST when the VM's own NIC has it): from an empty
    one, the plan's fixed ifindexes are free."""
    from nestbed.realize import syscalls
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            syscalls.unshare(syscalls.CLONE_NEWNET)
            work()
            outcome.append(None)
        except BaseException as error:      # re-raised in the caller
            outcome.append(error)

    thread = threading.Thread(target=run, name="realize")
    thread.start()
    thread.join()
    if outcome[0] is not None:
        raise outcome[0]


def fcntl_winsize(fd: int, size: Any) -> None:
    import fcntl
    import struct
    import termios
    rows, cols = int(size[0]), int(size[1])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _vm_from_dict(data: dict[str, Any]) -> VmPlan:
    return HostPlan.from_dict({"experiment": "", "host": "", "switch_namespaces": [], "nodes": [], "segments": [],
                               "bridges": [], "veths": [], "hosts_file": "", "routing": "none",
                               "vms": [data]}).vms[0]
