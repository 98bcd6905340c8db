"""Interface-name dumps (RTM_GETLINK) of the per-namespace sockets, checked against messages pyroute2 encodes."""
import struct

from netlink_replies import done, four, link

from nestbed import netlinkwire as wire
from nestbed.agent import netns_sockets


def test_parse_links_names_and_stats64():
    data = link(1, "lo", 7, 1) + link(2, "eth0", 7, 2, extra=[("IFLA_ADDRESS", "02:00:00:00:00:01")]) \
        + link(15, "eth-longname1", 7, 3) + done(7)
    out = {}
    assert netns_sockets.parse_links(data, len(data), 7, out)
    assert out == {1: ("lo", four(1)), 2: ("eth0", four(2)), 15: ("eth-longname1", four(3))}


def test_parse_links_needs_done_and_ignores_other_sequences():
    data = link(2, "stale", 6, 9) + link(3, "eth1", 8, 4)
    out = {}
    assert not netns_sockets.parse_links(data, len(data), 8, out)     # no NLMSG_DONE yet: read on
    assert out == {3: ("eth1", four(4))}


def test_getlink_request_layout():
    link_request = netns_sockets.getlink_request(3)
    assert struct.unpack_from("=IHHI", link_request)[1:] == (wire.RTM_GETLINK, 0x301, 3)
