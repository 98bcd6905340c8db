"""Kernel-like netlink replies for parser tests: pyroute2 encodes the messages, struct the done/error ones."""
import struct

from pyroute2.netlink import NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from nestbed import netlinkwire as wire

STATS_FIELDS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped",
                "tx_dropped", "multicast", "collisions")


def encode(msg, msg_type, seq, flags=wire.NLM_F_MULTI):
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def done(seq):
    return struct.pack("=IHHIIi", 20, NLMSG_DONE, wire.NLM_F_MULTI, seq, 0, 0)


def error(seq, code):
    return struct.pack("=IHHIIi", 36, NLMSG_ERROR, 0, seq, 0, -code) + struct.pack("=IHHII", 16, 0, 0, seq, 0)


def stats64(seed):
    return {name: seed * 1000 + k for k, name in enumerate(STATS_FIELDS)}


def four(seed):
    s = stats64(seed)
    return (s["rx_packets"], s["tx_packets"], s["rx_bytes"], s["tx_bytes"])


def link(index, name, seq, seed, extra=()):
    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_MTU", 1500), *extra, ("IFLA_STATS64", stats64(seed)),
                    ("IFLA_TXQLEN", 1000)]
    return encode(msg, wire.RTM_NEWLINK, seq)
