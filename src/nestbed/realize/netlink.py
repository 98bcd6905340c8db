"""Batched rtnetlink: messages are compiled ahead, one sendto carries hundreds of them, acks are read in bulk.

Objects get fixed ifindexes in the plan, so a whole namespace's configuration is compiled before anything exists
and sent as one batch. Messages that are the same in many namespaces (``lo`` up, a shared route or qdisc) are
encoded once and reused; only the sequence number differs.
"""
from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass, field

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.errors import NestbedError

NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
IFF_UP = 0x1
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1
NLM_F_ACK_TLVS = 0x200
CREATE = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK
SEND_CHUNK = 128 * 1024


class NetlinkError(NestbedError):
    pass


def _encoded(msg: Any, msg_type: int, flags: int = CREATE) -> bytes:
    """Encode a pyroute2 message object (used for rare messages and as the reference in tests)."""
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg.encode()
    return bytes(msg.data)


# Messages sent once per interface or node (thousands per experiment) are packed here with struct: pyroute2's
# generic encoder costs ~0.3 ms a message, this ~10 us. tests/unit/test_netlink_encoding.py checks that the bytes
# are exactly pyroute2's. Shaping (rate tables) is left to pyroute2's tc plugins.
_NLMSG = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFLA_AF_SPEC, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 26, 8, 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
_RTMSG = struct.Struct("=BBBBBBBBI")


def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _link_attrs(name: str, netns_fd: int, mac: str | None) -> bytes:
    attrs = _nla(IFLA_IFNAME, name.encode() + b"\0") + _nla(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
    return attrs + (_nla(IFLA_ADDRESS, _mac(mac)) if mac else b"")


def _message(msg_type: int, flags: int, body: bytes) -> bytes:
    return _NLMSG.pack(_NLMSG.size + len(body), msg_type, flags, 0, 0) + body


def veth(name: str, ifindex: int, netns_fd: int, peer_name: str, peer_ifindex: int, peer_netns_fd: int,
         mac: str | None = None, peer_mac: str | None = None, master: int | None = None, up: bool = False) -> bytes:
    """A veth pair, both ends created directly in their namespaces; the first end maybe up and in a bridge.

    The peer cannot be created up (the kernel answers ENOTCONN); node ends come up in their namespace's batch,
    `quiet_ipv6` then `link_up` (a link cannot be created with IPv6 settings: EAFNOSUPPORT).
    """
    peer = _IFINFO.pack(0, 0, peer_ifindex, 0, 0) + _link_attrs(peer_name, peer_netns_fd, peer_mac)
    info = _nla(IFLA_INFO_KIND, b"veth\0") + _nla(IFLA_INFO_DATA, _nla(VETH_INFO_PEER, peer))
    attrs = _link_attrs(name, netns_fd, mac)
    if master is not None:
        attrs += _nla(IFLA_MASTER, struct.pack("=I", master))
    flags = IFF_UP if up else 0
    return _message(RTM_NEWLINK, CREATE, _IFINFO.pack(0, 0, ifindex, flags, flags) + attrs
                    + _nla(IFLA_LINKINFO, info))


def address(ifindex: int, ip: str, prefixlen: int) -> bytes:
    packed = socket.inet_aton(ip)
    body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, 0, ifindex) + _nla(IFA_LOCAL, packed) + _nla(IFA_ADDRESS, packed)
    return _message(RTM_NEWADDR, CREATE, body)


