"""The nftables attack counters' messages and counter-object parsing, checked against pyroute2's decoders."""
import errno
import struct

import pytest
from netlink_replies import done, encode, error
from pyroute2.netlink import nla
from pyroute2.netlink.nfnetlink import nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import nft_rule_msg

from nestbed import netlinkwire as wire
from nestbed.agent import attack_counters


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
    return encode(msg, (10 << 8) | attack_counters.NFT_MSG_NEWOBJ, seq)


def test_parse_counter_objects():
    data = _obj("rx-eth0", 3, 384, 11) + _obj("tx-eth0", 2**40, 2**50, 11) + done(11)
    out = {}
    assert attack_counters.parse_counters(data, len(data), 11, out)
    assert out == {"rx-eth0": (3, 384), "tx-eth0": (2**40, 2**50)}


def test_missing_table_is_not_an_error_but_no_table():
    with pytest.raises(attack_counters.NoTable):
        attack_counters.parse_counters(error(4, errno.ENOENT), 36, 4, {})
    with pytest.raises(wire.DumpError):
        attack_counters.parse_counters(error(4, errno.EPERM), 36, 4, {})


def test_attack_rule_decodes_as_dscp_ifname_objref():
    messages = attack_counters.attack_batch(["eth0", "eth1"])
    kinds = [struct.unpack_from("=H", m, 4)[0] & 0xFF for m in messages]
    assert kinds == [attack_counters.NFT_MSG_NEWTABLE, attack_counters.NFT_MSG_NEWCHAIN,
                     attack_counters.NFT_MSG_NEWCHAIN] \
        + [attack_counters.NFT_MSG_NEWOBJ, attack_counters.NFT_MSG_NEWRULE] * 4
    rule = nft_rule_msg(messages[4])
    rule.decode()
    assert rule.get_attr("NFTA_RULE_TABLE") == "nestbed" and rule.get_attr("NFTA_RULE_CHAIN") == "attack_in"
    exprs = [e.get_attr("NFTA_EXPR_NAME") for e in rule.get_attr("NFTA_RULE_EXPRESSIONS")]
    assert exprs == ["payload", "bitwise", "cmp", "meta", "cmp", "objref"]
    raw = bytes(messages[4])
    assert bytes([attack_counters.ATTACK_TOS]) in raw and b"eth0\0" in raw and b"rx-eth0\0" in raw
    assert attack_counters.ATTACK_DSCP == 8 and attack_counters.ATTACK_TOS == 0x20


def test_batch_numbers_messages_between_begin_and_end():
    body = attack_counters.batched(attack_counters.attack_batch(["eth0"]), first_seq=10)
    offset, kinds, seqs = 0, [], []
    while offset < len(body):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", body, offset)
        kinds.append(kind)
        seqs.append(seq)
        offset += length
    assert kinds[0] == attack_counters.NFNL_MSG_BATCH_BEGIN and kinds[-1] == attack_counters.NFNL_MSG_BATCH_END
    assert seqs[1:-1] == list(range(10, 10 + len(kinds) - 2))
