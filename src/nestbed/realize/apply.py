"""Realize a HostPlan of process nodes on this host: namespaces, veths, bridges, addresses, routes, shaping.

Each phase journals what it is about to create (one fsync), then creates it in netlink batches:
  1. namespaces (unshare + bind mount), with their sysctls set while inside
  2. bridges, veth pairs and VXLAN devices, from one socket, each created directly in its namespace, up and
     enslaved; then the VXLAN devices' FDB entries, a batch per switch namespace
  3. per node, one batch: lo up, addresses, routes, qdiscs
  4. loss by iptables where the kernel has no netem; the hosts file; identity files, mailboxes; start commands
Every effect on the host goes through a `kernel.Kernel` (LinuxKernel; unit tests pass a fake). What links to make
comes from plan/mechanisms as data; the rtnetlink messages are encoded here.
"""
from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

from nestbed.errors import PreflightError
from nestbed.plan import mechanisms
from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.plan.identity import ControlInfo
from nestbed.plan.mechanisms.specs import FdbEntry, JoinBridge, NewLink
from nestbed.realize import hostnetns, linksender, netlink, nodeconfig, ownership, portshaping, processes, shaping
from nestbed.realize.kernel import LINUX, Kernel
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
            progress: Progress | None = None, write_identity: bool = True, kernel: Kernel = LINUX) -> None:
    """Journal, then create, what the plan holds; on failure the caller tears down from the journal.
    `write_identity` False: inside a vhost, whose nodes read the files the host wrote (over 9p)."""
    progress = progress or NoProgress()
    underlays = _underlays(plan, kernel)      # before anything exists: a missing one is a preflight error
    journal = state.journal
    local = plan.local_nodes                  # nodes inside VMs are their guest agents' business
    node_by_netns = {node.netns: node for node in local}

    in_host_netns = [node for node in local if node.host_netns]
    if in_host_netns:                         # a real host's own namespace gets the node's name first
        hostnetns.attach(in_host_netns, journal)
    names = plan.netns_names
    journal.record({"t": "netns", "name": name} for name in names)
    progress.phase("namespaces", len(names))
    strict = _host_rp_filter_is_strict(kernel)
    kernel.create_namespaces(names, lambda name: _sysctls(kernel, node_by_netns.get(name), strict),
                             progress.advance)

    progress.phase("links and bridges", len(plan.veths) + len(plan.bridges) + len(plan.vxlans))
    journal.record(mechanisms.entries(plan))
    _links(plan, kernel, progress, underlays)
    portshaping.realize(plan.port_shaping, journal, kernel, features["netem"])    # LAN members' own ingress

    qdiscs = [{"t": "qdisc", "netns": n.netns, "dev": i.name} for n in local for i in n.interfaces
              if i.shaping and shaping.messages(i, features["netem"])]
    journal.record(qdiscs)
    progress.phase("addresses, routes, shaping", len(local))
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:   # each thread enters namespaces on its own
        for future in [pool.submit(_configure_nodes, local[k::workers], features["netem"], progress, kernel)
                       for k in range(workers)]:
            future.result()

    if features.get("iptables_loss"):
        # a node in its host's own namespace: the rules carry the experiment's mark (they outlive no namespace)
        mark = ownership.mark(state.name, state.directory)
        lossy = [(n, shaping.iptables_loss_rules(n.interfaces, False, mark if n.host_netns else None))
                 for n in local]
        lossy = [(n, rules) for n, rules in lossy if rules]
        journal.record({"t": hostnetns.MARKED_RULES, "netns": n.netns, "mark": mark} if n.host_netns
                       else {"t": "iptables", "netns": n.netns} for n, _ in lossy)
        for node, rules in lossy:
            _iptables(node, rules, kernel)

    journal.record([{"t": "file", "path": str(state.hosts_path)}])
    state.hosts_path.write_text(plan.hosts_file)
    if not state.log_dir.exists():       # `up` made it for the host agent; a vhost's guest agent makes it here
        journal.record([{"t": "dir", "path": str(state.log_dir)}])
        state.log_dir.mkdir()
    # /var/emulab/boot for every node (VMs read theirs over 9p); nicknames resolve to control addresses.
    if write_identity:
        kernel.write_identity(state, plan, control_info(plan))
    # Mailboxes (realize.mailboxes) before start commands, which may already post events.
    if local:
        kernel.create_mailboxes(state.directory, plan.experiment, [n.name for n in local if n.netns])

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


