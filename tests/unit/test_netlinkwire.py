"""The netlink wire format leaf: packing and reading round trips, acks and their extended-ack text, dumps."""
import errno
import struct

import pytest
from pyroute2.netlink import nlmsg, nlmsgerr

from nestbed import netlinkwire as wire


def test_attr_pads_to_four_and_attributes_finds_each_payload():
    body = wire.string_attr(3, "eth0") + wire.u32_attr(28, 9) + wire.attr(1, b"\x02\0\0\0\0\x01") \
        + wire.nested(5, wire.be32_attr(1, -300))
    assert len(body) % 4 == 0 and len(wire.string_attr(3, "eth0")) == 12        # 4 + "eth0\0" + 3 of padding
    found = wire.attributes(body, 0, len(body))
    assert sorted(found) == [1, 3, 5, 28]                                      # NLA_F_NESTED masked off
    start, stop = found[3]
    assert body[start:stop] == b"eth0\0"
    assert struct.unpack_from("=I", body, found[28][0]) == (9,)
    assert body[found[1][0]:found[1][1]] == b"\x02\0\0\0\0\x01"
    inner = wire.attributes(body, *found[5])
    assert struct.unpack_from(">i", body, inner[1][0]) == (-300,)


def test_attributes_stops_at_a_broken_length():
    body = wire.u32_attr(1, 7) + b"\x02\0\x09\0" + wire.u32_attr(2, 8)
    assert list(wire.attributes(body, 0, len(body))) == [1]


def test_message_header_matches_pyroute2():
    encoded = wire.message(wire.RTM_GETLINK, wire.NLM_F_REQUEST | wire.NLM_F_DUMP, b"\0" * 16, seq=77)
    decoded = nlmsg(encoded)
    decoded.decode()
    header = decoded["header"]
    assert (header["length"], header["type"], header["flags"], header["sequence_number"], header["pid"]) \
        == (len(encoded), wire.RTM_GETLINK, 0x301, 77, 0)


def test_numbered_and_with_flags_change_only_the_header():
    encoded = wire.message(wire.RTM_NEWROUTE, wire.NLM_F_REQUEST | wire.NLM_F_CREATE, b"body")
    numbered = wire.numbered(encoded, 12, wire.NLM_F_ACK)
    assert wire.HEADER.unpack_from(numbered) == (len(encoded), wire.RTM_NEWROUTE,
                                                 wire.NLM_F_REQUEST | wire.NLM_F_CREATE | wire.NLM_F_ACK, 12, 0)
    assert wire.numbered(encoded, 3)[6:8] == encoded[6:8]
    replaced = wire.with_flags(numbered, wire.NLM_F_REQUEST | wire.NLM_F_REPLACE)
    assert wire.HEADER.unpack_from(replaced)[2:4] == (wire.NLM_F_REQUEST | wire.NLM_F_REPLACE, 12)
    assert replaced[16:] == numbered[16:] == b"body"


def _ack(seq, code, flags=0, tlvs=b"", original=b""):
    return wire.message(wire.NLMSG_ERROR, flags, struct.pack("=i", -code) + (original or wire.HEADER.pack(
        16, wire.RTM_NEWLINK, 5, seq, 0)) + tlvs, seq)


def test_acks_yield_seq_and_errno_of_every_ack_only():
    data = _ack(1, 0) + wire.message(wire.NLMSG_DONE, 0, b"\0" * 4, 2) + _ack(2, errno.EEXIST) + _ack(3, 0)
    assert [(seq, code) for seq, code, _offset in wire.acks(data, len(data))] \
        == [(1, 0), (2, errno.EEXIST), (3, 0)]
    assert [seq for seq, _c, _o in wire.acks(data, len(_ack(1, 0)) + 5)] == [1]        # only whole headers


def test_acks_decode_what_pyroute2_encodes():
    msg = nlmsgerr()
    msg["header"]["type"], msg["header"]["sequence_number"] = wire.NLMSG_ERROR, 9
    msg["error"] = -errno.ENODEV
    msg.encode()
    assert [(seq, code) for seq, code, _o in wire.acks(bytes(msg.data), len(msg.data))] == [(9, errno.ENODEV)]


def test_error_message_of_capped_and_full_acks():
    text = wire.attr(wire.NLMSGERR_ATTR_MSG, b"Unknown device type\0")
    capped = _ack(4, errno.EOPNOTSUPP, wire.NLM_F_CAPPED | wire.NLM_F_ACK_TLVS, text)
    original = wire.message(wire.RTM_NEWLINK, 5, wire.string_attr(3, "eth0"), 4)
    full = _ack(4, errno.EOPNOTSUPP, wire.NLM_F_ACK_TLVS, text, original)
    data = _ack(3, 0) + capped + full
    offsets = [offset for _s, _c, offset in wire.acks(data, len(data))]
    assert [wire.error_message(data, offset) for offset in offsets] == ["", "Unknown device type",
                                                                        "Unknown device type"]
    assert wire.error_message(_ack(4, errno.EPERM), 0) == ""          # no TLVs


def test_walk_dump_hands_over_its_messages_until_done():
    seen = []
    data = wire.message(wire.RTM_NEWLINK, wire.NLM_F_MULTI, b"a" * 16, 5) \
        + wire.message(wire.RTM_NEWLINK, wire.NLM_F_MULTI, b"b" * 16, 4) \
        + wire.message(wire.RTM_NEWADDR, wire.NLM_F_MULTI, b"c" * 12, 5)
    assert not wire.walk_dump(data, len(data), 5, wire.RTM_NEWLINK, lambda start, end: seen.append((start, end)))
    assert seen == [(0, 32)]
    done = wire.message(wire.NLMSG_DONE, wire.NLM_F_MULTI, b"\0" * 4, 5)
    assert wire.walk_dump(done, len(done), 5, wire.RTM_NEWLINK, seen.append)
    assert wire.walk_dump(_ack(5, 0), 36, 5, wire.RTM_NEWLINK, seen.append)        # an ack ends it too


def test_walk_dump_raises_the_error_of_its_own_sequence():
    data = _ack(6, errno.EPERM) + _ack(5, errno.EOPNOTSUPP)
    with pytest.raises(wire.DumpError) as caught:
        wire.walk_dump(data, len(data), 5, wire.RTM_NEWSTATS, lambda start, end: None)
    assert caught.value.errno == errno.EOPNOTSUPP and caught.value.strerror
