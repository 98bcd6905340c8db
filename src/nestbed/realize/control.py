"""The experiment's control network on this host: a bridge in the host's own namespace with the host's control
address, which VMs' control TAPs (realize.vms) and the ctl0 of process nodes with `control: true` join.

The bridge is `control0`, or `nbctl-XXXXXX` when another experiment holds control0. Nothing is routed between it
and the host's other networks: guests and nodes get only the /24, and agents on it answer only requests that
carry the experiment's credential (nestbed.channel).
"""
from __future__ import annotations

import ipaddress
import zlib
from typing import Any

from nestbed.errors import PreflightError
from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.realize import namespaces, netlink
from nestbed.realize.state import ExperimentState

CONTROL_BRIDGE = "control0"
NODE_INTERFACE = "ctl0"


def tag(experiment: str) -> str:
    """Six hex digits naming this experiment's links in the host's namespace."""
    return f"{zlib.crc32(experiment.encode()):08x}"[:6]


def realize_control(plan: HostPlan, state: ExperimentState) -> int:
    """Create the bridge and the control interfaces of process nodes; returns the bridge's ifindex."""
    assert plan.control is not None
    from pyroute2 import IPRoute
    journal = state.journal
    with IPRoute() as ipr:
        _check_subnet(ipr, plan)
        bridge = CONTROL_BRIDGE if not ipr.link_lookup(ifname=CONTROL_BRIDGE) else f"nbctl-{tag(plan.experiment)}"
        journal.record([{"t": "rootlink", "name": bridge}])
        ipr.link("add", ifname=bridge, kind="bridge")
        bridge_index = int(ipr.link_lookup(ifname=bridge)[0])
        address, prefix = plan.control.host_address.split("/")
        ipr.addr("add", index=bridge_index, address=address, prefixlen=int(prefix))
        quiet_ipv6(bridge_index)
        ipr.link("set", index=bridge_index, state="up")
        state.set_status("creating", control_bridge=bridge)

        nodes = [n for n in plan.local_nodes if n.control_address]
        host_ends = [f"nbk{tag(plan.experiment)}.{k}" for k in range(len(nodes))]
        journal.record([{"t": "rootlink", "name": name} for name in host_ends])
        attach_nodes(ipr, bridge_index, nodes, host_ends)
    return bridge_index


def attach_nodes(ipr: Any, bridge_index: int, nodes: list[NodePlan], host_ends: list[str]) -> None:
    """Each node's ctl0, with its control address, on the control bridge (a veth: the node's end is created here
    and moved into its namespace, and goes with the namespace). Also used inside vhost VMs."""
    from pyroute2 import NetNS
    for node, host_end in zip(nodes, host_ends):
        ipr.link("add", ifname=host_end, kind="veth", peer={"ifname": NODE_INTERFACE,
                                                              "net_ns_fd": namespaces.netns_path(node.netns)})
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
    and the ctl0 of each of its process nodes with `control: true` joins that bridge too."""
    from pyroute2 import IPRoute
    address, prefix = vm_control_address.split("/")
    with IPRoute() as ipr:
        nic = ipr.link_lookup(ifname=NODE_INTERFACE)[0]
        ipr.link("add", ifname=CONTROL_BRIDGE, kind="bridge")
        bridge_index = int(ipr.link_lookup(ifname=CONTROL_BRIDGE)[0])
        ipr.addr("del", index=nic, address=address, prefixlen=int(prefix))
        ipr.link("set", index=nic, master=bridge_index)
        ipr.addr("add", index=bridge_index, address=address, prefixlen=int(prefix))
        quiet_ipv6(bridge_index)
        ipr.link("set", index=bridge_index, state="up")
        attach_nodes(ipr, bridge_index, nodes, [f"nbk{k}" for k in range(len(nodes))])


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


def remove_root_links(entries: list[dict[str, object]]) -> None:
    """Links nestbed made in the host's own namespace (bridge, host ends, VM control TAPs), if still there."""
    names = [str(e["name"]) for e in entries if e["t"] == "rootlink"]
    if not names:
        return
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for name in reversed(names):
            for index in ipr.link_lookup(ifname=name):
                try:
                    ipr.link("del", index=index)
                except Exception:    # noqa: BLE001 — gone meanwhile (a TAP leaves with its qemu)
                    pass