def control_info(plan: HostPlan) -> ControlInfo | None:
    if plan.control is None:
        return None
    from nestbed.kinds import registry  # here, not at the top: guests import this module (and skip this)
    return ControlInfo(interface="ctl0", subnet=plan.control.subnet,
                       addresses={**{vm.name: vm.control_address.split("/")[0] for vm in plan.vms
                                     if registry.get(vm.kind).own_vm},          # a VM that is a node: its name
                                  **{n.name: n.control_address.split("/")[0] for n in plan.every_node()
                                     if n.control_address}})     # processes in vhosts too, other hosts' nodes


def _sysctls(kernel: Kernel, node: NodePlan | None, strict_rp_filter: bool) -> None:
    """Run inside each new namespace. Only what differs from the inherited value is written: each write costs."""
    if node is None:           # a switch namespace: bridges only, no IPv6 chatter, no iptables on bridged frames
        for path in ("net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"):
            kernel.write_sysctl(path, "1")
        kernel.write_sysctl("net/bridge/bridge-nf-call-iptables", "0", if_present=True)
        return
    if strict_rp_filter:      # new namespaces inherit the host's IPv4 settings; strict filtering breaks routes
        for path in ("net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"):
            kernel.write_sysctl(path, "2")
    if node.forwarding:
        kernel.write_sysctl("net/ipv4/ip_forward", "1")


def _host_rp_filter_is_strict(kernel: Kernel) -> bool:
    return "1" in (kernel.host_sysctl("net/ipv4/conf/all/rp_filter"),
                   kernel.host_sysctl("net/ipv4/conf/default/rp_filter"))


def _links(plan: HostPlan, kernel: Kernel, progress: Progress, underlays: dict[str, int]) -> None:
    """Bridges, veths and VXLAN devices from one socket in this host's namespace, each created directly in its
    namespace (by fd); then the second ends of bridge-to-bridge uplinks into their bridges; then the VXLAN
    devices' FDB entries, from a socket in their switch namespace. On a kernel older than 6.15 a link whose
    ifindex the sending namespace holds too is sent from inside its own namespace (realize/linksender.py)."""
    wanted = mechanisms.links(plan)
    new = [link for link in wanted if isinstance(link, NewLink)]
    taken = kernel.sender_ifindexes()
    sent = 0
    moved: dict[tuple[str, int], int] = {}
    # One batch in order (bridges first) on a 6.15+ kernel; on an older one bridges go before the rest whichever
    # socket sends them, as veth ends and VXLAN devices name them as masters.
    groups = [new] if taken is None else [[link for link in new if link.kind == "bridge"],
                                          [link for link in new if link.kind != "bridge"]]
    for group in groups:
        sends = linksender.plan_sends(group, taken)
        moved.update(sends.moved)
        if sends.from_host:
            sent += _send_links(plan, kernel, sends.from_host, underlays, plan.link_netns_names, "")
        for netns, links in sends.inside.items():
            names = sorted({netns} | {link.peer.netns for link in links if link.peer is not None})
            sent += _send_links(plan, kernel, links, underlays, names, netns)
    for join in wanted:
        if isinstance(join, JoinBridge):    # bridge-to-bridge uplinks (trees of bridges): the peer end
            batch = netlink.Batch()
            batch.add(netlink.link_up(join.ifindex, master=join.master), f"uplink {join.name}")
            kernel.send(join.netns, batch, join.netns)
    fdbs: dict[str, netlink.Batch] = {}
    for fdb in wanted:
        if isinstance(fdb, FdbEntry):
            device = moved.get((fdb.netns, fdb.ifindex), fdb.ifindex)      # a VXLAN device given another ifindex
            fdbs.setdefault(fdb.netns, netlink.Batch()).add(
                netlink.fdb_entry(device, fdb.mac, fdb.dst, fdb.append), fdb.purpose)
    for netns, batch in fdbs.items():
        kernel.send(netns, batch, netns)
    progress.advance(sent)


