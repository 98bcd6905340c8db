"""Interface counters of many nodes, cheaply: one netlink socket per namespace, opened once, read every second.

    sampler = Sampler([("a", "nb-lab.a"), ("b", "nb-lab.b")])    # (node, netns); "" = this process's namespace
    install_attack_counters(nodes, sampler)                        # optional: DSCP-marked traffic counted apart
    rows = sampler.sample()                                        # list[CounterRow], cumulative
    sampler.close()

How it stays cheap (1000 nodes at 1 Hz is well under 10% of one core): a NETLINK_ROUTE socket is bound to the
namespace it was created in, so each namespace gets one, created once (a short-lived thread enters the
namespaces in turn). Each sample sends one RTM_GETSTATS dump request asking only for IFLA_STATS_LINK_64 (~200
bytes per interface, against ~1.5 KB for an RTM_GETLINK message) to every socket, then reads the replies
with struct, into one preallocated buffer. Interface names come from an RTM_GETLINK dump (IFLA_IFNAME) when a
namespace is opened or shows an ifindex it did not know. Kernels without RTM_GETSTATS get RTM_GETLINK dumps
(IFLA_STATS64) every sample instead.

Attack traffic is what the flooder marks with DSCP ATTACK_DSCP (CS1, TOS byte 0x20). It is counted by
nftables: `install_attack_counters` puts in each namespace a table `ip nestbed` with a prerouting and a
postrouting chain, and per interface a rule "dscp == 8, iifname/oifname == IF -> named counter rx-IF/tx-IF".
The sampler reads those counters with an NFT_MSG_GETOBJ dump on a NETLINK_NETFILTER socket of the namespace.
(This kernel has no tc gact/flower/matchall actions, so tc filters could not count bytes; nf_tables can, and is
built into every distribution kernel.) nftables counts IP packet lengths; the sampler adds the Ethernet header
(14 bytes) per packet so attack bytes are frame bytes like the interface's. Where nf_tables is missing, attack
counters stay 0 and `attack_state` says why.

Counters installed by another process (a flooder starting) are found within ATTACK_PROBE_EVERY seconds; with
`install_attack_counters(nodes, sampler)` at once.

Namespaces that disappear: a socket keeps its namespace alive, so every CHECK_EVERY seconds (and at once when a
namespace shows no interfaces) each namespace's handle in /run/netns is checked: gone -> its sockets are closed
and its node is dropped; replaced by a new namespace of the same name -> the sockets are reopened.
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
    from typing import Any, Callable, Iterable

from nestbed.agent.store import CounterRow

ATTACK_DSCP = 8                   # CS1; the flooder sets IP_TOS = ATTACK_DSCP << 2
ATTACK_TOS = ATTACK_DSCP << 2     # 0x20: `ping -Q 0x20` sends attack-marked packets
ATTACK_TABLE = "nestbed"          # nftables table (family ip) holding the attack counters
ETH_HLEN = 14
CHECK_EVERY = 1.0                 # seconds between checks that namespaces still exist (a stat each: ~2 us)
ATTACK_PROBE_EVERY = 5.0          # seconds between looks for attack counters installed by another process

# -- netlink constants ----------------------------------------------------------------------------------------
NETLINK_NETFILTER = 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
RTM_NEWLINK, RTM_GETLINK, RTM_NEWSTATS, RTM_GETSTATS = 16, 18, 92, 94
IFLA_IFNAME, IFLA_STATS64, IFLA_EXT_MASK = 3, 23, 29
IFLA_STATS_LINK_64 = 1
# nfnetlink / nf_tables
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN = 0, 1, 2, 3
NFT_MSG_NEWRULE, NFT_MSG_NEWOBJ, NFT_MSG_GETOBJ = 6, 18, 19
NFPROTO_IPV4 = 2
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_TYPE = 1, 3, 4, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NF_INET_PRE_ROUTING, NF_INET_POST_ROUTING = 0, 4
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA = 1, 2, 4, 7
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2
NFTA_META_DREG, NFTA_META_KEY = 1, 2
NFT_META_IIFNAME, NFT_META_OIFNAME = 6, 7
NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA = 1, 2, 3
NFTA_DATA_VALUE = 1
NFTA_PAYLOAD_DREG, NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_OFFSET, NFTA_PAYLOAD_LEN = 1, 2, 3, 4
NFT_PAYLOAD_NETWORK_HEADER = 1
NFTA_BITWISE_SREG, NFTA_BITWISE_DREG, NFTA_BITWISE_LEN, NFTA_BITWISE_MASK, NFTA_BITWISE_XOR = 1, 2, 3, 4, 5
NFTA_OBJREF_IMM_TYPE, NFTA_OBJREF_IMM_NAME = 1, 2
NFTA_OBJ_TABLE, NFTA_OBJ_NAME, NFTA_OBJ_TYPE, NFTA_OBJ_DATA = 1, 2, 3, 4
NFT_OBJECT_COUNTER = 1
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2
NFT_REG_1 = 1
NFT_CMP_EQ = 0
NFTNL_UDATA_RULE_COMMENT = 0

_NLMSG = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_STATS_MSG = struct.Struct("=BxHiI")         # struct if_stats_msg: family, pad, pad, ifindex, filter_mask
_NFGEN = struct.Struct("=BBH")               # struct nfgenmsg: family, version, res_id (big endian)
_HDR = struct.Struct("=HH")
_FOUR_U64 = struct.Struct("=QQQQ")           # rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes
_BE64 = struct.Struct(">Q")
_ERRNO = struct.Struct("=i")
RECV_BUFFER = 1 << 16


# -- encoding -------------------------------------------------------------------------------------------------
def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _HDR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _nest(kind: int, *parts: bytes) -> bytes:
    return _nla(kind | NLA_F_NESTED, b"".join(parts))


def _be32(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack(">i", value))


def _string(kind: int, text: str) -> bytes:
    return _nla(kind, text.encode() + b"\0")


def _message(msg_type: int, flags: int, body: bytes, seq: int = 0) -> bytes:
    return _NLMSG.pack(_NLMSG.size + len(body), msg_type, flags, seq, 0) + body


def getstats_request(seq: int = 0) -> bytes:
    """RTM_GETSTATS dump of every interface, 64-bit link stats only."""
    return _message(RTM_GETSTATS, NLM_F_REQUEST | NLM_F_DUMP, _STATS_MSG.pack(0, 0, 0, 1 << (IFLA_STATS_LINK_64 - 1)),
                    seq)


def getlink_request(seq: int = 0) -> bytes:
    """RTM_GETLINK dump of every interface; IFLA_EXT_MASK 0 keeps VF and other extended info out."""
    return _message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, _IFINFO.pack(0, 0, 0, 0, 0) + _nla(IFLA_EXT_MASK,
                                                                                             struct.pack("=I", 0)),
                    seq)


def _nfmsg(msg_type: int, flags: int, body: bytes, family: int = NFPROTO_IPV4, seq: int = 0) -> bytes:
    return _message((NFNL_SUBSYS_NFTABLES << 8) | msg_type, flags, _NFGEN.pack(family, 0, 0) + body, seq)


def getobj_request(seq: int = 0, table: str = ATTACK_TABLE) -> bytes:
    """NFT_MSG_GETOBJ dump of the counters of our table."""
    return _nfmsg(NFT_MSG_GETOBJ, NLM_F_REQUEST | NLM_F_DUMP,
                  _string(NFTA_OBJ_TABLE, table) + _be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER), seq=seq)


def _expr(name: str, *attrs: bytes) -> bytes:
    return _nest(NFTA_LIST_ELEM, _string(NFTA_EXPR_NAME, name), _nest(NFTA_EXPR_DATA, *attrs))


def _data(kind: int, value: bytes) -> bytes:
    return _nest(kind, _nla(NFTA_DATA_VALUE, value))


def _attack_rule(chain: str, meta_key: int, iface: str, counter: str, tos: int) -> bytes:
    """`ip dscp == tos>>2 (i|o)ifname IF counter name COUNTER`, as nft would encode it (payload, bitwise, cmp,
    meta, cmp, objref), with a comment naming the counter."""
    expressions = _nest(
        NFTA_RULE_EXPRESSIONS,
        _expr("payload", _be32(NFTA_PAYLOAD_DREG, NFT_REG_1), _be32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER),
              _be32(NFTA_PAYLOAD_OFFSET, 1), _be32(NFTA_PAYLOAD_LEN, 1)),
        _expr("bitwise", _be32(NFTA_BITWISE_SREG, NFT_REG_1), _be32(NFTA_BITWISE_DREG, NFT_REG_1),
              _be32(NFTA_BITWISE_LEN, 1), _data(NFTA_BITWISE_MASK, b"\xfc"), _data(NFTA_BITWISE_XOR, b"\0")),
        _expr("cmp", _be32(NFTA_CMP_SREG, NFT_REG_1), _be32(NFTA_CMP_OP, NFT_CMP_EQ),
              _data(NFTA_CMP_DATA, bytes([tos & 0xFC]))),
        _expr("meta", _be32(NFTA_META_DREG, NFT_REG_1), _be32(NFTA_META_KEY, meta_key)),
        _expr("cmp", _be32(NFTA_CMP_SREG, NFT_REG_1), _be32(NFTA_CMP_OP, NFT_CMP_EQ),
              _data(NFTA_CMP_DATA, iface.encode() + b"\0")),
        _expr("objref", _be32(NFTA_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER), _string(NFTA_OBJREF_IMM_NAME, counter)))
    comment = f"nestbed attack counter {counter}".encode() + b"\0"
    userdata = bytes([NFTNL_UDATA_RULE_COMMENT, len(comment)]) + comment
    return (_string(NFTA_RULE_TABLE, ATTACK_TABLE) + _string(NFTA_RULE_CHAIN, chain) + expressions
            + _nla(NFTA_RULE_USERDATA, userdata))


def attack_batch(interfaces: Iterable[str], tos: int = ATTACK_TOS) -> list[bytes]:
    """The nf_tables messages that install attack counting on these interfaces (without batch begin/end).

    The table is created with NLM_F_EXCL: where it exists already the whole batch fails with EEXIST and
    nothing changes (counters keep their values)."""
    create = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
    messages = [_nfmsg(NFT_MSG_NEWTABLE, create | NLM_F_EXCL, _string(NFTA_TABLE_NAME, ATTACK_TABLE))]
    for chain, hook, priority in (("attack_in", NF_INET_PRE_ROUTING, -300), ("attack_out", NF_INET_POST_ROUTING, 300)):
        messages.append(_nfmsg(NFT_MSG_NEWCHAIN, create, _string(NFTA_CHAIN_TABLE, ATTACK_TABLE)
                               + _string(NFTA_CHAIN_NAME, chain)
                               + _nest(NFTA_CHAIN_HOOK, _be32(NFTA_HOOK_HOOKNUM, hook), _be32(NFTA_HOOK_PRIORITY, priority))
                               + _string(NFTA_CHAIN_TYPE, "filter")))
    for iface in interfaces:
        for direction, chain, key in (("rx", "attack_in", NFT_META_IIFNAME), ("tx", "attack_out", NFT_META_OIFNAME)):
            counter = f"{direction}-{iface}"
            messages.append(_nfmsg(NFT_MSG_NEWOBJ, create, _string(NFTA_OBJ_TABLE, ATTACK_TABLE)
                                   + _string(NFTA_OBJ_NAME, counter) + _be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER)
                                   + _nest(NFTA_OBJ_DATA, _nla(NFTA_COUNTER_BYTES, _BE64.pack(0)),
                                           _nla(NFTA_COUNTER_PACKETS, _BE64.pack(0)))))
            messages.append(_nfmsg(NFT_MSG_NEWRULE, create, _attack_rule(chain, key, iface, counter, tos)))
    return messages


def _batched(messages: list[bytes], first_seq: int = 1) -> bytes:
    """Wrap nf_tables messages in BATCH_BEGIN/END, numbering them first_seq, first_seq + 1, …"""
    begin = _message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, _NFGEN.pack(0, 0, socket.htons(NFNL_SUBSYS_NFTABLES)),
                     first_seq - 1)
    body = bytearray(begin)
    for k, message in enumerate(messages):
        chunk = bytearray(message)
        struct.pack_into("=I", chunk, 8, first_seq + k)
        body += chunk
    body += _message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, _NFGEN.pack(0, 0, socket.htons(NFNL_SUBSYS_NFTABLES)),
                     first_seq + len(messages))
    return bytes(body)


def _deltable_batch() -> bytes:
    return _batched([_nfmsg(NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK, _string(NFTA_TABLE_NAME, ATTACK_TABLE))])


# -- parsing --------------------------------------------------------------------------------------------------
class DumpError(OSError):
    pass


def _walk_dump(data: bytes | memoryview, length: int, seq: int, wanted: int, handle: Any) -> bool:
    """Call handle(offset, end) for every message of type `wanted` of this dump (seq) in data[:length]. True once
    the dump ended (NLMSG_DONE, or an ack); an error reply raises DumpError with its errno."""
    offset = 0
    unpack_hdr = _NLMSG.unpack_from
    while offset + 16 <= length:
        msg_len, msg_type, _flags, msg_seq, _pid = unpack_hdr(data, offset)
        if msg_len < 16:
            break
        if msg_seq == seq:
            if msg_type == wanted:
                handle(offset, offset + msg_len)
            elif msg_type == NLMSG_DONE:
                return True
            elif msg_type == NLMSG_ERROR:
                code = -_ERRNO.unpack_from(data, offset + 16)[0]
                if code:
                    raise DumpError(code, os.strerror(code))
                return True
        offset += (msg_len + 3) & ~3
    return False


def parse_stats(data: bytes | memoryview, length: int, seq: int, out: dict[int, tuple[int, int, int, int]]) -> bool:
    """Parse RTM_NEWSTATS messages in data[:length] into out[ifindex] = (rx_packets, tx_packets, rx_bytes,
    tx_bytes). True once NLMSG_DONE of this seq was seen; raises DumpError on an error reply."""
    def stats(offset: int, end: int) -> None:
        ifindex = _STATS_MSG.unpack_from(data, offset + 16)[2]
        pos = offset + 28
        while pos + 4 <= end:
            attr_len, attr_type = _HDR.unpack_from(data, pos)
            if attr_len < 4:
                break
            if attr_type & NLA_TYPE_MASK == IFLA_STATS_LINK_64:
                out[ifindex] = _FOUR_U64.unpack_from(data, pos + 4)
                break
            pos += (attr_len + 3) & ~3
    return _walk_dump(data, length, seq, RTM_NEWSTATS, stats)


def parse_links(data: bytes | memoryview, length: int, seq: int,
                out: dict[int, tuple[str, tuple[int, int, int, int] | None]]) -> bool:
    """Parse RTM_NEWLINK messages: out[ifindex] = (IFLA_IFNAME, the first four IFLA_STATS64 fields or None)."""
    def link(offset: int, end: int) -> None:
        ifindex = _IFINFO.unpack_from(data, offset + 16)[2]
        name, stats = "", None
        pos = offset + 32
        while pos + 4 <= end:
            attr_len, attr_type = _HDR.unpack_from(data, pos)
            if attr_len < 4:
                break
            kind = attr_type & NLA_TYPE_MASK
            if kind == IFLA_IFNAME:
                name = bytes(data[pos + 4:pos + attr_len]).split(b"\0", 1)[0].decode()
            elif kind == IFLA_STATS64:
                stats = _FOUR_U64.unpack_from(data, pos + 4)
            pos += (attr_len + 3) & ~3
        out[ifindex] = (name, stats)
    return _walk_dump(data, length, seq, RTM_NEWLINK, link)


def _attrs(data: bytes | memoryview, pos: int, end: int) -> dict[int, tuple[int, int]]:
    found = {}
    while pos + 4 <= end:
        attr_len, attr_type = _HDR.unpack_from(data, pos)
        if attr_len < 4:
            break
        found[attr_type & NLA_TYPE_MASK] = (pos + 4, pos + attr_len)
        pos += (attr_len + 3) & ~3
    return found


def parse_counters(data: bytes | memoryview, length: int, seq: int, out: dict[str, tuple[int, int]]) -> bool:
    """Parse NFT_MSG_NEWOBJ (counter) messages: out[name] = (packets, bytes). An ENOENT reply (no table) ends
    the dump like NLMSG_DONE; other errors raise DumpError."""
    def counter(offset: int, end: int) -> None:
        attrs = _attrs(data, offset + 20, end)
        if NFTA_OBJ_NAME in attrs and NFTA_OBJ_DATA in attrs:
            start, stop = attrs[NFTA_OBJ_NAME]
            name = bytes(data[start:stop]).split(b"\0", 1)[0].decode()
            inner = _attrs(data, *attrs[NFTA_OBJ_DATA])
            packets = _BE64.unpack_from(data, inner[NFTA_COUNTER_PACKETS][0])[0] \
                if NFTA_COUNTER_PACKETS in inner else 0
            nbytes = _BE64.unpack_from(data, inner[NFTA_COUNTER_BYTES][0])[0] if NFTA_COUNTER_BYTES in inner else 0
            out[name] = (packets, nbytes)
    try:
        return _walk_dump(data, length, seq, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ, counter)
    except DumpError as error:
        if error.errno == errno.ENOENT:
            out.clear()
            raise _NoTable() from None
        raise


class _NoTable(Exception):
    pass


def _netlink_error(error: BaseException) -> str:
    return f"netlink: {getattr(error, 'strerror', None) or error}"


# -- sockets in namespaces ------------------------------------------------------------------------------------
def _new_socket(protocol: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    sock.bind((0, 0))
    return sock


def _netns_id(netns: str) -> tuple[int, int] | None:
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


def _read_dump(sock: socket.socket, buffer: bytearray, view: memoryview, parse, seq: int, out, timeout: float = 2.0):
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
                raise DumpError(errno.ETIMEDOUT, "no reply from the kernel") from None
            select.select([sock], [], [], max(0.0, deadline - now))
            continue
        if parse(view, length, seq, out):
            return


def _drain(sock: socket.socket, buffer: bytearray) -> None:
    while True:
        try:
            sock.recv_into(buffer, RECV_BUFFER, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            return


class _Namespace:
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


class Sampler:
    """Cumulative per-interface counters (all but lo) of many nodes, each in its network namespace.

    Not thread-safe: call sample(), refresh_attack() and install_attack_counters(…, sampler) from one thread.
    `attack=False` opens no NETLINK_NETFILTER sockets (attack counters stay 0). `dropped` lists the nodes whose
    namespace disappeared; `errors` maps nodes to why they are not sampled."""

    def __init__(self, nodes: list[tuple[str, str]], attack: bool = True, check_every: float = CHECK_EVERY):
        self.check_every = check_every
        self._buffer = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buffer)
        self._seq = 0
        self._stats_supported = True
        self._attack_wanted = attack
        self._nf_supported: bool | None = None
        self._last_check = self._last_probe = time.monotonic()
        self.namespaces = [_Namespace(node, netns) for node, netns in nodes]
        self._open(self.namespaces)
        self.dropped: list[str] = []        # nodes whose namespace disappeared

    # -- opening ------------------------------------------------------------------------------------------
    def _open(self, entries: list[_Namespace]) -> None:
        protocols = (socket.NETLINK_ROUTE, NETLINK_NETFILTER) if self._attack_wanted else (socket.NETLINK_ROUTE,)
        opened = open_sockets([e.netns for e in entries], protocols)
        for entry, (sockets, ident, error) in zip(entries, opened):
            entry.close()
            entry.route, entry.ident, entry.error = sockets[0], ident, error
            entry.nf = sockets[1] if len(sockets) > 1 else None
            if self._attack_wanted and error is None:
                if entry.nf is None and self._nf_supported is None:
                    self._nf_supported = False
                elif entry.nf is not None:
                    self._nf_supported = True
            entry.names = {}
            entry.attack = False
        live = [e for e in entries if e.route is not None]
        self._refresh_names(live)
        self._probe_attack(live)

    def _next_seq(self) -> int:
        self._seq = (self._seq % 0x7FFFFFFF) + 1
        return self._seq

    def _dump_each(self, entries: list[_Namespace], sock_of: Callable[[_Namespace], Any], request_of: Any,
                   parse: Any) -> tuple[dict[int, dict], dict[int, BaseException]]:
        """Send one dump request on every namespace's socket at once, then read each answer: (what `parse` made,
        per entry id; why it failed, per entry id). A socket whose answer failed is drained for the next one."""
        seq = self._next_seq()
        request = request_of(seq)
        sent, failed = [], {}
        for entry in entries:
            try:
                sock_of(entry).send(request)
                sent.append(entry)
            except OSError as error:
                failed[id(entry)] = error
        parsed: dict[int, dict] = {}
        for entry in sent:
            out: dict = {}
            try:
                _read_dump(sock_of(entry), self._buffer, self._view, parse, seq, out)
            except (OSError, _NoTable) as error:
                if isinstance(error, OSError):
                    _drain(sock_of(entry), self._buffer)
                failed[id(entry)] = error
                continue
            parsed[id(entry)] = out
        return parsed, failed

    def _refresh_names(self, entries: list[_Namespace]) -> dict[int, dict[int, tuple[str, tuple | None]]]:
        """RTM_GETLINK dumps: each namespace's ifindex -> name map; returns the parsed links per entry id."""
        parsed, failed = self._dump_each(entries, lambda e: e.route, getlink_request, parse_links)
        for entry in entries:
            if id(entry) in failed:
                entry.error = _netlink_error(failed[id(entry)])
            elif id(entry) in parsed:
                entry.names = {index: name for index, (name, _stats) in parsed[id(entry)].items()}
        return parsed

    def _probe_attack(self, entries: list[_Namespace]) -> None:
        """Which namespaces hold our nftables table (one GETOBJ dump each)."""
        candidates = [e for e in entries if e.nf is not None]
        if not candidates:
            return
        self._read_attack(candidates)

    def refresh_attack(self) -> None:
        """Look again for attack counters (after `install_attack_counters` ran elsewhere)."""
        self._probe_attack([e for e in self.namespaces if e.route is not None and not e.attack])

    def _read_attack(self, entries: list[_Namespace]) -> dict[int, dict[str, tuple[int, int]]]:
        parsed, failed = self._dump_each(entries, lambda e: e.nf, getobj_request, parse_counters)
        for entry in entries:
            # no table (or no answer): no attack counters there; a dump filtered on a missing table is just empty
            entry.attack = bool(parsed.get(id(entry))) and id(entry) not in failed
        return {key: counters for key, counters in parsed.items() if counters}

    # -- sampling -----------------------------------------------------------------------------------------

    def sample(self) -> list[CounterRow]:
        now = time.monotonic()
        if now - self._last_check >= self.check_every:
            self._last_check = now
            self._check_namespaces()
        entries = [e for e in self.namespaces if e.route is not None]
        attack = self._read_attack([e for e in entries if e.attack]) if self._attack_wanted else {}
        if self._stats_supported:
            stats = self._read_stats(entries)
        else:
            stats = {key: {index: s for index, (_n, s) in links.items() if s is not None}
                     for key, links in self._refresh_names(entries).items()}
        rows: list[CounterRow] = []
        suspicious: list[_Namespace] = []
        unknown: list[_Namespace] = []
        for entry in entries:
            per_index = stats.get(id(entry))
            if per_index is None:
                continue
            names = entry.names
            counters = attack.get(id(entry), {})
            seen = 0
            for ifindex, (rx_packets, tx_packets, rx_bytes, tx_bytes) in per_index.items():
                name = names.get(ifindex)
                if name is None:
                    unknown.append(entry)
                    continue
                if name == "lo":
                    continue
                seen += 1
                if counters:
                    arx_p, arx_b = counters.get(f"rx-{name}", (0, 0))
                    atx_p, atx_b = counters.get(f"tx-{name}", (0, 0))
                    rows.append(CounterRow(entry.node, name, rx_bytes, tx_bytes, rx_packets, tx_packets,
                                           arx_b + ETH_HLEN * arx_p, atx_b + ETH_HLEN * atx_p, arx_p, atx_p))
                else:
                    rows.append(CounterRow(entry.node, name, rx_bytes, tx_bytes, rx_packets, tx_packets))
            if not seen:
                suspicious.append(entry)
        if unknown:                      # a new interface: learn its name, report it from the next sample
            self._refresh_names(list({id(e): e for e in unknown}.values()))
        if suspicious:
            self._check_namespaces(suspicious)
        return rows

    def _read_stats(self, entries: list[_Namespace]) -> dict[int, dict[int, tuple[int, int, int, int]]]:
        parsed, failed = self._dump_each(entries, lambda e: e.route, getstats_request, parse_stats)
        unsupported = [e for e in failed.values() if isinstance(e, OSError) and e.errno in (errno.EOPNOTSUPP,
                                                                                          errno.EINVAL)]
        if unsupported and not parsed:
            self._stats_supported = False       # an old kernel: RTM_GETLINK from now on
            return {key: {i: s for i, (_n, s) in links.items() if s is not None}
                    for key, links in self._refresh_names(entries).items()}
        for entry in entries:
            if id(entry) in failed:
                entry.error = _netlink_error(failed[id(entry)])
        return parsed

    def _check_namespaces(self, entries: list[_Namespace] | None = None) -> None:
        """Drop namespaces whose handle is gone; reopen those replaced by a new namespace of the same name."""
        reopen = []
        for entry in entries if entries is not None else self.namespaces:
            if not entry.netns or entry.route is None:
                continue
            ident = _netns_id(entry.netns)
            if ident is None:
                entry.close()
                entry.error = "namespace removed"
                self.dropped.append(entry.node)
            elif ident != entry.ident:
                reopen.append(entry)
        if reopen:
            self._open(reopen)
        now = time.monotonic()
        if entries is None and self._attack_wanted and self._nf_supported and \
                now - self._last_probe >= ATTACK_PROBE_EVERY:
            self._last_probe = now
            self.refresh_attack()        # installed meanwhile by another process (a flooder starting)

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def attack_state(self) -> str:
        """'counting' (on every sampled node), 'counting on N of M nodes', 'not installed', or 'unavailable: …'."""
        if not self._attack_wanted:
            return "not read"
        if self._nf_supported is False:
            return "unavailable: this kernel has no nf_tables (attack counters stay 0)"
        live = [e for e in self.namespaces if e.route is not None]
        counting = sum(1 for e in live if e.attack)
        if counting == 0:
            return "not installed (the host agent or a starting flooder installs them)"
        if counting == len(live):
            return "counting"
        return f"counting on {counting} of {len(live)} nodes"

    @property
    def errors(self) -> dict[str, str]:
        return {e.node: e.error for e in self.namespaces if e.error}

    def close(self) -> None:
        for entry in self.namespaces:
            entry.close()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- installing attack counters --------------------------------------------------------------------------------
