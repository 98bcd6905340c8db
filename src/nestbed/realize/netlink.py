"""Batched rtnetlink: messages are compiled ahead, one sendto carries hundreds of them, acks are read in bulk.

Objects get fixed ifindexes in the plan, so a whole namespace's configuration is compiled before anything exists
and sent as one batch. Messages that are the same in many namespaces (``lo`` up, a shared route or qdisc) are
encoded once and reused; only the sequence number differs.
"""
from __future__ import annotations

import functools
import os
import socket
import struct
from dataclasses import dataclass, field

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.errors import NestbedError
from nestbed.netlinkwire import (
    IFF_UP,
    IFINFO,
    IFLA_ADDRESS,
    IFLA_AF_SPEC,
    IFLA_IFNAME,
    IFLA_LINKINFO,
    IFLA_MASTER,
    IFLA_NET_NS_FD,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    SOL_NETLINK,
    acks,
    attr,
    attributes,
    error_message,
    message,
    numbered,
    string_attr,
    u32_attr,
    walk_dump,
)

CREATE = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK
SEND_CHUNK = 128 * 1024


class NetlinkError(NestbedError):
    """A message of a batch failed: `code` is its errno, `index` its position in the batch (None: unknown)."""
    def __init__(self, text: str, code: int = 0, index: int | None = None):
        super().__init__(text)
        self.code = code
        self.index = index


def _encoded(msg: Any, msg_type: int, flags: int = CREATE) -> bytes:
    """Encode a pyroute2 message object (used for rare messages and as the reference in tests)."""
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg.encode()
    return bytes(msg.data)


# Messages sent once per interface or node (thousands per experiment) are packed here with struct: pyroute2's
# generic encoder costs ~0.3 ms a message, this ~10 us. tests/unit/test_netlink_encoding.py checks that the bytes
# are exactly pyroute2's. Shaping (rate tables) is left to pyroute2's tc plugins.
_IFADDR = struct.Struct("=BBBBI")
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
_RTMSG = struct.Struct("=BBBBBBBBI")
IFLA_MTU = 4
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 3, 4, 7, 15
RTM_NEWNEIGH, NDA_DST, NDA_LLADDR = 28, 1, 2
NTF_SELF, NUD_NOARP, NUD_PERMANENT = 0x02, 0x40, 0x80
NLM_F_APPEND = 0x800
_NDMSG = struct.Struct("=BxxxiHBB")        # struct ndmsg: family, ifindex, state, flags, type
_BE16 = struct.Struct(">H")


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _link_attrs(name: str, netns_fd: int, mac: str | None, mtu: int | None = None) -> bytes:
    attrs = string_attr(IFLA_IFNAME, name) + u32_attr(IFLA_NET_NS_FD, netns_fd)
    attrs += attr(IFLA_ADDRESS, _mac(mac)) if mac else b""
    return attrs + (u32_attr(IFLA_MTU, mtu) if mtu is not None else b"")


def veth(name: str, ifindex: int, netns_fd: int, peer_name: str, peer_ifindex: int, peer_netns_fd: int,
         mac: str | None = None, peer_mac: str | None = None, master: int | None = None, up: bool = False,
         mtu: int | None = None) -> bytes:
    """A veth pair, both ends created directly in their namespaces; the first end maybe up and in a bridge;
    `mtu` (both ends) None: the kernel's default.

    The peer cannot be created up (the kernel answers ENOTCONN); node ends come up in their namespace's batch,
    `quiet_ipv6` then `link_up` (a link cannot be created with IPv6 settings: EAFNOSUPPORT).
    """
    peer = IFINFO.pack(0, 0, peer_ifindex, 0, 0) + _link_attrs(peer_name, peer_netns_fd, peer_mac, mtu)
    info = attr(IFLA_INFO_KIND, b"veth\0") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
    attrs = _link_attrs(name, netns_fd, mac, mtu)
    if master is not None:
        attrs += u32_attr(IFLA_MASTER, master)
    flags = IFF_UP if up else 0
    return message(RTM_NEWLINK, CREATE, IFINFO.pack(0, 0, ifindex, flags, flags) + attrs
                   + attr(IFLA_LINKINFO, info))


