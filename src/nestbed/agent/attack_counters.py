"""Attack traffic counted apart: nftables counters of DSCP-marked packets, per interface of every node.

Attack traffic is what the flooder marks with DSCP ATTACK_DSCP (CS1, TOS byte 0x20). It is counted by
nftables: `install_attack_counters` puts in each namespace a table `ip nestbed` with a prerouting and a
postrouting chain, and per interface a rule "dscp == 8, iifname/oifname == IF -> named counter rx-IF/tx-IF".
The sampler (agent/sampler.py) reads those counters with an NFT_MSG_GETOBJ dump (`getobj_request`,
`parse_counters`) on a NETLINK_NETFILTER socket of the namespace. (This kernel has no tc gact/flower/matchall
actions, so tc filters could not count bytes; nf_tables can, and is built into every distribution kernel.)
Where nf_tables is missing, attack counters stay 0 and the sampler's `attack_state` says why.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

TYPE_CHECKING = False     # not typing's: this module may run in a guest agent, where imports cost boot time
if TYPE_CHECKING:
    from collections.abc import Iterable

    from nestbed.agent.sampler import Sampler

from nestbed import netlinkwire as wire
from nestbed.agent.netns_sockets import RECV_BUFFER, Namespace, drain, open_sockets, read_names

ATTACK_DSCP = 8                   # CS1; the flooder sets IP_TOS = ATTACK_DSCP << 2
ATTACK_TOS = ATTACK_DSCP << 2     # 0x20: `ping -Q 0x20` sends attack-marked packets
ATTACK_TABLE = "nestbed"          # nftables table (family ip) holding the attack counters

# -- nfnetlink / nf_tables --------------------------------------------------------------------------------------
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

_NFGEN = struct.Struct("=BBH")               # struct nfgenmsg: family, version, res_id (big endian)
_BE64 = struct.Struct(">Q")
_string, _be32, _nest = wire.string_attr, wire.be32_attr, wire.nested     # short names: the rules below nest deep


# -- encoding -------------------------------------------------------------------------------------------------
def _nfmsg(msg_type: int, flags: int, body: bytes, family: int = NFPROTO_IPV4, seq: int = 0) -> bytes:
    return wire.message((NFNL_SUBSYS_NFTABLES << 8) | msg_type, flags, _NFGEN.pack(family, 0, 0) + body, seq)


def getobj_request(seq: int = 0, table: str = ATTACK_TABLE) -> bytes:
    """NFT_MSG_GETOBJ dump of the counters of our table."""
    return _nfmsg(NFT_MSG_GETOBJ, wire.NLM_F_REQUEST | wire.NLM_F_DUMP,
                  _string(NFTA_OBJ_TABLE, table) + _be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER), seq=seq)


def _expr(name: str, *attrs: bytes) -> bytes:
    return _nest(NFTA_LIST_ELEM, _string(NFTA_EXPR_NAME, name), _nest(NFTA_EXPR_DATA, *attrs))


def _data(kind: int, value: bytes) -> bytes:
    return _nest(kind, wire.attr(NFTA_DATA_VALUE, value))


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
            + wire.attr(NFTA_RULE_USERDATA, userdata))


def attack_batch(interfaces: Iterable[str], tos: int = ATTACK_TOS) -> list[bytes]:
    """The nf_tables messages that install attack counting on these interfaces (without batch begin/end).

    The table is created with NLM_F_EXCL: where it exists already the whole batch fails with EEXIST and
    nothing changes (counters keep their values)."""
    create = wire.NLM_F_REQUEST | wire.NLM_F_CREATE | wire.NLM_F_ACK
    messages = [_nfmsg(NFT_MSG_NEWTABLE, create | wire.NLM_F_EXCL, _string(NFTA_TABLE_NAME, ATTACK_TABLE))]
    for chain, hook, priority in (("attack_in", NF_INET_PRE_ROUTING, -300), ("attack_out", NF_INET_POST_ROUTING, 300)):
        messages.append(_nfmsg(NFT_MSG_NEWCHAIN, create, _string(NFTA_CHAIN_TABLE, ATTACK_TABLE)
                               + _string(NFTA_CHAIN_NAME, chain)
                               + _nest(NFTA_CHAIN_HOOK, _be32(NFTA_HOOK_HOOKNUM, hook),
                                       _be32(NFTA_HOOK_PRIORITY, priority))
                               + _string(NFTA_CHAIN_TYPE, "filter")))
    for iface in interfaces:
        for direction, chain, key in (("rx", "attack_in", NFT_META_IIFNAME), ("tx", "attack_out", NFT_META_OIFNAME)):
            counter = f"{direction}-{iface}"
            messages.append(_nfmsg(NFT_MSG_NEWOBJ, create, _string(NFTA_OBJ_TABLE, ATTACK_TABLE)
                                   + _string(NFTA_OBJ_NAME, counter) + _be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER)
                                   + _nest(NFTA_OBJ_DATA, wire.attr(NFTA_COUNTER_BYTES, _BE64.pack(0)),
                                           wire.attr(NFTA_COUNTER_PACKETS, _BE64.pack(0)))))
            messages.append(_nfmsg(NFT_MSG_NEWRULE, create, _attack_rule(chain, key, iface, counter, tos)))
    return messages


def batched(messages: list[bytes], first_seq: int = 1) -> bytes:
    """Wrap nf_tables messages in BATCH_BEGIN/END, numbering them first_seq, first_seq + 1, …"""
    res_id = _NFGEN.pack(0, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
    body = bytearray(wire.message(NFNL_MSG_BATCH_BEGIN, wire.NLM_F_REQUEST, res_id, first_seq - 1))
    for k, message in enumerate(messages):
        body += wire.numbered(message, first_seq + k)
    body += wire.message(NFNL_MSG_BATCH_END, wire.NLM_F_REQUEST, res_id, first_seq + len(messages))
    return bytes(body)


def _deltable_batch() -> bytes:
    return batched([_nfmsg(NFT_MSG_DELTABLE, wire.NLM_F_REQUEST | wire.NLM_F_ACK,
                           _string(NFTA_TABLE_NAME, ATTACK_TABLE))])


# -- parsing --------------------------------------------------------------------------------------------------
class NoTable(Exception):
    """The namespace has no attack-counting table (the GETOBJ dump answered ENOENT)."""


def parse_counters(data: bytes | memoryview, length: int, seq: int, out: dict[str, tuple[int, int]]) -> bool:
    """Parse NFT_MSG_NEWOBJ (counter) messages: out[name] = (packets, bytes). An ENOENT reply (no table) clears
    out and raises NoTable; other errors raise netlinkwire.DumpError."""
    def counter(offset: int, end: int) -> None:
        attrs = wire.attributes(data, offset + 20, end)
        if NFTA_OBJ_NAME in attrs and NFTA_OBJ_DATA in attrs:
            start, stop = attrs[NFTA_OBJ_NAME]
            name = bytes(data[start:stop]).split(b"\0", 1)[0].decode()
            inner = wire.attributes(data, *attrs[NFTA_OBJ_DATA])
            packets = _BE64.unpack_from(data, inner[NFTA_COUNTER_PACKETS][0])[0] \
                if NFTA_COUNTER_PACKETS in inner else 0
            nbytes = _BE64.unpack_from(data, inner[NFTA_COUNTER_BYTES][0])[0] if NFTA_COUNTER_BYTES in inner else 0
            out[name] = (packets, nbytes)
    try:
        return wire.walk_dump(data, length, seq, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ, counter)
    except wire.DumpError as error:
        if error.errno == errno.ENOENT:
            out.clear()
            raise NoTable() from None
        raise


# -- installing and removing ------------------------------------------------------------------------------------
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
        for _seq, code, _offset in wire.acks(buffer, length):
            got += 1
            if code and not first:
                first = code
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
    if sampler is not None and sampler.reads_attack:
        wanted = {(node, netns) for node, netns in nodes}
        entries = [e for e in sampler.namespaces if (e.node, e.netns) in wanted and e.route is not None]
        own = None
    else:
        entries = [Namespace(node, netns) for node, netns in nodes]
        own = entries
        for entry, (sockets, ident, error) in zip(entries, open_sockets(
                [e.netns for e in entries], (socket.NETLINK_ROUTE, wire.NETLINK_NETFILTER))):
            entry.route, entry.nf, entry.ident, entry.error = sockets[0], sockets[1], ident, error
        live = [e for e in entries if e.route is not None]
        if live:
            read_names(live, buffer)
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
                entry.nf.send(batched(messages))
            except OSError as error:
                result.failed[entry.node] = f"nf_tables: {error.strerror or error}"
                continue
            code = _read_acks(entry.nf, buffer, len(messages))
            drain(entry.nf, buffer)
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
    for sockets, _ident, _error in open_sockets([netns for _node, netns in nodes], (wire.NETLINK_NETFILTER,)):
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
