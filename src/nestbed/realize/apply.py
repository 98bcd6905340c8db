"""Realize a HostPlan of process nodes on this host: namespaces, veths, bridges, addresses, routes, shaping.

Each phase journals what it is about to create (one fsync), then creates it in netlink batches:
  1. namespaces (unshare + bind mount), with their sysctls set while inside
  2. bridges and veth pairs, from one socket, each end created directly in its namespace, up and enslaved
  3. per node, one batch: lo up, addresses, routes, qdiscs
  4. loss by iptables where the kernel has no netem; the hosts file; start commands
"""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.plan.identity import ControlInfo
from nestbed.realize import identity, namespaces, netlink, processes, shaping
from nestbed.realize.state import ExperimentState


class Progress(Protocol):
    def phase(self, description: str, total: int) -> None: ...
    def advance(self, amount: int = 1) -> None: ...


class NoProgress:
    def phase(self, description: str, total: int) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


def realize(plan: HostPlan, state: ExperimentState, features: dict[str, bool],
            progress: Progress | None = None, write_identity: bool = True) -> None:
    """`write_identity` False: inside a vhost, whose nodes read the files the host wrote (over 9p)."""
    progress = progress or NoProgress()
    journal = state.journal
    local = plan.local_nodes                  # nodes inside VMs are their guest agents' business
    node_by_netns = {node.netns: node for node in local}

    names = plan.netns_names
    journal.record({"t": "netns", "name": name} for name in names)
    progress.phase("namespaces", len(names))
    strict = _host_rp_filter_is_strict()
    namespaces.create(names, inside=lambda name: _sysctls(name, node_by_netns.get(name), strict),
                      advance=progress.advance)

    progress.phase("links and bridges", len(plan.veths) + len(plan.bridges))
    journal.record([{"t": "bridge", "netns": b.netns, "name": b.name} for b in plan.bridges]
                   + [{"t": "veth", "netns": v.a.netns, "name": v.a.name, "peer_netns": v.b.netns,
                       "peer": v.b.name} for v in plan.veths])
    _links(plan, node_by_netns, progress)

    qdiscs = [{"t": "qdisc", "netns": n.netns, "dev": i.name} for n in local for i in n.interfaces
              if i.shaping and shaping.messages(i, features["netem"])]
    journal.record(qdiscs)
    progress.phase("addresses, routes, shaping", len(local))
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:   # each thread enters namespaces on its own
        for future in [pool.submit(_configure_nodes, local[k::workers], features["netem"], progress)
                       for k in range(workers)]:
            future.result()

    if features.get("iptables_loss"):
        lossy = [(n, shaping.iptables_loss_rules(n.interfaces, False)) for n in local]
        lossy = [(n, rules) for n, rules in lossy if rules]
        journal.record({"t": "iptables", "netns": n.netns} for n, _ in lossy)
        for node, rules in lossy:
            _iptables(node, rules)

    journal.record([{"t": "file", "path": str(state.hosts_path)}, {"t": "dir", "path": str(state.log_dir)}])
    state.hosts_path.write_text(plan.hosts_file)
    state.log_dir.mkdir(exist_ok=True)
    # /var/emulab/boot for every node (VMs read theirs over 9p); nicknames resolve to control addresses.
    if write_identity:
        identity.write_identity(state, plan, _control_info(plan))
    # Mailboxes (nestbed.agent.mailbox) before start commands, which may already post events.
    if local:
        from nestbed.agent import mailbox
        mailbox.create_mailboxes(state.directory, plan.experiment, [n.name for n in local if n.netns])

    with_commands = [node for node in local if node.commands]
    if with_commands:
        progress.phase("start commands", len(with_commands))
        processes.start_commands(with_commands, state, progress)

    if plan.control is not None:
        from nestbed.realize import control
        bridge = control.realize_control(plan, state)
        if plan.vms:
            from nestbed.realize import vms
            progress.phase("VMs (booting, agents ready)", len(plan.vms))
            vms.realize_vms(plan, state, bridge, progress)


def _control_info(plan: HostPlan) -> ControlInfo | None:
    if plan.control is None:
        return None
    return ControlInfo(interface="ctl0", subnet=plan.control.subnet,
                       addresses={**{vm.name: vm.control_address.split("/")[0] for vm in plan.vms if vm.kind == "qemu"},
                                  **{n.name: n.control_address.split("/")[0] for n in plan.nodes
                                     if n.control_address}})     # processes in vhosts too


def _sysctls(netns: str, node: NodePlan | None, strict_rp_filter: bool) -> None:
    """Run inside each new namespace. Only what differs from the inherited value is written: each write costs."""
    if node is None:           # a switch namespace: bridges only, no IPv6 chatter, no iptables on bridged frames
        for path in ("net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"):
            namespaces.write_sysctl(path, "1")
        if os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
            namespaces.write_sysctl("net/bridge/bridge-nf-call-iptables", "0")
        return
    if strict_rp_filter:      # new namespaces inherit the host's IPv4 settings; strict filtering breaks routes
        for path in ("net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"):
            namespaces.write_sysctl(path, "2")
    if node.forwarding:
        namespaces.write_sysctl("net/ipv4/ip_forward", "1")