class AttackInstall:
    """What install_attack_counters did: namespaces newly counting, already counting, and failures."""

    def __init__(self) -> None:
        self.installed = 0
        self.already = 0
        self.failed: dict[str, str] = {}
        self.unavailable = False
        self.seconds = 0.0

    def __repr__(self) -> str:
        return (f"AttackInstall(installed={self.installed}, already={self.already}, failed={len(self.failed)}, "
                f"unavailable={self.unavailable}, seconds={self.seconds:.3f})")


def _read_acks(sock: socket.socket, buffer: bytearray, expected: int) -> int:
    """Read acks of a batch (answered inside send); returns the first non-zero errno, or 0."""
    first = 0
    got = 0
    deadline = time.monotonic() + 2.0
    while got < expected:
        try:
            length = sock.recv_into(buffer, RECV_BUFFER, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if first or time.monotonic() >= deadline:
                break           # after an error the kernel may not ack the rest of an aborted batch
            select.select([sock], [], [], 0.05)
            continue
        offset = 0
        while offset + 16 <= length:
            msg_len, msg_type, _flags, _seq, _pid = _NLMSG.unpack_from(buffer, offset)
            if msg_len < 16:
                break
            if msg_type == NLMSG_ERROR:
                got += 1
                code = -_ERRNO.unpack_from(buffer, offset + 16)[0]
                if code and not first:
                    first = code
            offset += (msg_len + 3) & ~3
    return first


def install_attack_counters(nodes: list[tuple[str, str]], sampler: Sampler | None = None,
                            tos: int = ATTACK_TOS) -> AttackInstall:
    """Count packets marked with DSCP tos>>2 per interface of every node (idempotent; see the module's doc).

    With a sampler, its sockets (and interface names) are used and it starts reading the counters at once;
    without, sockets are opened for the occasion. Returns what happened; where the kernel has no nf_tables,
    `unavailable` is set and nothing else happens."""
    started = time.perf_counter()
    result = AttackInstall()
    buffer = bytearray(RECV_BUFFER)
    if sampler is not None and sampler._attack_wanted:
        wanted = {(node, netns) for node, netns in nodes}
        entries = [e for e in sampler.namespaces if (e.node, e.netns) in wanted and e.route is not None]
        own = None
    else:
        entries = [_Namespace(node, netns) for node, netns in nodes]
        own = entries
        for entry, (sockets, ident, error) in zip(entries, open_sockets([e.netns for e in entries],
                                                                        (socket.NETLINK_ROUTE, NETLINK_NETFILTER))):
            entry.route, entry.nf, entry.ident, entry.error = sockets[0], sockets[1], ident, error
        live = [e for e in entries if e.route is not None]
        if live:
            _refresh_names_for(live, buffer)
    try:
        for entry in entries:
            if entry.error and entry.route is None:
                result.failed[entry.node] = entry.error
                continue
            if entry.nf is None:
                result.unavailable = True
                result.failed[entry.node] = "this kernel has no nf_tables"
                continue
            interfaces = sorted(name for name in entry.names.values() if name != "lo")
            messages = attack_batch(interfaces, tos)
            try:
                entry.nf.send(_batched(messages))
            except OSError as error:
                result.failed[entry.node] = f"nf_tables: {error.strerror or error}"
                continue
            code = _read_acks(entry.nf, buffer, len(messages))
            _drain(entry.nf, buffer)
            if code == errno.EEXIST:
                result.already += 1
                entry.attack = True
            elif code:
                if code in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ENOENT, errno.EOPNOTSUPP):
                    result.unavailable = True
                result.failed[entry.node] = f"nf_tables: {os.strerror(code)}"
            else:
                result.installed += 1
                entry.attack = True
    finally:
        if own is not None:
            for entry in own:
                entry.close()
    result.seconds = time.perf_counter() - started
    return result


