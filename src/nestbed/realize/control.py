"""The experiment's control network on this host: a bridge in the host's own namespace with the host's control
address, which VMs' control TAPs (realize.vms) and the ctl0 of process nodes with `control: true` join.

The bridge is `control0`, or `nbctl-XXXXXX` when another experiment holds control0 (names begin with the object
prefix, paths.object_prefix(); under a prefix other than nb, `control0` is `PREFIXcontrol0`). The experiment's
nftables table (realize.firewall), made before the bridge, lets nothing from it reach the host but replies to the
host's own connections, and routes nothing from or to it; agents on it answer only requests that carry the
experiment's credential (nestbed.channel). Every link made here in the host's namespace carries the experiment's
mark as its alias (realize.ownership), set in the netlink batch that creates it: teardown removes only links with
that mark.

Across hosts the bridges are joined by a VXLAN device that carries less than a full frame on a 1500-byte underlay:
then every member of the control network has the tunnel's MTU (ControlPlan.mtu, plan/multihost.py): the bridge,
the host ends and the nodes' ctl0, the VMs' TAPs (join_control_bridge) and their NICs (qemu's host_mtu; inside a
vhost, bridge_vm_control takes the NIC's). A bridge drops a frame its egress port cannot carry without a word;
at one MTU everywhere a sender learns the limit instead (a DF ping says "message too long").
"""
from __future__ import annotations

import ipaddress
import os
import zlib
from collections.abc import Callable
from typing import Any

from nestbed import netlinkwire as wire
from nestbed import paths
from nestbed.errors import PreflightError
from nestbed.plan.hostplan import ControlTunnel, HostPlan, NodePlan
from nestbed.realize import namespaces, netlink
from nestbed.realize.state import ExperimentState

CONTROL_BRIDGE = "control0"
NODE_INTERFACE = "ctl0"
HOST_END_PREFIX = "nbk"            # inside a vhost: nbkK, the VM's end of its node K's control veth
IFLA_IFALIAS = 20


def tag(experiment: str) -> str:
    """Six hex digits naming this experiment's links in the host's namespace."""
    return f"{zlib.crc32(experiment.encode()):08x}"[:6]


def bridge_name(experiment: str, taken: Callable[[str], bool]) -> str:
    """control0 when it is free, else a name of this experiment's own (`taken(name)`: a link has that name)."""
    prefix = paths.object_prefix()
    first = CONTROL_BRIDGE if prefix == paths.DEFAULT_PREFIX else f"{prefix}{CONTROL_BRIDGE}"   # tests keep off it
    return first if not taken(first) else f"{prefix}ctl-{tag(experiment)}"


def host_end_name(experiment: str, k: int | str) -> str:
    """The host's end of the k-th control veth (a process node's ctl0)."""
    return f"{paths.object_prefix()}k{tag(experiment)}.{k}"


def tunnel_name(experiment: str) -> str:
    """The VXLAN device joining this host's control bridge to the other hosts' (a multi-host experiment)."""
    return f"{paths.object_prefix()}x{tag(experiment)}"


def vm_tap_name(experiment: str, k: int | str) -> str:
    """The k-th VM's control TAP in the host's namespace."""
    return f"{paths.object_prefix()}c{tag(experiment)}.{k}"


def realize_control(plan: HostPlan, state: ExperimentState) -> int:
    """The firewall, then the bridge and the control interfaces of process nodes; returns the bridge's ifindex."""
    assert plan.control is not None
    from pyroute2 import IPRoute

    from nestbed.realize import firewall, ownership
    journal = state.journal
    owner = ownership.mark(plan.experiment, state.directory)
    nodes = [n for n in plan.local_nodes if n.control_address]
    host_ends = [host_end_name(plan.experiment, k) for k in range(len(nodes))]
    tunnel = plan.control.tunnel
    with IPRoute() as ipr:
        _check_subnet(ipr, plan)
        bridge = bridge_name(plan.experiment, lambda name: bool(ipr.link_lookup(ifname=name)))
        table = firewall.table_name(plan.experiment)
        journal.record([firewall.entry(plan.experiment), {"t": "rootlink", "name": bridge}]
                       + [{"t": "rootlink", "name": name} for name in host_ends]
                       + ([{"t": "rootlink", "name": tunnel_name(plan.experiment)}] if tunnel else []))
        address, prefix = plan.control.host_address.split("/")
        ports = [host_end_name(plan.experiment, "*"), vm_tap_name(plan.experiment, "*")]   # nft wildcards
        if tunnel is not None:        # what comes from other hosts' VMs reaches this host no more than a VM's
            ports.append(tunnel_name(plan.experiment))
        firewall.create(firewall.ruleset(table, owner, bridge, ports, plan.control.subnet, address), table)

        info = wire.attr(wire.IFLA_LINKINFO, wire.attr(netlink.IFLA_INFO_KIND, b"bridge\0"))
        mtu = plan.control.mtu
        create = wire.message(wire.RTM_NEWLINK, netlink.CREATE, wire.IFINFO.pack(0, 0, 0, 0, 0)
                              + wire.string_attr(wire.IFLA_IFNAME, bridge) + info
                              + (wire.u32_attr(netlink.IFLA_MTU, mtu) if mtu is not None else b""))
        _create_marked(create, bridge, owner, f"control bridge {bridge}")
        bridge_index = int(ipr.link_lookup(ifname=bridge)[0])
        ipr.addr("add", index=bridge_index, address=address, prefixlen=int(prefix))
        quiet_ipv6(bridge_index)
        ipr.link("set", index=bridge_index, state="up")
        state.set_status("creating", control_bridge=bridge)
        attach_nodes(ipr, bridge_index, nodes, host_ends, owner, mtu)
        if tunnel is not None:
            _join_other_hosts(ipr, tunnel, tunnel_name(plan.experiment), bridge_index, owner)
    return bridge_index


