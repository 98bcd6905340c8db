"""The netlink wire format: message headers, attributes, acks and dumps, and the rtnetlink numbers nestbed uses.

A leaf (it imports nothing from nestbed): realize/netlink.py (rtnetlink batches), the counter sampler
(agent/sampler.py) and the nftables attack counters (agent/attack_counters.py) all pack and read netlink with
it. Everything is host byte order ("=" in struct), as the kernel speaks it.

agent/guestboot.py keeps its own ~20-line ack reader on purpose: it is the first program of every VM and imports
only what the interpreter has built in (each import costs tens of milliseconds under software emulation). This
module needs struct, whose C part (_struct) is a separate shared library in some builds (pyenv's python3, which
then runs in the VMs too); without struct the hot paths here (thousands of acks a deploy, a dump per namespace
every second) would be several times slower.
"""
from __future__ import annotations

import os
import struct

TYPE_CHECKING = False     # not typing's: modules the VM guest imports stay light (see agent/guestboot.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# -- netlink ------------------------------------------------------------------------------------------------
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200          # flags of an ack (NLMSG_ERROR)
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
NETLINK_NETFILTER = 12                               # the socket protocol of nf_tables (NETLINK_ROUTE is 0)

HEADER = struct.Struct("=IHHII")                     # struct nlmsghdr: length, type, flags, seq, pid
ATTR_HEADER = struct.Struct("=HH")                   # struct nlattr: length, type
ERRNO = struct.Struct("=i")                          # struct nlmsgerr starts with the (negative) errno
U32 = struct.Struct("=I")
_FLAGS = struct.Struct("=H")
_FLAGS_SEQ = struct.Struct("=HI")
_BE32 = struct.Struct(">i")

# -- rtnetlink ----------------------------------------------------------------------------------------------
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
RTM_DELQDISC = 37
RTM_NEWSTATS, RTM_GETSTATS = 92, 94
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 10, 18
IFLA_STATS64, IFLA_AF_SPEC, IFLA_NET_NS_FD, IFLA_EXT_MASK = 23, 26, 28, 29
IFINFO = struct.Struct("=BxHiII")                    # struct ifinfomsg: family, type, index, flags, change
TCMSG = struct.Struct("=BxxxiIII")                   # struct tcmsg: family, ifindex, handle, parent, info


class DumpError(OSError):
    """The kernel answered a dump request with an error (errno and its text)."""


# -- packing --------------------------------------------------------------------------------------------------
def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes (a nest is an attribute whose payload is attributes)."""
    length = 4 + len(payload)
    return ATTR_HEADER.pack(length, kind) + payload + b"\0" * (-length % 4)


def nested(kind: int, *parts: bytes) -> bytes:
    """A nest flagged NLA_F_NESTED (nf_tables wants the flag; rtnetlink's nests go without: use attr)."""
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, U32.pack(value))


def be32_attr(kind: int, value: int) -> bytes:
    """A signed 32-bit attribute in network byte order (nf_tables' numbers)."""
    return attr(kind, _BE32.pack(value))


def string_attr(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def message(msg_type: int, flags: int, body: bytes, seq: int = 0) -> bytes:
    """A whole message: header (length, type, flags, seq, pid 0) and body."""
    return HEADER.pack(HEADER.size + len(body), msg_type, flags, seq, 0) + body


def with_flags(encoded: bytes, flags: int) -> bytes:
    """The message with its header's flags replaced."""
    out = bytearray(encoded)
    _FLAGS.pack_into(out, 6, flags)
    return bytes(out)


def numbered(encoded: bytes, seq: int, add_flags: int = 0) -> bytes:
    """The message numbered `seq` (acks and dump replies name their request by it), with `add_flags` set."""
    out = bytearray(encoded)
    _FLAGS_SEQ.pack_into(out, 6, _FLAGS.unpack_from(out, 6)[0] | add_flags, seq)
    return bytes(out)


# -- reading --------------------------------------------------------------------------------------------------
def attributes(data: bytes | memoryview, pos: int, end: int) -> dict[int, tuple[int, int]]:
    """The attributes in data[pos:end]: type (flags masked off) -> (payload start, payload end)."""
    found = {}
    unpack = ATTR_HEADER.unpack_from
    while pos + 4 <= end:
        attr_len, attr_type = unpack(data, pos)
        if attr_len < 4:
            break
        found[attr_type & NLA_TYPE_MASK] = (pos + 4, pos + attr_len)
        pos += (attr_len + 3) & ~3
    return found


def acks(data: bytes | bytearray | memoryview, length: int) -> Iterator[tuple[int, int, int]]:
    """(seq, errno, offset) of every ack (NLMSG_ERROR) in data[:length]; errno 0 means success."""
    offset = 0
    unpack = HEADER.unpack_from
    while offset + HEADER.size <= length:
        msg_len, msg_type, _flags, seq, _pid = unpack(data, offset)
        if msg_len < HEADER.size:
            break
        if msg_type == NLMSG_ERROR:
            yield seq, -ERRNO.unpack_from(data, offset + HEADER.size)[0], offset
        offset += (msg_len + 3) & ~3


def error_message(data: bytes | memoryview, offset: int) -> str:
    """The kernel's extended-ack text (NLMSGERR_ATTR_MSG) of the ack at `offset`, or ""."""
    msg_len, _type, flags, _seq, _pid = HEADER.unpack_from(data, offset)
    if not flags & NLM_F_ACK_TLVS:
        return ""
    original = offset + HEADER.size + ERRNO.size         # the request's header, echoed
    pos = original + (HEADER.size if flags & NLM_F_CAPPED else (HEADER.unpack_from(data, original)[0] + 3) & ~3)
    found = attributes(data, pos, offset + msg_len)
    if NLMSGERR_ATTR_MSG not in found:
        return ""
    start, stop = found[NLMSGERR_ATTR_MSG]
    return bytes(data[start:stop]).rstrip(b"\0").decode(errors="replace")


def walk_dump(data: bytes | memoryview, length: int, seq: int, wanted: int,
              handle: Callable[[int, int], None]) -> bool:
    """Call handle(offset, end) for every message of type `wanted` of this dump (seq) in data[:length]. True once
    the dump ended (NLMSG_DONE, or an ack); an error reply raises DumpError with its errno."""
    offset = 0
    unpack = HEADER.unpack_from
    while offset + HEADER.size <= length:
        msg_len, msg_type, _flags, msg_seq, _pid = unpack(data, offset)
        if msg_len < HEADER.size:
            break
        if msg_seq == seq:
            if msg_type == wanted:
                handle(offset, offset + msg_len)
            elif msg_type == NLMSG_DONE:
                return True
            elif msg_type == NLMSG_ERROR:
                code = -ERRNO.unpack_from(data, offset + HEADER.size)[0]
                if code:
                    raise DumpError(code, os.strerror(code))
                return True
        offset += (msg_len + 3) & ~3
    return False
