"""A Kernel for unit tests: nothing touches the host; namespaces, links, addresses and processes are recorded.

Netlink batches are decoded (the messages realize really builds) and applied to the recorded namespaces with the
kernel's rules that matter here: a link's name and ifindex are unique in its namespace, a master or a configured
link must exist, deleting a namespace deletes the veths whose other end it held, a VXLAN's VNI is unique per
(sending namespace, port) and an FDB entry needs its device. `old_kernel=True` is a kernel before 6.15: a new
link's header ifindex taken in the *sending* namespace is EEXIST (realize/linksender.py). `fail_at=N` makes the Nth
operation (a namespace, a netlink message, an iptables-restore, identity files, mailboxes) fail. Every creation
is logged with the number of journal entries there were at that moment (`journal`: the experiment's Journal).
"""
from __future__ import annotations

import errno
import itertools
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestbed.realize import netlink

RTM_NEWQDISC, RTM_NEWTCLASS, RTM_NEWTFILTER = 36, 40, 44
RTM_DELLINK, RTM_DELADDR, RTM_DELROUTE, RTM_DELQDISC, RTM_DELNEIGH = 17, 21, 25, 37, 29
HOST = ""                            # the caller's own namespace


@dataclass
class Link:
    name: str
    kind: str
    master: int | None = None
    up: bool = False
    peer: tuple[str, int] | None = None     # (netns, ifindex) of a veth's other end


@dataclass
class Namespace:
    links: dict[int, Link] = field(default_factory=lambda: {1: Link("lo", "loopback")})
    addresses: set[tuple[int, str]] = field(default_factory=set)
    routes: set[tuple[str, int]] = field(default_factory=set)
    qdiscs: set[int] = field(default_factory=set)
    sysctls: dict[str, str] = field(default_factory=dict)
    fdb: set[tuple[int, str, str]] = field(default_factory=set)     # (device ifindex, mac, dst)


class FakeFailure(OSError):
    pass