def remove_attack_counters(nodes: list[tuple[str, str]]) -> int:
    """Delete the attack-counting table where it exists; returns in how many namespaces it was removed."""
    buffer = bytearray(RECV_BUFFER)
    removed = 0
    for sockets, _ident, _error in open_sockets([netns for _node, netns in nodes], (NETLINK_NETFILTER,)):
        sock = sockets[0]
        if sock is None:
            continue
        try:
            sock.send(_deltable_batch())
            if _read_acks(sock, buffer, 1) == 0:
                removed += 1
        finally:
            sock.close()
    return removed


def attack_state_of(netns: str) -> str:
    """'counting', 'not installed' or 'unavailable: …' for one namespace (for the CLI)."""
    with Sampler([("probe", netns)]) as sampler:
        return sampler.attack_state


def _refresh_names_for(entries: list[_Namespace], buffer: bytearray) -> None:
    view = memoryview(buffer)
    request = getlink_request(1)
    for entry in entries:
        links: dict[int, tuple[str, tuple | None]] = {}
        try:
            entry.route.send(request)
            _read_dump(entry.route, buffer, view, parse_links, 1, links)
        except OSError as error:
            entry.error = f"netlink: {error.strerror or error}"
            continue
        entry.names = {index: name for index, (name, _s) in links.items()}

