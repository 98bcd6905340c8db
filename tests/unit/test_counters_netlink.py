"""Counter sampling's hand-written netlink parsing, checked against messages pyroute2 encodes."""
import errno
import socket
import struct

import pytest
from pyroute2.netlink import NLMSG_DONE, NLMSG_ERROR, nla
from pyroute2.netlink.nfnetlink import nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import nft_rule_msg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ifstatsmsg import ifstatsmsg

from nestbed.agent import counters
from nestbed.agent.store import CounterRow

STATS_FIELDS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped",
                "tx_dropped", "multicast", "collisions")


def _encode(msg, msg_type, seq, flags=counters.NLM_F_MULTI):
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def _done(seq):
    return struct.pack("=IHHIIi", 20, NLMSG_DONE, counters.NLM_F_MULTI, seq, 0, 0)


def _error(seq, code):
    return struct.pack("=IHHIIi", 36, NLMSG_ERROR, 0, seq, 0, -code) + struct.pack("=IHHII", 16, 0, 0, seq, 0)


def _stats64(seed):
    return {name: seed * 1000 + k for k, name in enumerate(STATS_FIELDS)}


def _link(index, name, seq, seed, extra=()):
    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_MTU", 1500), *extra, ("IFLA_STATS64", _stats64(seed)),
                    ("IFLA_TXQLEN", 1000)]
    return _encode(msg, counters.RTM_NEWLINK, seq)


def _stats(index, seq, seed):
    msg = ifstatsmsg()
    msg["ifindex"] = index
    msg["filter_mask"] = 1
    msg["attrs"] = [("IFLA_STATS_LINK_64", _stats64(seed))]
    return _encode(msg, counters.RTM_NEWSTATS, seq)


def _four(seed):
    s = _stats64(seed)
    return (s["rx_packets"], s["tx_packets"], s["rx_bytes"], s["tx_bytes"])


def test_parse_links_names_and_stats64():
    data = _link(1, "lo", 7, 1) + _link(2, "eth0", 7, 2, extra=[("IFLA_ADDRESS", "02:00:00:00:00:01")]) \
        + _link(15, "eth-longname1", 7, 3) + _done(7)
    out = {}
    assert counters.parse_links(data, len(data), 7, out)
    assert out == {1: ("lo", _four(1)), 2: ("eth0", _four(2)), 15: ("eth-longname1", _four(3))}


def test_parse_links_needs_done_and_ignores_other_sequences():
    data = _link(2, "stale", 6, 9) + _link(3, "eth1", 8, 4)
    out = {}
    assert not counters.parse_links(data, len(data), 8, out)     # no NLMSG_DONE yet: read on
    assert out == {3: ("eth1", _four(4))}


def test_parse_stats_dump():
    data = _stats(1, 3, 5) + _stats(4, 3, 6) + _stats(9, 3, 7)
    out = {}
    assert not counters.parse_stats(data, len(data), 3, out)
    assert counters.parse_stats(_done(3), 20, 3, out)
    assert out == {1: _four(5), 4: _four(6), 9: _four(7)}


def test_parse_stats_of_a_partial_buffer_uses_only_length():
    data = _stats(2, 1, 1) + _done(1)
    buffer = bytearray(65536)
    buffer[:len(data)] = data
    buffer[len(data):len(data) + 40] = _stats(3, 1, 2)[:40]     # garbage after the valid length
    out = {}
    assert counters.parse_stats(memoryview(buffer), len(data), 1, out)
    assert out == {2: _four(1)}


def test_dump_errors_raise():
    with pytest.raises(counters.DumpError) as caught:
        counters.parse_stats(_error(5, errno.EOPNOTSUPP), 36, 5, {})
    assert caught.value.errno == errno.EOPNOTSUPP
    with pytest.raises(counters.DumpError):
        counters.parse_links(_error(5, errno.EPERM), 36, 5, {})


def test_requests_layout():
    request = counters.getstats_request(42)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), counters.RTM_GETSTATS, 0x301, 42)
    assert struct.unpack_from("=BxHiI", request, 16) == (0, 0, 0, 1)    # every ifindex, IFLA_STATS_LINK_64 only
    link = counters.getlink_request(3)
    assert struct.unpack_from("=IHHI", link)[1:] == (counters.RTM_GETLINK, 0x301, 3)