def _host_rp_filter_is_strict() -> bool:
    values = []
    for path in ("net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"):
        try:
            values.append(open(f"/proc/sys/{path}").read().strip())
        except OSError:
            pass
    return "1" in values


def _links(plan: HostPlan, node_by_netns: dict[str, NodePlan], progress: Progress) -> None:
    fds: dict[str, int] = {}
    try:
        for name in plan.netns_names:
            fds[name] = os.open(namespaces.netns_path(name), os.O_RDONLY)
        macs = {(n.netns, i.name): i.mac for n in plan.nodes for i in n.interfaces}
        batch = netlink.Batch()
        for br in plan.bridges:
            batch.add(netlink.bridge(br.name, br.ifindex, fds[br.netns]), f"bridge {br.name}")
        for v in plan.veths:
            # The end that joins a bridge goes first: only the first end of a new veth may name a master.
            a, b = (v.b, v.a) if v.b.master is not None and v.a.master is None else (v.a, v.b)
            batch.add(netlink.veth(a.name, a.ifindex, fds[a.netns], b.name, b.ifindex, fds[b.netns],
                                   mac=macs.get((a.netns, a.name)), peer_mac=macs.get((b.netns, b.name)),
                                   master=a.master, up=a.master is not None),
                      f"veth {_describe(a, node_by_netns)} <-> {_describe(b, node_by_netns)}")
        sock = netlink.open_socket()
        try:
            netlink.send(sock, batch, "links")
        finally:
            sock.close()
        for v in plan.veths:
            if v.a.master is not None and v.b.master is not None:
                _enslave_second_end(v.b.netns, v.b.name, v.b.ifindex, v.b.master)
        progress.advance(len(batch))
    finally:
        for fd in fds.values():
            os.close(fd)


def _enslave_second_end(netns: str, name: str, ifindex: int, master: int) -> None:
    """Bridge-to-bridge uplinks (trees of bridges): the peer end joins its bridge and comes up here."""
    batch = netlink.Batch()
    batch.add(netlink.link_up(ifindex, master=master), f"uplink {name}")
    with namespaces.entered(netns):
        sock = netlink.open_socket()
    try:
        netlink.send(sock, batch, netns)
    finally:
        sock.close()


def _describe(end: object, node_by_netns: dict[str, NodePlan]) -> str:
    netns, name = getattr(end, "netns"), getattr(end, "name")
    node = node_by_netns.get(netns)
    return f"{node.name}:{name}" if node else f"switch:{name}"


def _configure_nodes(nodes: list[NodePlan], netem_available: bool, progress: Progress) -> None:
    for node in nodes:
        _configure_node(node, netem_available)
        progress.advance()


def node_messages(node: NodePlan, netem_available: bool) -> list[tuple[bytes, str]]:
    """The rtnetlink messages that configure one node's own links (pure: its interfaces' ifindexes as planned)."""
    out = [(netlink.link_up(1), "lo up")]
    for iface in node.interfaces:
        out.append((netlink.quiet_ipv6(iface.ifindex), f"{iface.name} without IPv6 link-local"))
        out.append((netlink.link_up(iface.ifindex), f"{iface.name} up"))
        ip, prefix = iface.address.split("/")
        out.append((netlink.address(iface.ifindex, ip, int(prefix)), f"address {iface.address} on {iface.name}"))
    ifindex = {iface.name: iface.ifindex for iface in node.interfaces}
    for route in node.routes:
        out.append((netlink.route(route.destination, route.gateway, ifindex[route.device]),
                    f"route to {route.destination} via {route.gateway}"))
    for iface in node.interfaces:
        out.extend(shaping.messages(iface, netem_available))
    return out


def _configure_node(node: NodePlan, netem_available: bool) -> None:
    batch = netlink.Batch()
    for message, purpose in node_messages(node, netem_available):
        batch.add(message, purpose)
    if node.netns:
        with namespaces.entered(node.netns):
            sock = netlink.open_socket()
    else:                     # a qemu node's guest agent configures the VM's own namespace
        sock = netlink.open_socket()
    try:
        netlink.send(sock, batch, f"node {node.name}")
    finally:
        sock.close()


def _iptables(node: NodePlan, rules: str) -> None:
    result = subprocess.run(["iptables-restore", "-w", "--noflush"], input=rules, text=True, capture_output=True,
                            preexec_fn=lambda: processes.enter_netns(node.netns))
    if result.returncode != 0:
        raise netlink.NetlinkError(f"node {node.name}: iptables loss rules failed: {result.stderr.strip()}")

