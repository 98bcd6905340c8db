"""Counter sampling's hand-written netlink parsing, checked against messages pyroute2 encodes; the sampler itself."""
import errno
import socket
import struct

import pytest
from netlink_replies import done, encode, error, four, stats64
from pyroute2.netlink.rtnl.ifstatsmsg import ifstatsmsg

from nestbed import netlinkwire as wire
from nestbed.agent import netns_sockets, sampler
from nestbed.agent.store import CounterRow


def _stats(index, seq, seed):
    msg = ifstatsmsg()
    msg["ifindex"] = index
    msg["filter_mask"] = 1
    msg["attrs"] = [("IFLA_STATS_LINK_64", stats64(seed))]
    return encode(msg, wire.RTM_NEWSTATS, seq)


def test_parse_stats_dump():
    data = _stats(1, 3, 5) + _stats(4, 3, 6) + _stats(9, 3, 7)
    out = {}
    assert not sampler.parse_stats(data, len(data), 3, out)
    assert sampler.parse_stats(done(3), 20, 3, out)
    assert out == {1: four(5), 4: four(6), 9: four(7)}


def test_parse_stats_of_a_partial_buffer_uses_only_length():
    data = _stats(2, 1, 1) + done(1)
    buffer = bytearray(65536)
    buffer[:len(data)] = data
    buffer[len(data):len(data) + 40] = _stats(3, 1, 2)[:40]     # garbage after the valid length
    out = {}
    assert sampler.parse_stats(memoryview(buffer), len(data), 1, out)
    assert out == {2: four(1)}


def test_dump_errors_raise():
    with pytest.raises(wire.DumpError) as caught:
        sampler.parse_stats(error(5, errno.EOPNOTSUPP), 36, 5, {})
    assert caught.value.errno == errno.EOPNOTSUPP
    with pytest.raises(wire.DumpError):
        netns_sockets.parse_links(error(5, errno.EPERM), 36, 5, {})


def test_requests_layout():
    request = sampler.getstats_request(42)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), wire.RTM_GETSTATS, 0x301, 42)
    assert struct.unpack_from("=BxHiI", request, 16) == (0, 0, 0, 1)    # every ifindex, IFLA_STATS_LINK_64 only


def test_sampler_in_this_namespace_skips_lo():
    """No root needed: RTM_GETSTATS/GETLINK work for anyone in their own namespace."""
    names = {name for _index, name in socket.if_nameindex()}
    with sampler.Sampler([("self", "")]) as counters:
        rows = counters.sample()
        again = counters.sample()
    assert {r.iface for r in rows} == names - {"lo"}
    assert all(isinstance(r, CounterRow) and r.node == "self" and r.rx_bytes >= 0 for r in rows)
    before = {r.iface: r for r in rows}
    assert all(r.rx_packets >= before[r.iface].rx_packets for r in again if r.iface in before)


def test_sampler_drops_missing_namespace():
    with sampler.Sampler([("ghost", "nestbed-no-such-namespace")]) as counters:
        assert counters.sample() == []
        assert "ghost" in counters.errors
