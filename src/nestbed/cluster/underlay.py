"""The emulated hosts' underlay as netlink messages: a bridge `ul0` in the underlay namespace, one veth per host
(its `ul0` in the host's namespace, its peer a port of the bridge), addresses, every link at the underlay's MTU.

Addresses: host I is 10.250.0.0 + I + 1 (10.250.0.1 for emu0, as the contract has it), in 10.250.0.0/16; the
bridge holds CONTROLLER_ADDRESS, the far end of that /16, so the controller's SSH sockets, opened inside the
underlay namespace, have a route to every host. Fixed ifindexes (the namespaces are new), as plans have them.
"""
from __future__ import annotations

import ipaddress

from nestbed.netlinkwire import (
    IFF_UP,
    IFINFO,
    IFLA_IFNAME,
    IFLA_LINKINFO,
    IFLA_MASTER,
    IFLA_NET_NS_FD,
    RTM_NEWLINK,
    attr,
    message,
    string_attr,
    u32_attr,
)
from nestbed.realize import netlink

SUBNET = ipaddress.IPv4Network("10.250.0.0/16")
PREFIXLEN = SUBNET.prefixlen
CONTROLLER_ADDRESS = "10.250.255.254"
BRIDGE = "ul0"                  # in the underlay namespace
HOST_INTERFACE = "ul0"          # in each host's namespace: what VXLAN devices name as their underlay
BRIDGE_IFINDEX = 2
HOST_IFINDEX = 2                # lo is 1
IFLA_MTU = 4
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
MAX_HOSTS = SUBNET.num_addresses - 3        # the network, the controller and the broadcast address excluded


def host_address(index: int) -> str:
    return str(SUBNET.network_address + index + 1)


def port_name(index: int) -> str:
    """Host I's port of the bridge (the underlay namespace is the experiment's own: short names suffice)."""
    return f"p{index}"


def bridge(mtu: int, netns_fd: int) -> bytes:
    """The bridge, without STP (ports forward at once), at the underlay's MTU; brought up by `bridge_setup`."""
    data = u32_attr(IFLA_BR_STP_STATE, 0) + u32_attr(IFLA_BR_FORWARD_DELAY, 0)
    info = attr(IFLA_INFO_KIND, b"bridge\0") + attr(IFLA_INFO_DATA, data)
    attrs = string_attr(IFLA_IFNAME, BRIDGE) + u32_attr(IFLA_NET_NS_FD, netns_fd)
    return message(RTM_NEWLINK, netlink.CREATE, IFINFO.pack(0, 0, BRIDGE_IFINDEX, 0, 0) + attrs
                   + u32_attr(IFLA_MTU, mtu) + attr(IFLA_LINKINFO, info))


def veth(index: int, mtu: int, underlay_fd: int, host_fd: int) -> bytes:
    """Host I's veth: the port end up in the bridge, the host end `ul0` (brought up in its namespace)."""
    peer = (IFINFO.pack(0, 0, HOST_IFINDEX, 0, 0) + string_attr(IFLA_IFNAME, HOST_INTERFACE)
            + u32_attr(IFLA_NET_NS_FD, host_fd) + u32_attr(IFLA_MTU, mtu))
    info = attr(IFLA_INFO_KIND, b"veth\0") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
    attrs = (string_attr(IFLA_IFNAME, port_name(index)) + u32_attr(IFLA_NET_NS_FD, underlay_fd)
             + u32_attr(IFLA_MTU, mtu) + u32_attr(IFLA_MASTER, BRIDGE_IFINDEX))
    return message(RTM_NEWLINK, netlink.CREATE, IFINFO.pack(0, 0, BRIDGE_IFINDEX + 1 + index, IFF_UP, IFF_UP)
                   + attrs + attr(IFLA_LINKINFO, info))


def links(count: int, mtu: int, underlay_fd: int, host_fds: list[int]) -> netlink.Batch:
    """Everything made from the controller's own namespace (each link created directly where it lives)."""
    batch = netlink.Batch()
    batch.add(bridge(mtu, underlay_fd), f"bridge {BRIDGE} (mtu {mtu})")
    for index in range(count):
        batch.add(veth(index, mtu, underlay_fd, host_fds[index]), f"underlay veth of emu{index} (mtu {mtu})")
    return batch


def bridge_setup() -> netlink.Batch:
    """Sent in the underlay namespace: the controller's address on the bridge, the bridge up."""
    batch = netlink.Batch()
    batch.add(netlink.address(BRIDGE_IFINDEX, CONTROLLER_ADDRESS, PREFIXLEN), f"address of {BRIDGE}")
    batch.add(netlink.quiet_ipv6(BRIDGE_IFINDEX), f"{BRIDGE} without IPv6")
    batch.add(netlink.link_up(BRIDGE_IFINDEX), f"{BRIDGE} up")
    return batch


def host_setup(index: int) -> netlink.Batch:
    """Sent in host I's namespace: its underlay address, ul0 and lo up."""
    batch = netlink.Batch()
    batch.add(netlink.address(HOST_IFINDEX, host_address(index), PREFIXLEN), f"address of emu{index}")
    batch.add(netlink.quiet_ipv6(HOST_IFINDEX), f"{HOST_INTERFACE} of emu{index} without IPv6")
    batch.add(netlink.link_up(HOST_IFINDEX), f"{HOST_INTERFACE} of emu{index} up")
    batch.add(netlink.link_up(1), f"lo of emu{index} up")
    return batch


def is_listening(pid: int, port: int) -> bool:
    """A TCP socket of the process's network namespace listens on `port` (read from /proc/PID/net/tcp)."""
    wanted = f":{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as table:
            next(table, None)
            return any(f[1].endswith(wanted) and f[3] == "0A" for f in (line.split() for line in table))
    except OSError:
        return False