def _join_other_hosts(ipr: Any, tunnel: ControlTunnel, name: str, bridge_index: int, owner: str) -> None:
    """A marked VXLAN device in this namespace on the control bridge, flooding to every other host's."""
    found = ipr.link_lookup(ifname=tunnel.underlay)
    if not found:
        raise PreflightError(f"the control network's underlay {tunnel.underlay!r} is not an interface of this host")
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        create = netlink.vxlan(name, 0, own, tunnel.vni, tunnel.local, int(found[0]), tunnel.port, tunnel.mtu,
                               bridge_index)
        _create_marked(create, name, owner, f"control tunnel {name} (vni {tunnel.vni})")
    finally:
        os.close(own)
    index = int(ipr.link_lookup(ifname=name)[0])
    batch = netlink.Batch()
    batch.add(netlink.quiet_ipv6(index), f"{name}: no IPv6 link-local")
    for peer in tunnel.peers:
        batch.add(netlink.fdb_entry(index, "00:00:00:00:00:00", peer, True), f"{name}: flood to {peer}")
    sock = netlink.open_socket()
    try:
        netlink.send(sock, batch, "control network")
    finally:
        sock.close()


def set_alias(ifindex: int, alias: str, name: str | None = None) -> bytes:
    """Set a link's alias (IFLA_IFALIAS); ifindex 0 with `name` finds it by name. The kernel ignores an alias in
    the message that creates a link, so it follows that message in the same batch."""
    body = wire.IFINFO.pack(0, 0, ifindex, 0, 0) + (wire.string_attr(wire.IFLA_IFNAME, name) if name else b"")
    return wire.message(wire.RTM_NEWLINK, wire.NLM_F_REQUEST | wire.NLM_F_ACK,
                        body + wire.attr(IFLA_IFALIAS, alias.encode()))


def _create_marked(create: bytes, name: str, owner: str | None, what: str) -> None:
    """One batch: the link, then (when `owner` is given) its mark."""
    batch = netlink.Batch()
    batch.add(create, what)
    if owner is not None:
        batch.add(set_alias(0, owner, name), f"{what}: mark {owner}")
    sock = netlink.open_socket()
    try:
        netlink.send(sock, batch, "control network")
    finally:
        sock.close()


def join_control_bridge(name: str, bridge_index: int, owner: str, mtu: int | None = None) -> None:
    """A link made elsewhere (a VM's control TAP) marked, without IPv6 link-local, up on the control bridge at the
    control network's MTU."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        index = int(ipr.link_lookup(ifname=name)[0])
    batch = netlink.Batch()
    batch.add(set_alias(index, owner), f"{name}: mark {owner}")
    batch.add(netlink.quiet_ipv6(index), f"{name}: no IPv6 link-local")
    batch.add(netlink.link_up(index, bridge_index, mtu), f"{name} up on the control bridge")
    sock = netlink.open_socket()
    try:
        netlink.send(sock, batch, "control network")
    finally:
        sock.close()


def attach_nodes(ipr: Any, bridge_index: int, nodes: list[NodePlan], host_ends: list[str],
                 owner: str | None = None, mtu: int | None = None) -> None:
    """Each node's ctl0, with its control address, on the control bridge (a veth: the node's end is created
    directly in its namespace, and goes with the namespace; the host end carries `owner`'s mark when given; both
    ends at `mtu`, the control network's). Also used inside vhost VMs."""
    from pyroute2 import NetNS
    for node, host_end in zip(nodes, host_ends):
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(namespaces.netns_path(node.netns), os.O_RDONLY)
        try:
            _create_marked(netlink.veth(host_end, 0, here, NODE_INTERFACE, 0, there, mtu=mtu), host_end, owner,
                           f"control veth {host_end} of {node.name}")
        finally:
            os.close(there)
            os.close(here)
        index = ipr.link_lookup(ifname=host_end)[0]
        quiet_ipv6(index)
        ipr.link("set", index=index, master=bridge_index, state="up")
        with NetNS(node.netns) as ns:
            inside = ns.link_lookup(ifname=NODE_INTERFACE)[0]
            address, prefix = str(node.control_address).split("/")
            ns.addr("add", index=inside, address=address, prefixlen=int(prefix))
            quiet_ipv6(inside, node.netns)
            ns.link("set", index=inside, state="up")