class FakeKernel:
    def __init__(self, fail_at: int | None = None, features: dict[str, bool] | None = None,
                 old_kernel: bool = False):
        self.fail_at = fail_at
        self.old_kernel = old_kernel
        self.sent_from: list[tuple[str, int]] = []                  # (sending namespace, messages) per batch
        self.operations = 0
        self.feature_set = features or {"netem": True, "iptables_loss": False}
        self.namespaces: dict[str, Namespace] = {HOST: Namespace()}
        self.processes: dict[int, tuple[str | None, int]] = {}     # pid → (netns, start time)
        self.files: set[tuple[str, str]] = set()                    # ("identity" | "mailbox", root)
        self.iptables: list[tuple[str, str]] = []
        self.vnis: dict[tuple[str, int, int], tuple[str, int]] = {}   # (sending netns, port, vni) → device
        self.log: list[tuple[tuple[Any, ...], int]] = []             # (object key, journal entries then)
        self.journal: Any = None
        self._pids = itertools.count(40000)
        self._lock = threading.RLock()
        self._here = threading.local()

    # -- what the tests look at --------------------------------------------------------------------------------
    def objects(self) -> set[tuple[Any, ...]]:
        out: set[tuple[Any, ...]] = set()
        for name, ns in self.namespaces.items():
            if name != HOST:
                out.add(("netns", name))
            out |= {("link", name, link.name) for i, link in ns.links.items() if i != 1}
            out |= {("address", name, ns.links[i].name, a) for i, a in ns.addresses}
        out |= {("process", pid) for pid in self.processes}
        out |= set(self.files)
        return out

    def spawn(self, netns: str | None) -> int:
        """A process in a namespace (None: one that left it); returns its pid."""
        pid = next(self._pids)
        self.processes[pid] = (netns, pid * 7)
        return pid

    def _step(self, what: str) -> None:
        self.operations += 1
        if self.fail_at is not None and self.operations == self.fail_at:
            raise FakeFailure(errno.EIO, f"fake failure at operation {self.operations} ({what})")

    def _created(self, *key: Any) -> None:
        self.log.append((key, len(self.journal.entries()) if self.journal is not None else 0))

    # -- Kernel ----------------------------------------------------------------------------------------------
    def features(self, plan: Any) -> dict[str, bool]:
        return dict(self.feature_set)

    def create_namespaces(self, names: list[str], inside: Callable[[str], None],
                          advance: Callable[[int], None]) -> None:
        for name in names:
            with self._lock:
                if name in self.namespaces:
                    raise FakeFailure(errno.EEXIST, f"namespace {name} exists")
                self._step(f"netns {name}")
                self.namespaces[name] = Namespace()
                self._created("netns", name)
            self._here.netns = name
            try:
                inside(name)
            finally:
                self._here.netns = None
            advance(1)

    def write_sysctl(self, path: str, value: str, if_present: bool = False) -> None:
        netns = getattr(self._here, "netns", None)
        assert netns is not None, "a sysctl written outside a namespace"
        self.namespaces[netns].sysctls[path] = value

    def host_sysctl(self, path: str) -> str | None:
        return "0"

    def set_sysctls(self, netns: str, values: dict[str, str]) -> None:
        with self._lock:
            if netns not in self.namespaces:
                raise FakeFailure(errno.ENOENT, f"no namespace {netns}")
            self._step(f"sysctls in {netns}")
            self.namespaces[netns].sysctls.update(values)

    def send(self, netns: str, batch: netlink.Batch, where: str) -> None:
        with self._lock:
            if netns not in self.namespaces:
                raise FakeFailure(errno.ENOENT, f"{where}: no namespace {netns}")
            for message, purpose in zip(batch.messages, batch.purposes):
                self._apply(netns, message, {}, f"{where}: {purpose}")

    def send_with_namespaces(self, names: list[str], build: Callable[[dict[str, int]], netlink.Batch],
                             where: str, inside: str = "") -> int:
        with self._lock:
            for name in [*names, inside]:
                if name not in self.namespaces:
                    raise FakeFailure(errno.ENOENT, f"no namespace {name}")
            fds = {name: 1000 + k for k, name in enumerate(names)}
            batch = build(fds)
            by_fd = {fd: name for name, fd in fds.items()}
            self.sent_from.append((inside, len(batch)))
            for index, (message, purpose) in enumerate(zip(batch.messages, batch.purposes)):
                try:
                    self._apply(inside, message, by_fd, f"{where}: {purpose}")
                except netlink.NetlinkError as error:     # as netlink.send reports it: which message
                    raise netlink.NetlinkError(str(error), error.code, index) from None
            return len(batch)

    def sender_ifindexes(self) -> set[int] | None:
        return set(self.namespaces[HOST].links) if self.old_kernel else None

    def host_link_index(self, name: str) -> int | None:
        return next((i for i, link in self.namespaces[HOST].links.items() if link.name == name), None)

    def iptables_restore(self, netns: str, rules: str) -> tuple[int, str]:
        with self._lock:
            self._step(f"iptables in {netns}")
            self.iptables.append((netns, rules))
            return 0, ""

    def iptables_save(self, netns: str) -> tuple[int, str]:
        with self._lock:
            return 0, "".join(rules for where, rules in self.iptables if where == netns)

    def write_identity(self, state: Any, plan: Any, control: Any) -> None:
        self._files(state.directory, "identity", "nodes", {"emulab": "", "claim": ""})

    def create_mailboxes(self, state_dir: Path, experiment: str, nodes: Iterable[str]) -> None:
        self._files(state_dir, "mailbox", "mailbox", {"claims": []})

    def _files(self, state_dir: Path, kind: str, root: str, extra: dict[str, Any]) -> None:
        with self._lock:
            path = str(Path(state_dir) / root)
            state_dir = Path(state_dir)
            from nestbed.realize.journal import Journal
            Journal(state_dir / "journal.jsonl").record([{"t": kind, "root": path, **extra}])
            self._step(kind)
            self.files.add((kind, path))
            self._created(kind, path)

    def remove_identity(self, entries: list[dict[str, Any]]) -> None:
        self.files -= {("identity", e["root"]) for e in entries if e["t"] == "identity"}

    def remove_mailboxes(self, entries: list[dict[str, Any]]) -> None:
        self.files -= {("mailbox", e["root"]) for e in entries if e["t"] == "mailbox"}

    def processes_in(self, names: list[str]) -> set[int]:
        return {pid for pid, (netns, _) in self.processes.items() if netns in names and netns in self.namespaces}

    def process_start_time(self, pid: int) -> int | None:
        found = self.processes.get(pid)
        return found[1] if found else None

    def kill(self, pids: list[int]) -> list[int]:
        for pid in pids:
            self.processes.pop(pid, None)
        return []

    def remove_namespace(self, name: str) -> bool:
        with self._lock:
            ns = self.namespaces.pop(name, None)
            if ns is None:
                return False
            for link in ns.links.values():       # a veth goes with either of its ends
                if link.peer is not None and link.peer[0] in self.namespaces:
                    self.namespaces[link.peer[0]].links.pop(link.peer[1], None)
            return True

    def delete_link(self, netns: str, name: str) -> None:
        ns = self.namespaces.get(netns)
        if ns is not None:
            for index in [i for i, link in ns.links.items() if link.name == name]:
                del ns.links[index]

    # -- rtnetlink, decoded ----------------------------------------------------------------------------------
    def _apply(self, context: str, message: bytes, by_fd: dict[int, str], purpose: str) -> None:
        self._step(purpose)
        _length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", message)
        body = message[16:]
        if kind == netlink.RTM_NEWLINK:
            self._link(context, body, by_fd, purpose)
        elif kind == netlink.RTM_NEWADDR:
            _family, prefix, _f, _scope, index = struct.unpack_from("=BBBBI", body)
            attrs = _attrs(body[8:])
            ns = self.namespaces[context]
            self._need(ns, index, purpose)
            address = f"{'.'.join(str(b) for b in attrs[netlink.IFA_LOCAL])}/{prefix}"
            ns.addresses.add((index, address))
            self._created("address", context, ns.links[index].name, address)
        elif kind == netlink.RTM_NEWROUTE:
            attrs = _attrs(body[12:])
            (oif,) = struct.unpack("=I", attrs[netlink.RTA_OIF])
            ns = self.namespaces[context]
            self._need(ns, oif, purpose)
            ns.routes.add((".".join(str(b) for b in attrs[netlink.RTA_DST]), oif))
        elif kind == netlink.RTM_NEWNEIGH:
            _family, index, _state, _flags, _type = struct.unpack_from("=BxxxiHBB", body)
            attrs = _attrs(body[12:])
            ns = self.namespaces[context]
            self._need(ns, index, purpose)
            mac = ":".join(f"{b:02x}" for b in attrs[netlink.NDA_LLADDR])
            ns.fdb.add((index, mac, ".".join(str(b) for b in attrs[netlink.NDA_DST])))
            self._created("fdb", context, ns.links[index].name, mac)
        elif kind == RTM_DELLINK:
            (index,) = struct.unpack_from("=i", body, 4)
            ns = self.namespaces[context]
            self._need(ns, index, purpose)
            link = ns.links.pop(index)
            ns.addresses = {(i, a) for i, a in ns.addresses if i != index}
            ns.routes = {(d, i) for d, i in ns.routes if i != index}
            ns.qdiscs.discard(index)
            ns.fdb = {entry for entry in ns.fdb if entry[0] != index}
            if link.peer is not None and link.peer[0] in self.namespaces:       # a veth goes with either end
                peer_ns = self.namespaces[link.peer[0]]
                peer_ns.links.pop(link.peer[1], None)
                peer_ns.addresses = {(i, a) for i, a in peer_ns.addresses if i != link.peer[1]}
            for other in ns.links.values():       # a bridge's ports are released
                if other.master == index:
                    other.master = None
        elif kind == RTM_DELNEIGH:
            _family, index, _state, _flags, _type = struct.unpack_from("=BxxxiHBB", body)
            attrs = _attrs(body[12:])
            ns = self.namespaces[context]
            key = (index, ":".join(f"{b:02x}" for b in attrs[netlink.NDA_LLADDR]),
                   ".".join(str(b) for b in attrs[netlink.NDA_DST]))
            if key not in ns.fdb:
                raise netlink.NetlinkError(f"{purpose} failed: No such file or directory", errno.ENOENT)
            ns.fdb.discard(key)
        elif kind == RTM_DELADDR:
            _family, prefix, _f, _scope, index = struct.unpack_from("=BBBBI", body)
            attrs = _attrs(body[8:])
            address = f"{'.'.join(str(b) for b in attrs[netlink.IFA_LOCAL])}/{prefix}"
            ns = self.namespaces[context]
            if (index, address) not in ns.addresses:
                raise netlink.NetlinkError(f"{purpose} failed: Cannot assign requested address", errno.EADDRNOTAVAIL)
            ns.addresses.discard((index, address))
        elif kind == RTM_DELROUTE:
            attrs = _attrs(body[12:])
            (oif,) = struct.unpack("=I", attrs[netlink.RTA_OIF])
            key = (".".join(str(b) for b in attrs[netlink.RTA_DST]), oif)
            ns = self.namespaces[context]
            if key not in ns.routes:
                raise netlink.NetlinkError(f"{purpose} failed: No such process", errno.ESRCH)
            ns.routes.discard(key)
        elif kind == RTM_DELQDISC:
            (index,) = struct.unpack_from("=i", body, 4)
            ns = self.namespaces[context]
            self._need(ns, index, purpose)
            if index not in ns.qdiscs:
                raise netlink.NetlinkError(f"{purpose} failed: No such file or directory", errno.ENOENT)
            ns.qdiscs.discard(index)
        elif kind in (RTM_NEWQDISC, RTM_NEWTCLASS, RTM_NEWTFILTER):
            (index,) = struct.unpack_from("=i", body, 4)
            ns = self.namespaces[context]
            self._need(ns, index, purpose)
            if kind == RTM_NEWQDISC and index not in ns.qdiscs:
                ns.qdiscs.add(index)
                self._created("qdisc", context, ns.links[index].name)
        else:
            raise AssertionError(f"the fake kernel does not know message type {kind} ({purpose})")

    def _link(self, context: str, body: bytes, by_fd: dict[int, str], purpose: str) -> None:
        _family, _type, index, flags, _change = struct.unpack_from("=BxHiII", body)
        attrs = _attrs(body[16:])
        info = _attrs(attrs[netlink.IFLA_LINKINFO]) if netlink.IFLA_LINKINFO in attrs else None
        master = struct.unpack("=I", attrs[netlink.IFLA_MASTER])[0] if netlink.IFLA_MASTER in attrs else None
        if info is None:                          # a change to a link that exists
            ns = self.namespaces[context]
            self._need(ns, index, purpose)
            if master is not None:
                self._need(ns, master, purpose)
                ns.links[index].master = master
            ns.links[index].up = ns.links[index].up or bool(flags & netlink.IFF_UP)
            return
        if self.old_kernel and index > 0 and index in self.namespaces[context].links:
            raise netlink.NetlinkError(f"{purpose} failed: File exists (ifindex {index} of the sending namespace, "
                                       f"as kernels before 6.15 check)", errno.EEXIST)
        kind = info[netlink.IFLA_INFO_KIND].rstrip(b"\0").decode()
        netns = by_fd[struct.unpack("=I", attrs[netlink.IFLA_NET_NS_FD])[0]]
        name = attrs[netlink.IFLA_IFNAME].rstrip(b"\0").decode()
        link = Link(name, kind, master, bool(flags & netlink.IFF_UP))
        if kind == "veth":
            peer_body = _attrs(info[netlink.IFLA_INFO_DATA])[netlink.VETH_INFO_PEER]
            (peer_index,) = struct.unpack_from("=i", peer_body, 4)
            peer_attrs = _attrs(peer_body[16:])
            peer_netns = by_fd[struct.unpack("=I", peer_attrs[netlink.IFLA_NET_NS_FD])[0]]
            peer_name = peer_attrs[netlink.IFLA_IFNAME].rstrip(b"\0").decode()
            self._add(peer_netns, peer_index, Link(peer_name, "veth", peer=(netns, index)), purpose)
            link.peer = (peer_netns, peer_index)
        if master is not None:
            self._need(self.namespaces[netns], master, purpose)
        if kind == "vxlan":
            self._vni(context, netns, index, _attrs(info[netlink.IFLA_INFO_DATA]), purpose)
        self._add(netns, index, link, purpose)

    def _vni(self, context: str, netns: str, index: int, data: dict[int, bytes], purpose: str) -> None:
        """A VNI is the kernel's once per UDP socket: per (sending namespace, port), wherever the device is."""
        (vni,) = struct.unpack("=I", data[netlink.IFLA_VXLAN_ID])
        (port,) = struct.unpack(">H", data[netlink.IFLA_VXLAN_PORT])
        holder = self.vnis.get((context, port, vni))
        if holder is not None and holder[0] in self.namespaces and holder[1] in self.namespaces[holder[0]].links:
            raise netlink.NetlinkError(f"{purpose} failed: File exists", errno.EEXIST)
        self.vnis[(context, port, vni)] = (netns, index)

    def _add(self, netns: str, index: int, link: Link, purpose: str) -> None:
        ns = self.namespaces[netns]
        if index in ns.links or any(other.name == link.name for other in ns.links.values()):
            raise netlink.NetlinkError(f"{purpose} failed: File exists")
        ns.links[index] = link
        self._created("link", netns, link.name)

    @staticmethod
    def _need(ns: Namespace, index: int, purpose: str) -> None:
        if index not in ns.links:
            raise netlink.NetlinkError(f"{purpose} failed: No such device (ifindex {index})")


def _attrs(data: bytes) -> dict[int, bytes]:
    out, offset = {}, 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out