def address(ifindex: int, ip: str, prefixlen: int) -> bytes:
    packed = socket.inet_aton(ip)
    body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, 0, ifindex) + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    return message(RTM_NEWADDR, CREATE, body)


def bridge(name: str, ifindex: int, netns_fd: int) -> bytes:
    """A bridge, up, without STP (ports forward at once), created in the given namespace."""
    data = u32_attr(IFLA_BR_STP_STATE, 0) + u32_attr(IFLA_BR_FORWARD_DELAY, 0)
    info = attr(IFLA_INFO_KIND, b"bridge\0") + attr(IFLA_INFO_DATA, data)
    attrs = string_attr(IFLA_IFNAME, name) + u32_attr(IFLA_NET_NS_FD, netns_fd)
    return message(RTM_NEWLINK, CREATE, IFINFO.pack(0, 0, ifindex, IFF_UP, IFF_UP) + attrs
                   + attr(IFLA_LINKINFO, info))


def vxlan(name: str, ifindex: int, netns_fd: int, vni: int, local: str, underlay: int, port: int, mtu: int,
          master: int) -> bytes:
    """A VXLAN device created in the namespace of `netns_fd`, up, a port of bridge `master` there, without
    learning (the FDB is static: `fdb_entry`). Send it from a socket in the host's own namespace: the kernel opens
    the device's UDP socket (`port`, bound on every address) in the sender's namespace, where `underlay` (an
    ifindex there) and `local` are."""
    data = (u32_attr(IFLA_VXLAN_ID, vni) + u32_attr(IFLA_VXLAN_LINK, underlay)
            + attr(IFLA_VXLAN_LOCAL, socket.inet_aton(local)) + attr(IFLA_VXLAN_LEARNING, b"\0")
            + attr(IFLA_VXLAN_PORT, _BE16.pack(port)))
    info = attr(IFLA_INFO_KIND, b"vxlan\0") + attr(IFLA_INFO_DATA, data)
    attrs = (string_attr(IFLA_IFNAME, name) + u32_attr(IFLA_NET_NS_FD, netns_fd) + u32_attr(IFLA_MTU, mtu)
             + u32_attr(IFLA_MASTER, master))
    return message(RTM_NEWLINK, CREATE, IFINFO.pack(0, 0, ifindex, IFF_UP, IFF_UP) + attrs
                   + attr(IFLA_LINKINFO, info))


def fdb_entry(ifindex: int, mac: str, dst: str, append: bool) -> bytes:
    """A VXLAN device's permanent FDB entry: frames to `mac` go to underlay address `dst`. What `bridge fdb add`
    sends (a new MAC: NLM_F_CREATE|NLM_F_EXCL) or, with `append`, `bridge fdb append` (one more destination for
    the MAC, NLM_F_CREATE|NLM_F_APPEND: the all-zero entry's flood list)."""
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | (NLM_F_APPEND if append else NLM_F_EXCL)
    body = (_NDMSG.pack(socket.AF_BRIDGE, ifindex, NUD_NOARP | NUD_PERMANENT, NTF_SELF, 0)
            + attr(NDA_LLADDR, _mac(mac)) + attr(NDA_DST, socket.inet_aton(dst)))
    return message(RTM_NEWNEIGH, flags, body)


@functools.cache
def quiet_ipv6(ifindex: int) -> bytes:
    """No IPv6 link-local address for this link, so no DAD/RS/MLD packets once it is up (much cheaper than the
    disable_ipv6 sysctl, which takes the rtnl lock per namespace). Send it before link_up: the kernel brings a
    link up before it applies a message's IFLA_AF_SPEC, and a link whose peer is already up gets its address then."""
    attrs = attr(IFLA_AF_SPEC, attr(socket.AF_INET6, attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))))
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, IFINFO.pack(0, 0, ifindex, 0, 0) + attrs)