def bridge_vm_control(vm_control_address: str, nodes: list[NodePlan]) -> None:
    """Inside a vhost VM: its control NIC (ctl0) joins a bridge `control0` that takes over the VM's control address,
    and the ctl0 of each of its process nodes with `control: true` joins that bridge too, all at the NIC's MTU
    (the control network's: qemu's host_mtu gave it to the NIC)."""
    from pyroute2 import IPRoute
    address, prefix = vm_control_address.split("/")
    with IPRoute() as ipr:
        nic = ipr.link_lookup(ifname=NODE_INTERFACE)[0]
        mtu = int(ipr.get_links(nic)[0].get_attr("IFLA_MTU"))
        ipr.link("add", ifname=CONTROL_BRIDGE, kind="bridge", mtu=mtu)
        bridge_index = int(ipr.link_lookup(ifname=CONTROL_BRIDGE)[0])
        ipr.addr("del", index=nic, address=address, prefixlen=int(prefix))
        ipr.link("set", index=nic, master=bridge_index)
        ipr.addr("add", index=bridge_index, address=address, prefixlen=int(prefix))
        quiet_ipv6(bridge_index)
        ipr.link("set", index=bridge_index, state="up")
        attach_nodes(ipr, bridge_index, nodes, [f"{HOST_END_PREFIX}{k}" for k in range(len(nodes))], mtu=mtu)


def quiet_ipv6(index: int, netns: str | None = None) -> None:
    """No IPv6 link-local (so no DAD, router or MLD packets) on a control link, set before it comes up."""
    from nestbed.realize import netlink
    batch = netlink.Batch()
    batch.add(netlink.quiet_ipv6(index), "no IPv6 link-local")
    sock = netlink.open_socket(netns or "")
    try:
        netlink.send(sock, batch, "control network")
    finally:
        sock.close()


def busy_control_subnets() -> set[int]:
    """X of every 172.30.X.0/24 that an address on this host overlaps (other experiments' control networks, or
    anything else there): compile_plan gives a new experiment another one."""
    control_range = ipaddress.IPv4Network("172.30.0.0/16")
    busy = set()
    sock = netlink.open_socket()
    try:
        found = netlink.ipv4_addresses(sock)
    finally:
        sock.close()
    for address, prefixlen in found:
        network = ipaddress.IPv4Interface(f"{address}/{prefixlen}").network
        if network.overlaps(control_range):
            for x in range(256):
                if network.overlaps(ipaddress.IPv4Network(f"172.30.{x}.0/24")):
                    busy.add(x)
    return busy


def _check_subnet(ipr: Any, plan: HostPlan) -> None:
    assert plan.control is not None
    subnet = ipaddress.IPv4Network(plan.control.subnet)
    for message in ipr.get_addr(family=2):
        here = ipaddress.IPv4Interface(f"{message.get_attr('IFA_ADDRESS')}/{message['prefixlen']}")
        if here.network.overlaps(subnet):
            raise PreflightError(f"the control subnet {subnet} of experiment {plan.experiment} is already used "
                                 f"on this host ({here} on interface index {message['index']}), taken since the "
                                 f"plan was made; run `nestbed up` again")


def remove_root_links(entries: list[dict[str, object]], owner: str) -> list[str]:
    """Links nestbed made in the host's own namespace (bridge, host ends, VM control TAPs) that are still there and
    carry `owner`'s mark; returns a line for each link of such a name left alone."""
    names = [str(e["name"]) for e in entries if e["t"] == "rootlink"]
    if not names:
        return []
    from pyroute2 import IPRoute

    from nestbed.realize import ownership
    kept = []
    with IPRoute() as ipr:
        for name in reversed(names):
            for index in ipr.link_lookup(ifname=name):
                try:
                    found = ipr.link("get", index=index)[0].get_attr("IFLA_IFALIAS")
                except Exception:    # noqa: BLE001 — gone meanwhile (a TAP leaves with its qemu)
                    continue
                if found != owner:
                    kept.append(ownership.not_ours(f"link {name}", found, owner))
                    continue
                try:
                    ipr.link("del", index=index)
                except Exception:    # noqa: BLE001 — gone meanwhile
                    pass
    return kept
