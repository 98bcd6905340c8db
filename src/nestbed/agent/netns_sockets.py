"""Netlink sockets inside many network namespaces, their dumps read without blocking, interface names.

A netlink socket is bound to the namespace it was created in, so a namespace's sockets are created once, by a
short-lived thread that enters the namespaces in turn (`open_sockets`); a `Namespace` holds them. The kernel
answers a dump's first part inside send, so readers send to every namespace first, then read each answer
(`read_dump`) into one preallocated buffer. Interface names come from an RTM_GETLINK dump (`read_names`).
Used by the counter sampler (agent/sampler.py) and the attack counters (agent/attack_counters.py).
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time

TYPE_CHECKING = False     # not typing's: this module may run in a guest agent, where imports cost boot time
if TYPE_CHECKING:
    from typing import Any

from nestbed import netlinkwire as wire

RECV_BUFFER = 1 << 16
FOUR_U64 = struct.Struct("=QQQQ")            # rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes


class Namespace:
    """One node's namespace and the sockets opened in it (route: NETLINK_ROUTE, nf: NETLINK_NETFILTER)."""
    __slots__ = ("node", "netns", "ident", "route", "nf", "names", "attack", "error")

    def __init__(self, node: str, netns: str):
        self.node = node
        self.netns = netns
        self.ident: tuple[int, int] | None = None
        self.route: socket.socket | None = None
        self.nf: socket.socket | None = None
        self.names: dict[int, str] = {}
        self.attack = False             # our nftables table exists here
        self.error: str | None = None

    def close(self) -> None:
        for sock in (self.route, self.nf):
            if sock is not None:
                sock.close()
        self.route = self.nf = None


def netlink_error(error: BaseException) -> str:
    return f"netlink: {getattr(error, 'strerror', None) or error}"


# -- sockets in namespaces ------------------------------------------------------------------------------------
def _new_socket(protocol: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    sock.bind((0, 0))
    return sock


def netns_id(netns: str) -> tuple[int, int] | None:
    """(dev, inode) of the namespace's handle in /run/netns, None when it is gone (or netns is "")."""
    if not netns:
        return None
    try:
        st = os.stat(f"/run/netns/{netns}")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def open_sockets(namespaces: list[str], protocols: tuple[int, ...]) -> list[tuple[list[socket.socket | None],
                                                                                  tuple[int, int] | None, str | None]]:
    """For each namespace: a socket per protocol (None where the kernel refuses that protocol), the namespace's
    (dev, inode), and an error text when it could not be entered. One short-lived thread enters them in turn."""
    from nestbed.realize import syscalls
    results: list = [None] * len(namespaces)

    def work() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for k, netns in enumerate(namespaces):
                ident = None
                try:
                    if netns:
                        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
                        try:
                            st = os.fstat(fd)
                            ident = (st.st_dev, st.st_ino)
                            syscalls.setns(fd, syscalls.CLONE_NEWNET)
                        finally:
                            os.close(fd)
                    else:
                        syscalls.setns(home, syscalls.CLONE_NEWNET)
                except OSError as error:
                    results[k] = ([None] * len(protocols), None, f"cannot enter namespace {netns}: "
                                                                 f"{error.strerror or error}")
                    continue
                sockets: list[socket.socket | None] = []
                for protocol in protocols:
                    try:
                        sockets.append(_new_socket(protocol))
                    except OSError:
                        sockets.append(None)
                results[k] = (sockets, ident, None)
        finally:
            syscalls.setns(home, syscalls.CLONE_NEWNET)
            os.close(home)

    thread = threading.Thread(target=work, name="counters-open", daemon=True)
    thread.start()
    thread.join()
    return results


# -- reading ----------------------------------------------------------------------------------------------------
def read_dump(sock: socket.socket, buffer: bytearray, view: memoryview, parse: Any, seq: int, out: Any,
              timeout: float = 2.0) -> None:
    """Read one dump's replies (already queued: the kernel answers a dump's first part inside send)."""
    deadline = None
    while True:
        try:
            length = sock.recv_into(buffer, RECV_BUFFER, socket.MSG_DONTWAIT)
        except BlockingIOError:
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                raise wire.DumpError(errno.ETIMEDOUT, "no reply from the kernel") from None
            select.select([sock], [], [], max(0.0, deadline - now))
            continue
        if parse(view, length, seq, out):
            return


def drain(sock: socket.socket, buffer: bytearray) -> None:
    """Throw away whatever the socket holds (what is left of a failed dump or batch)."""
    while True:
        try:
            sock.recv_into(buffer, RECV_BUFFER, socket.MSG_DONTWAIT)
        except OSError:         # BlockingIOError included: nothing left
            return


# -- interface names ------------------------------------------------------------------------------------------
def getlink_request(seq: int = 0) -> bytes:
    """RTM_GETLINK dump of every interface; IFLA_EXT_MASK 0 keeps VF and other extended info out."""
    return wire.message(wire.RTM_GETLINK, wire.NLM_F_REQUEST | wire.NLM_F_DUMP,
                        wire.IFINFO.pack(0, 0, 0, 0, 0) + wire.u32_attr(wire.IFLA_EXT_MASK, 0), seq)


def parse_links(data: bytes | memoryview, length: int, seq: int,
                out: dict[int, tuple[str, tuple[int, int, int, int] | None]]) -> bool:
    """Parse RTM_NEWLINK messages: out[ifindex] = (IFLA_IFNAME, the first four IFLA_STATS64 fields or None)."""
    def link(offset: int, end: int) -> None:
        ifindex = wire.IFINFO.unpack_from(data, offset + 16)[2]
        name, stats = "", None
        pos = offset + 32
        while pos + 4 <= end:
            attr_len, attr_type = wire.ATTR_HEADER.unpack_from(data, pos)
            if attr_len < 4:
                break
            kind = attr_type & wire.NLA_TYPE_MASK
            if kind == wire.IFLA_IFNAME:
                name = bytes(data[pos + 4:pos + attr_len]).split(b"\0", 1)[0].decode()
            elif kind == wire.IFLA_STATS64:
                stats = FOUR_U64.unpack_from(data, pos + 4)
            pos += (attr_len + 3) & ~3
        out[ifindex] = (name, stats)
    return wire.walk_dump(data, length, seq, wire.RTM_NEWLINK, link)


def read_names(entries: list[Namespace], buffer: bytearray) -> None:
    """Each namespace's ifindex -> name map, one RTM_GETLINK dump after another (no sampler at hand)."""
    view = memoryview(buffer)
    request = getlink_request(1)
    for entry in entries:
        links: dict[int, tuple[str, tuple | None]] = {}
        if entry.route is None:          # its namespace could not be opened: entry.error says why
            continue
        try:
            entry.route.send(request)
            read_dump(entry.route, buffer, view, parse_links, 1, links)
        except OSError as error:
            entry.error = f"netlink: {error.strerror or error}"
            continue
        entry.names = {index: name for index, (name, _s) in links.items()}