class nft_obj_msg(nfgen_msg):
    """pyroute2 has no object message; this follows linux/netfilter/nf_tables.h (NFTA_OBJ_*)."""
    nla_map = (("NFTA_OBJ_UNSPEC", "none"), ("NFTA_OBJ_TABLE", "asciiz"), ("NFTA_OBJ_NAME", "asciiz"),
               ("NFTA_OBJ_TYPE", "be32"), ("NFTA_OBJ_DATA", "counter"), ("NFTA_OBJ_USE", "be32"),
               ("NFTA_OBJ_HANDLE", "be64"), ("NFTA_OBJ_PAD", "hex"))

    class counter(nla):
        nla_flags = 0x8000
        nla_map = (("NFTA_COUNTER_UNSPEC", "none"), ("NFTA_COUNTER_BYTES", "be64"),
                   ("NFTA_COUNTER_PACKETS", "be64"), ("NFTA_COUNTER_PAD", "hex"))


def _obj(name, packets, nbytes, seq):
    msg = nft_obj_msg()
    msg["nfgen_family"] = 2
    msg["attrs"] = [("NFTA_OBJ_TABLE", "nestbed"), ("NFTA_OBJ_NAME", name), ("NFTA_OBJ_TYPE", 1),
                    ("NFTA_OBJ_DATA", {"attrs": [("NFTA_COUNTER_BYTES", nbytes), ("NFTA_COUNTER_PACKETS", packets)]}),
                    ("NFTA_OBJ_USE", 1), ("NFTA_OBJ_HANDLE", 7)]
    return _encode(msg, (10 << 8) | counters.NFT_MSG_NEWOBJ, seq)


def test_parse_counter_objects():
    data = _obj("rx-eth0", 3, 384, 11) + _obj("tx-eth0", 2**40, 2**50, 11) + _done(11)
    out = {}
    assert counters.parse_counters(data, len(data), 11, out)
    assert out == {"rx-eth0": (3, 384), "tx-eth0": (2**40, 2**50)}


def test_missing_table_is_not_an_error_but_no_table():
    with pytest.raises(counters._NoTable):
        counters.parse_counters(_error(4, errno.ENOENT), 36, 4, {})
    with pytest.raises(counters.DumpError):
        counters.parse_counters(_error(4, errno.EPERM), 36, 4, {})


def test_attack_rule_decodes_as_dscp_ifname_objref():
    messages = counters.attack_batch(["eth0", "eth1"])
    kinds = [struct.unpack_from("=H", m, 4)[0] & 0xFF for m in messages]
    assert kinds == [counters.NFT_MSG_NEWTABLE, counters.NFT_MSG_NEWCHAIN, counters.NFT_MSG_NEWCHAIN]\
        + [counters.NFT_MSG_NEWOBJ, counters.NFT_MSG_NEWRULE] * 4
    rule = nft_rule_msg(messages[4])
    rule.decode()
    assert rule.get_attr("NFTA_RULE_TABLE") == "nestbed" and rule.get_attr("NFTA_RULE_CHAIN") == "attack_in"
    exprs = [e.get_attr("NFTA_EXPR_NAME") for e in rule.get_attr("NFTA_RULE_EXPRESSIONS")]
    assert exprs == ["payload", "bitwise", "cmp", "meta", "cmp", "objref"]
    raw = bytes(messages[4])
    assert bytes([counters.ATTACK_TOS]) in raw and b"eth0\0" in raw and b"rx-eth0\0" in raw
    assert counters.ATTACK_DSCP == 8 and counters.ATTACK_TOS == 0x20


def test_batch_numbers_messages_between_begin_and_end():
    body = counters._batched(counters.attack_batch(["eth0"]), first_seq=10)
    offset, kinds, seqs = 0, [], []
    while offset < len(body):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", body, offset)
        kinds.append(kind)
        seqs.append(seq)
        offset += length
    assert kinds[0] == counters.NFNL_MSG_BATCH_BEGIN and kinds[-1] == counters.NFNL_MSG_BATCH_END
    assert seqs[1:-1] == list(range(10, 10 + len(kinds) - 2))


def test_sampler_in_this_namespace_skips_lo():
    """No root needed: RTM_GETSTATS/GETLINK work for anyone in their own namespace."""
    names = {name for _index, name in socket.if_nameindex()}
    with counters.Sampler([("self", "")]) as sampler:
        rows = sampler.sample()
        again = sampler.sample()
    assert {r.iface for r in rows} == names - {"lo"}
    assert all(isinstance(r, CounterRow) and r.node == "self" and r.rx_bytes >= 0 for r in rows)
    before = {r.iface: r for r in rows}
    assert all(r.rx_packets >= before[r.iface].rx_packets for r in again if r.iface in before)


def test_sampler_drops_missing_namespace():
    with counters.Sampler([("ghost", "nestbed-no-such-namespace")]) as sampler:
        assert sampler.sample() == []
        assert "ghost" in sampler.errors