@functools.cache
def link_up(ifindex: int, master: int | None = None, mtu: int | None = None) -> bytes:
    """Bring a link up (and into a bridge, at `mtu`: the kernel sets the MTU before the master)."""
    attrs = u32_attr(IFLA_MASTER, master) if master is not None else b""
    attrs += u32_attr(IFLA_MTU, mtu) if mtu is not None else b""
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, IFINFO.pack(0, 0, ifindex, IFF_UP, IFF_UP) + attrs)


def set_link(ifindex: int, name: str | None = None, netns_fd: int | None = None, master: int | None = None,
             up: bool = False) -> bytes:
    """Change a link: rename, move to a namespace (renamed on the way when `name` is given), join a bridge,
    come up. ifindex 0 with a name finds the link by that name."""
    attrs = string_attr(IFLA_IFNAME, name) if name else b""
    if netns_fd is not None:
        attrs += u32_attr(IFLA_NET_NS_FD, netns_fd)
    if master is not None:
        attrs += u32_attr(IFLA_MASTER, master)
    flags = IFF_UP if up else 0
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, IFINFO.pack(0, 0, ifindex, flags, flags) + attrs)


@functools.lru_cache(maxsize=65536)
def route(destination: str, gateway: str, ifindex: int) -> bytes:
    """A static unicast route in the main table."""
    network, prefixlen = destination.split("/")
    body = _RTMSG.pack(socket.AF_INET, int(prefixlen), 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, 0, RTN_UNICAST, 0)
    body += (u32_attr(RTA_TABLE, RT_TABLE_MAIN) + attr(RTA_DST, socket.inet_aton(network))
             + attr(RTA_GATEWAY, socket.inet_aton(gateway)) + u32_attr(RTA_OIF, ifindex))
    return message(RTM_NEWROUTE, CREATE, body)


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


def open_socket(netns: str = "") -> socket.socket:
    """A NETLINK_ROUTE socket in network namespace `netns` ("": the calling thread's own). A socket stays in the
    namespace it was made in, so the thread steps back home at once."""
    if netns:
        from nestbed.realize import namespaces
        with namespaces.entered(netns):
            return open_socket()
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 * 1024 * 1024)  # SO_RCVBUFFORCE: room for many acks
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.bind((0, 0))
    return sock


RTM_GETADDR = 22


def ipv4_addresses(sock: socket.socket) -> list[tuple[str, int]]:
    """(address, prefix length) of every IPv4 address in the socket's namespace (an RTM_GETADDR dump; pyroute2
    does the same but costs 0.15 s to import, on every `nestbed up`)."""
    return [(address, length) for address, length, _ in ipv4_addresses_on_links(sock)]


def ipv4_addresses_on_links(sock: socket.socket) -> list[tuple[str, int, int]]:
    """(address, prefix length, ifindex of the link that holds it) of every IPv4 address in the namespace."""
    seq = 1
    sock.send(message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0), seq))
    found: list[tuple[str, int, int]] = []

    def one(offset: int, end: int) -> None:
        start = offset + 16                      # after struct nlmsghdr: struct ifaddrmsg, then attributes
        _, prefixlen, _, _, index = _IFADDR.unpack_from(data, start)
        attrs = attributes(data, start + _IFADDR.size, end)
        where = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
        if where is not None:
            found.append((socket.inet_ntoa(bytes(data[where[0]:where[1]])), prefixlen, index))
    while True:
        data = sock.recv(1 << 20)
        if walk_dump(data, len(data), seq, RTM_NEWADDR, one):
            return found


def acked(encoded: bytes, seq: int) -> bytes:
    """The message asking for an ack, numbered `seq` (acks name the message they answer by it)."""
    return numbered(encoded, seq, NLM_F_ACK)


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
    failure: NetlinkError | None = None
    while pending:
        data = sock.recv(1 << 20)
        for seq, code, offset in acks(data, len(data)):
            if not start < seq <= end:
                continue
            pending -= 1
            if code and failure is None:
                detail = error_message(data, offset)
                failure = NetlinkError(f"{where}: {batch.purposes[seq - 1]} failed: {os.strerror(code)}"
                                       f"{f' ({detail})' if detail else ''}", code, seq - 1)
    if failure:
        raise failure