def _send_links(plan: HostPlan, kernel: Kernel, links: list[NewLink], underlays: dict[str, int], names: list[str],
                inside: str) -> int:
    """One batch of link creations from a socket in `inside` ("": this host's namespace), naming `names` by fd."""
    def batch_of(fds: dict[str, int]) -> netlink.Batch:
        batch = netlink.Batch()
        for link in links:
            batch.add(_encoded(link, fds, underlays), link.purpose)
        return batch
    try:
        return kernel.send_with_namespaces(names, batch_of, f"links in {inside}" if inside else "links", inside)
    except netlink.NetlinkError as error:
        clear = _vni_in_use(error, links, plan.host)
        if clear is None:
            raise
        raise clear from None


def _underlays(plan: HostPlan, kernel: Kernel) -> dict[str, int]:
    """The VXLAN devices' underlay interfaces by name, as ifindexes in this host's own namespace."""
    found: dict[str, int] = {}
    for v in plan.vxlans:
        if v.underlay not in found:
            index = kernel.host_link_index(v.underlay)
            if index is None:
                raise PreflightError(f"host {plan.host} has no interface {v.underlay!r}, the underlay of "
                                     f"segment {v.segment}'s VXLAN")
            found[v.underlay] = index
    return found


def _vni_in_use(error: netlink.NetlinkError, new: list[NewLink], host: str) -> netlink.NetlinkError | None:
    """EEXIST for a VXLAN device in a switch namespace made just now: its VNI has a device on this host's UDP
    port already (another experiment's: compile gives each experiment a block of its own)."""
    if error.code != errno.EEXIST or error.index is None or not 0 <= error.index < len(new):
        return None
    tunnel = new[error.index].tunnel
    if tunnel is None:
        return None
    return netlink.NetlinkError(f"vxlan vni {tunnel.vni} is in use on host {host} (another experiment?)",
                                error.code, error.index)


def _encoded(link: NewLink, fds: dict[str, int], underlays: dict[str, int]) -> bytes:
    """The rtnetlink message of a mechanism's link (a new kind of link: its encoder here)."""
    if link.kind == "bridge":
        return netlink.bridge(link.name, link.ifindex, fds[link.netns])
    if link.kind == "veth":
        peer = link.peer
        assert peer is not None
        return netlink.veth(link.name, link.ifindex, fds[link.netns], peer.name, peer.ifindex, fds[peer.netns],
                            mac=link.mac, peer_mac=link.peer_mac, master=link.master, up=link.up, mtu=link.mtu)
    if link.kind == "vxlan":
        v = link.tunnel
        assert v is not None
        return netlink.vxlan(link.name, link.ifindex, fds[link.netns], v.vni, v.local, underlays[v.underlay],
                             v.port, v.mtu, v.master)
    raise ValueError(f"no rtnetlink encoder for a {link.kind!r} link")


def _configure_nodes(nodes: list[NodePlan], netem_available: bool, progress: Progress, kernel: Kernel) -> None:
    for node in nodes:
        _configure_node(node, netem_available, kernel)
        progress.advance()


def _configure_node(node: NodePlan, netem_available: bool, kernel: Kernel = LINUX) -> None:
    """One batch in the node's namespace (netns "": a qemu node's guest agent configures the VM's own)."""
    batch = netlink.Batch()
    for message, purpose in nodeconfig.node_messages(node, netem_available):
        batch.add(message, purpose)
    kernel.send(node.netns, batch, f"node {node.name}")


def _iptables(node: NodePlan, rules: str, kernel: Kernel) -> None:
    code, error = kernel.iptables_restore(node.netns, rules)
    if code != 0:
        raise netlink.NetlinkError(f"node {node.name}: iptables loss rules failed: {error}")