def bridge(name: str, ifindex: int, netns_fd: int) -> bytes:
    """A bridge, up, without STP (ports forward at once), created in the given namespace."""
    data = _nla(IFLA_BR_STP_STATE, struct.pack("=I", 0)) + _nla(IFLA_BR_FORWARD_DELAY, struct.pack("=I", 0))
    info = _nla(IFLA_INFO_KIND, b"bridge\0") + _nla(IFLA_INFO_DATA, data)
    attrs = _nla(IFLA_IFNAME, name.encode() + b"\0") + _nla(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
    return _message(RTM_NEWLINK, CREATE, _IFINFO.pack(0, 0, ifindex, IFF_UP, IFF_UP) + attrs
                    + _nla(IFLA_LINKINFO, info))


@functools.lru_cache(maxsize=None)
def quiet_ipv6(ifindex: int) -> bytes:
    """No IPv6 link-local address for this link, so no DAD/RS/MLD packets once it is up (much cheaper than the
    disable_ipv6 sysctl, which takes the rtnl lock per namespace). Send it before link_up: the kernel brings a
    link up before it applies a message's IFLA_AF_SPEC, and a link whose peer is already up gets its address then."""
    attrs = _nla(IFLA_AF_SPEC, _nla(socket.AF_INET6, _nla(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))))
    return _message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, _IFINFO.pack(0, 0, ifindex, 0, 0) + attrs)


@functools.lru_cache(maxsize=None)
def link_up(ifindex: int, master: int | None = None) -> bytes:
    """Bring a link up (and into a bridge)."""
    attrs = _nla(IFLA_MASTER, struct.pack("=I", master)) if master is not None else b""
    return _message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, _IFINFO.pack(0, 0, ifindex, IFF_UP, IFF_UP) + attrs)


def set_link(ifindex: int, name: str | None = None, netns_fd: int | None = None, master: int | None = None,
             up: bool = False) -> bytes:
    """Change a link: rename, move to a namespace (renamed on the way when `name` is given), join a bridge,
    come up. ifindex 0 with a name finds the link by that name."""
    attrs = _nla(IFLA_IFNAME, name.encode() + b"\0") if name else b""
    if netns_fd is not None:
        attrs += _nla(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
    if master is not None:
        attrs += _nla(IFLA_MASTER, struct.pack("=I", master))
    flags = IFF_UP if up else 0
    return _message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, _IFINFO.pack(0, 0, ifindex, flags, flags) + attrs)


@functools.lru_cache(maxsize=65536)
def route(destination: str, gateway: str, ifindex: int) -> bytes:
    """A static unicast route in the main table."""
    network, prefixlen = destination.split("/")
    body = _RTMSG.pack(socket.AF_INET, int(prefixlen), 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, 0, RTN_UNICAST, 0)
    body += (_nla(RTA_TABLE, struct.pack("=I", RT_TABLE_MAIN)) + _nla(RTA_DST, socket.inet_aton(network))
             + _nla(RTA_GATEWAY, socket.inet_aton(gateway)) + _nla(RTA_OIF, struct.pack("=I", ifindex)))
    return _message(RTM_NEWROUTE, CREATE, body)


_tc_compiler: Any = None


@functools.lru_cache(maxsize=4096)
def tc(command: str, kind: str, ifindex: int, frozen: tuple[tuple[str, Any], ...]) -> bytes:
    """A qdisc/class message, encoded by pyroute2's tc plugins (they compute rate tables)."""
    global _tc_compiler
    if _tc_compiler is None:
        from pyroute2 import (
            IPBatch,  # imported only when shaping: it costs 0.1 s at start-up
        )
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


def acked(message: bytes, seq: int) -> bytes:
    """The message asking for an ack, numbered `seq` (acks name the message they answer by it)."""
    out = bytearray(message)
    struct.pack_into("=HI", out, 6, struct.unpack_from("=H", out, 6)[0] | NLM_F_ACK, seq)
    return bytes(out)


def send(sock: socket.socket, batch: Batch, where: str) -> None:
    """Send the batch, wait for one ack per message; raise on the first failure with its purpose."""
    if not batch.messages:
        return
    start = 0
    while start < len(batch.messages):
        chunk = bytearray()
        end = start
        while end < len(batch.messages) and (not chunk or len(chunk) + len(batch.messages[end]) <= SEND_CHUNK):
            chunk += acked(batch.messages[end], end + 1)
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
        while offset + _NLMSG.size <= len(data):
            length, msg_type, flags, seq, _pid = _NLMSG.unpack_from(data, offset)
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
