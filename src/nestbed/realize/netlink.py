"""Batched rtnetlink: pyroute2 encodes the messages, one sendto carries hundreds of them, acks are read in bulk.

Objects get fixed ifindexes in the plan, so a whole namespace's configuration is compiled before anything exists
and sent as one batch. Messages that are the same in many namespaces (``lo`` up, a shared route or qdisc) are
encoded once and reused; only the sequence number differs.
"""
from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPBatch
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from nestbed.errors import NestbedError

NLMSG_ERROR = 2
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1
NLM_F_ACK_TLVS = 0x200
_HEADER = struct.Struct("=IHHII")
CREATE = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK
SEND_CHUNK = 128 * 1024


class NetlinkError(NestbedError):
    pass


def _encoded(msg: Any, msg_type: int, flags: int = CREATE) -> bytes:
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg.encode()
    return bytes(msg.data)


def veth(name: str, ifindex: int, netns_fd: int, peer_name: str, peer_ifindex: int, peer_netns_fd: int,
         mac: str | None = None, peer_mac: str | None = None, master: int | None = None) -> bytes:
    """A veth pair, both ends created directly in their namespaces; the first end up and maybe in a bridge.

    The peer cannot be created up (the kernel answers ENOTCONN): its namespace's batch brings it up.
    """
    peer_attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", peer_name), ("IFLA_NET_NS_FD", peer_netns_fd)]
    if peer_mac:
        peer_attrs.append(("IFLA_ADDRESS", peer_mac))
    attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", name), ("IFLA_NET_NS_FD", netns_fd)]
    if mac:
        attrs.append(("IFLA_ADDRESS", mac))
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [
        ("VETH_INFO_PEER", {"index": peer_ifindex, "attrs": peer_attrs})]})]}))
    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["change"] = ifindex, IFF_UP, IFF_UP
    msg["attrs"] = attrs
    return _encoded(msg, RTM_NEWLINK)


def bridge(name: str, ifindex: int, netns_fd: int) -> bytes:
    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["change"] = ifindex, IFF_UP, IFF_UP
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_NET_NS_FD", netns_fd), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "bridge"),
        ("IFLA_INFO_DATA", {"attrs": [("IFLA_BR_STP_STATE", 0), ("IFLA_BR_FORWARD_DELAY", 0)]})]})]
    return _encoded(msg, RTM_NEWLINK)


@functools.lru_cache(maxsize=None)
def link_up(ifindex: int) -> bytes:
    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["change"] = ifindex, IFF_UP, IFF_UP
    return _encoded(msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)


def address(ifindex: int, ip: str, prefixlen: int) -> bytes:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, prefixlen, ifindex
    msg["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
    return _encoded(msg, RTM_NEWADDR)


@functools.lru_cache(maxsize=65536)
def route(destination: str, gateway: str, ifindex: int) -> bytes:
    network, prefixlen = destination.split("/")
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"] = socket.AF_INET, int(prefixlen), 254
    msg["proto"], msg["scope"], msg["type"] = 4, 0, 1          # static, universe, unicast
    msg["attrs"] = [("RTA_TABLE", 254), ("RTA_DST", network), ("RTA_GATEWAY", gateway), ("RTA_OIF", ifindex)]
    return _encoded(msg, RTM_NEWROUTE)


_tc_compiler: IPBatch | None = None


@functools.lru_cache(maxsize=4096)
def tc(command: str, kind: str, ifindex: int, frozen: tuple[tuple[str, Any], ...]) -> bytes:
    """A qdisc/class message, encoded by pyroute2's tc plugins (they compute rate tables)."""
    global _tc_compiler
    if _tc_compiler is None:
        _tc_compiler = IPBatch()
    _tc_compiler.reset()
    _tc_compiler.tc(command, kind, ifindex, **dict(frozen))
    return bytes(_tc_compiler.batch)


@dataclass
class Batch:
    """Messages for one netlink socket (one namespace), each with what it does for error messages."""
    messages: list[bytes] = field(default_factory=list)
    purposes: list[str] = field(default_factory=list)

    def add(self, message: bytes, purpose: str) -> None:
        self.messages.append(message)
        self.purposes.append(purpose)

    def __len__(self) -> int:
        return len(self.messages)


def open_socket() -> socket.socket:
    """A NETLINK_ROUTE socket in the calling thread's current network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 * 1024 * 1024)  # SO_RCVBUFFORCE: room for many acks
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.bind((0, 0))
    return sock


def send(sock: socket.socket, batch: Batch, where: str) -> None:
    """Send the batch, wait for one ack per message; raise on the first failure with its purpose."""
    if not batch.messages:
        return
    start = 0
    while start < len(batch.messages):
        chunk = bytearray()
        end = start
        while end < len(batch.messages) and (not chunk or len(chunk) + len(batch.messages[end]) <= SEND_CHUNK):
            message = bytearray(batch.messages[end])
            struct.pack_into("=HI", message, 6, struct.unpack_from("=H", message, 6)[0] | NLM_F_ACK, end + 1)
            chunk += message
            end += 1
        sock.send(chunk)
        _read_acks(sock, batch, start, end, where)
        start = end


def _read_acks(sock: socket.socket, batch: Batch, start: int, end: int, where: str) -> None:
    pending = end - start
    failure: str | None = None
    while pending:
        data = sock.recv(1 << 20)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, msg_type, flags, seq, _pid = _HEADER.unpack_from(data, offset)
            if msg_type == NLMSG_ERROR and start < seq <= end:
                pending -= 1
                (code,) = struct.unpack_from("=i", data, offset + 16)
                if code and failure is None:
                    failure = f"{where}: {batch.purposes[seq - 1]} failed: {_errno_text(-code)}" \
                              f"{_ext_ack_text(data, offset, length, flags)}"
            offset += (length + 3) & ~3
            if length == 0:
                break
    if failure:
        raise NetlinkError(failure)


def _errno_text(code: int) -> str:
    import os
    return os.strerror(code)


def _ext_ack_text(data: bytes, offset: int, length: int, flags: int) -> str:
    if not flags & NLM_F_ACK_TLVS:
        return ""
    pos = offset + 16 + 4 + 16        # header, error code, original header (capped ack)
    while pos + 4 <= offset + length:
        attr_len, attr_type = struct.unpack_from("=HH", data, pos)
        if attr_len < 4:
            break
        if attr_type == NLMSGERR_ATTR_MSG:
            text = data[pos + 4:pos + attr_len].rstrip(b"\0").decode(errors="replace")
            return f" ({text})"
        pos += (attr_len + 3) & ~3
    return ""
