"""The hand-packed hot-path netlink messages must be byte for byte what pyroute2 encodes."""
import random
import socket
import struct

import pytest
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg

from nestbed import netlinkwire as wire
from nestbed.realize import netlink


def _pyroute2_veth(name, ifindex, fd, peer, peer_index, peer_fd, mac, peer_mac, master, up):
    peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", peer_fd)]
    peer_attrs += [("IFLA_ADDRESS", peer_mac)] if peer_mac else []
    attrs = [("IFLA_IFNAME", name), ("IFLA_NET_NS_FD", fd)] + ([("IFLA_ADDRESS", mac)] if mac else [])
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [
        ("VETH_INFO_PEER", {"index": peer_index, "attrs": peer_attrs})]})]}))
    msg = ifinfmsg()
    msg["index"] = ifindex
    if up:
        msg["flags"] = msg["change"] = IFF_UP
    msg["attrs"] = attrs
    return netlink._encoded(msg, RTM_NEWLINK)


@pytest.mark.parametrize("seed", range(40))
def test_veth_matches_pyroute2(seed):
    rng = random.Random(seed)
    name = "".join(rng.choice("abcdefgh0123.") for _ in range(rng.randint(1, 15)))
    peer = "".join(rng.choice("xyz98") for _ in range(rng.randint(1, 15)))
    mac = f"02:{rng.randrange(256):02x}:00:00:{rng.randrange(256):02x}:01" if rng.random() < 0.7 else None
    peer_mac = f"02:00:{rng.randrange(256):02x}:00:00:02" if rng.random() < 0.5 else None
    master = rng.randrange(2, 5000) if rng.random() < 0.5 else None
    args = (name, rng.randrange(2, 1 << 20), rng.randrange(3, 9999), peer, rng.randrange(2, 1 << 20),
            rng.randrange(3, 9999), mac, peer_mac, master, rng.random() < 0.5)
    assert netlink.veth(*args) == _pyroute2_veth(*args)


@pytest.mark.parametrize("ip,prefix,index", [("10.0.0.1", 24, 2), ("192.168.77.254", 30, 77), ("10.255.1.9", 8, 70000)])
def test_address_matches_pyroute2(ip, prefix, index):
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, prefix, index
    msg["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
    assert netlink.address(index, ip, prefix) == netlink._encoded(msg, RTM_NEWADDR)


def test_bridge_matches_pyroute2():
    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["change"] = 12, IFF_UP, IFF_UP
    msg["attrs"] = [("IFLA_IFNAME", "br3.1"), ("IFLA_NET_NS_FD", 9), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "bridge"),
        ("IFLA_INFO_DATA", {"attrs": [("IFLA_BR_STP_STATE", 0), ("IFLA_BR_FORWARD_DELAY", 0)]})]})]
    assert netlink.bridge("br3.1", 12, 9) == netlink._encoded(msg, RTM_NEWLINK)


@pytest.mark.parametrize("master", [None, 7])
def test_link_up_matches_pyroute2(master):
    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["change"] = 5, IFF_UP, IFF_UP
    msg["attrs"] = [("IFLA_MASTER", master)] if master is not None else []
    expected = netlink._encoded(msg, RTM_NEWLINK, wire.NLM_F_REQUEST | wire.NLM_F_ACK)
    assert netlink.link_up(5, master) == expected


def test_quiet_ipv6_matches_pyroute2_and_changes_no_flags():
    msg = ifinfmsg()
    msg["index"] = 5
    msg["attrs"] = [("IFLA_AF_SPEC", {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]})]
    assert netlink.quiet_ipv6(5) == netlink._encoded(msg, RTM_NEWLINK, wire.NLM_F_REQUEST | wire.NLM_F_ACK)


@pytest.mark.parametrize("dst,gw,oif", [("10.0.0.0/15", "10.0.1.1", 2), ("10.3.4.0/24", "10.9.9.9", 300)])
def test_route_matches_pyroute2(dst, gw, oif):
    from pyroute2.netlink.rtnl import RTM_NEWROUTE
    from pyroute2.netlink.rtnl.rtmsg import rtmsg
    network, prefix = dst.split("/")
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"] = socket.AF_INET, int(prefix), 254
    msg["proto"], msg["scope"], msg["type"] = 4, 0, 1
    msg["attrs"] = [("RTA_TABLE", 254), ("RTA_DST", network), ("RTA_GATEWAY", gw), ("RTA_OIF", oif)]
    assert netlink.route(dst, gw, oif) == netlink._encoded(msg, RTM_NEWROUTE)


def test_the_ipv4_address_dump_reads_what_pyroute2_reads():
    from pyroute2 import IPRoute

    from nestbed.realize import netlink
    with IPRoute() as ipr:
        expected = [(m.get_attr("IFA_ADDRESS"), m["prefixlen"]) for m in ipr.get_addr(family=socket.AF_INET)]
    sock = netlink.open_socket()
    try:
        assert netlink.ipv4_addresses(sock) == expected and expected     # at least 127.0.0.1/8
    finally:
        sock.close()


def test_the_ipv4_address_dump_parses_a_reply_in_parts_and_stops_at_done():
    from nestbed.netlinkwire import NLMSG_DONE, attr, message
    from nestbed.realize import netlink

    def address(ip: str, prefixlen: int) -> bytes:
        body = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, 0, 7) + attr(netlink.IFA_LOCAL, socket.inet_aton(ip))
        return message(netlink.RTM_NEWADDR, 2, body + attr(netlink.IFA_ADDRESS, socket.inet_aton(ip)), seq=1)

    class Replies:
        sent: list[bytes] = []
        parts = [address("172.30.5.1", 24) + address("10.0.0.1", 8),
                 address("192.0.2.9", 30) + message(NLMSG_DONE, 2, b"\0\0\0\0", seq=1)]

        def send(self, data: bytes) -> None:
            self.sent.append(data)

        def recv(self, size: int) -> bytes:
            return self.parts.pop(0)
    assert netlink.ipv4_addresses(Replies()) == [("172.30.5.1", 24), ("10.0.0.1", 8),     # type: ignore[arg-type]
                                                  ("192.0.2.9", 30)]
