"""Apply a PlanDiff (plan/diff.py) to a running experiment on this host: only the difference, journal first.

Removals go first (their names and ifindexes may come back in the same diff): the processes of removed nodes,
then links deleted by ifindex in a namespace that stays (a veth goes with either end: the bridge port of a removed
LAN member with it; an explicit delete, because a namespace stays alive while a process holds its fd), bridges,
namespaces; routes and addresses that no longer exist. Each removal is followed by tombstones of its journal
entries (realize/journal.py), so the journal keeps naming exactly what exists. Then additions, each journaled
before it is made as `up` does: namespaces, bridges and veths (realize/apply.py's link path), per node one batch of
interface configuration, routes (create-or-replace: a new gateway replaces the old in place) and shaping; shaping
that changed is rebuilt in place the way `nestbed link … set` does (the old root qdisc deleted, the new one added);
forwarding sysctls; the hosts and identity files rewritten; mailboxes and start commands of new nodes.
A node that stays but whose `commands` changed has the commands nestbed started for it stopped (each one's process
group, with the removals) and the new ones started (with the additions); nothing else of it, nor of any other
node, is touched: programs the host agent spawned there keep running.
The host agent is the caller's (agent/lifecycle.py): it must learn about new and removed nodes.
"""
from __future__ import annotations

import signal
import struct
import time
from dataclasses import replace

TYPE_CHECKING = False     # not typing's: keep the realize modules light
if TYPE_CHECKING:
    from typing import Any

from nestbed import netlinkwire as wire
from nestbed import procs
from nestbed.plan import mechanisms
from nestbed.plan.diff import PlanDiff
from nestbed.plan.hostplan import HostPlan, InterfacePlan, NodePlan
from nestbed.plan.mechanisms.vxlan import FLOOD_MAC
from nestbed.realize import apply, linkmember, linkstate, netlink, processes, shaping
from nestbed.realize.kernel import LINUX, Kernel
from nestbed.realize.state import ExperimentState

RTM_DELLINK, RTM_DELADDR, RTM_DELROUTE, RTM_DELNEIGH = 17, 21, 25, 29
COMMANDS_GRACE = 1.0       # a changed node's old commands: SIGTERM, then SIGKILL what is left after this long
PROBE_NODE = "~probe"      # never a node's name: the netns of a plan that only asks the kernel for features


def features_for(old: HostPlan, new: HostPlan, d: PlanDiff, kernel: Kernel) -> dict[str, bool]:
    """What the kernel offers the new objects (preflight's checks, on them only: the rest exists already)."""
    changed = [i for _, i in d.added_interfaces] + [i for _, _, i in d.reshaped]
    ports = [now for _, now in d.ports_reshaped if now is not None]
    if not (d.added_nodes or d.added_namespaces or any(i.shaping for i in changed) or ports):
        return {"netem": False, "iptables_loss": False}
    probe = HostPlan(experiment=new.experiment, host=new.host, routing=new.routing,
                     switch_namespaces=[ns for ns in d.added_namespaces if ns in new.switch_namespaces],
                     nodes=list(d.added_nodes), segments=new.segments, port_shaping=ports)
    if changed:
        probe.nodes.append(NodePlan(name=PROBE_NODE, kind="process", netns=f"{new.experiment}.{PROBE_NODE}",
                                    forwarding=False, interfaces=changed))
    return kernel.features(probe)


def apply_diff(old: HostPlan, new: HostPlan, d: PlanDiff, state: ExperimentState, features: dict[str, bool],
               kernel: Kernel = LINUX) -> None:
    """Make the host that realizes `old` realize `new`; d = diff(old, new), not empty, nothing refused.
    On a failure the additions are undone (the removals are idempotent), so the same diff can be applied again."""
    _remove(old, new, d, state, kernel)
    try:
        _add(new, d, state, features, kernel)
    except BaseException:
        _undo_additions(new, d, state, kernel)
        raise


def _undo_additions(new: HostPlan, d: PlanDiff, state: ExperimentState, kernel: Kernel) -> None:
    """What _add made of the new namespaces, links and processes, removed again (whatever of it exists)."""
    added_ns = set(d.added_namespaces)
    added_nodes = {n.name for n in d.added_nodes}
    if added_ns:
        pids = kernel.processes_in(sorted(added_ns))
        if pids:
            kernel.kill(sorted(pids))
    for veth in d.added_veths:
        end = next((e for e in (veth.a, veth.b) if e.netns not in added_ns), None)
        if end is not None and end.netns in {n.netns for n in new.local_nodes} | set(new.switch_namespaces):
            _send_each(kernel, end.netns, [(_delete_link(end.ifindex), f"undo {end.name}")])
    for bridge in d.added_bridges:
        if bridge.netns not in added_ns:
            _send_each(kernel, bridge.netns, [(_delete_link(bridge.ifindex), f"undo {bridge.name}")])
    for device in d.added_vxlans:
        if device.netns not in added_ns:
            _send_each(kernel, device.netns, [(_delete_link(device.ifindex), f"undo {device.name}")])
    for name in d.added_namespaces:
        kernel.remove_namespace(name)
    links = {(v.a.netns, v.a.name) for v in d.added_veths} | {(b.netns, b.name) for b in d.added_bridges}
    links |= {(v.netns, v.name) for v in d.added_vxlans}
    ifaces = {(n.netns, i.name) for n, i in d.added_interfaces}
    state.journal.bury(e for e in state.journal.entries() if _is_removed(e, added_ns, added_nodes, links, ifaces))


# -- removals ------------------------------------------------------------------------------------------------------

def _remove(old: HostPlan, new: HostPlan, d: PlanDiff, state: ExperimentState, kernel: Kernel) -> None:
    journal = state.journal
    gone_ns = set(d.removed_namespaces)
    gone_nodes = {n.name for n in d.removed_nodes}
    if d.removed_nodes:       # their programs first: nothing keeps a removed node's namespace alive
        pids = kernel.processes_in([n.netns for n in d.removed_nodes])
        if pids:
            kernel.kill(sorted(pids))
    restarted = {n.name for n in d.commands_changed if n.name not in gone_nodes}
    if restarted:
        stop_commands(state, restarted)

    deletions: dict[str, list[tuple[bytes, str]]] = {}
    for veth in d.removed_veths:      # from a namespace that stays (both ends going: they go with theirs)
        end = next((e for e in (veth.a, veth.b) if e.netns not in gone_ns), None)
        if end is not None:
            deletions.setdefault(end.netns, []).append((_delete_link(end.ifindex), f"delete {end.name}"))
    for bridge in d.removed_bridges:
        if bridge.netns not in gone_ns:
            deletions.setdefault(bridge.netns, []).append((_delete_link(bridge.ifindex), f"delete {bridge.name}"))
    for device in d.removed_vxlans:     # before its bridge would be fine too: it is a port of it
        if device.netns not in gone_ns:
            deletions.setdefault(device.netns, []).insert(0, (_delete_link(device.ifindex), f"delete {device.name}"))
    for device, mac, dst in d.fdb_removed:     # one destination of one MAC (a flood entry's other peers stay)
        deletions.setdefault(device.netns, []).append(
            (_as(netlink.fdb_entry(device.ifindex, mac, dst, True), RTM_DELNEIGH), f"{device.name}: {mac} via {dst}"))
    for netns, messages in deletions.items():
        _send_each(kernel, netns, messages)

    still = {v for v in new.veths}
    readdressed = [(n, i) for n, i in d.removed_interfaces if n.name not in gone_nodes
                   and any((v.a.netns, v.a.name) == (n.netns, i.name) or (v.b.netns, v.b.name) == (n.netns, i.name)
                           for v in still)]
    for node, iface in readdressed:     # its link stays (same veth): only the old address goes
        ip, prefix = iface.address.split("/")
        _send_each(kernel, node.netns, [(_as(netlink.address(iface.ifindex, ip, int(prefix)), RTM_DELADDR),
                                         f"delete address {iface.address} on {iface.name}")])
    for node, route in d.routes_removed:
        ifindex = next((i.ifindex for i in node.interfaces if i.name == route.device), None)
        if ifindex is not None:
            _send_each(kernel, node.netns, [(_as(netlink.route(route.destination, route.gateway, ifindex),
                                                 RTM_DELROUTE), f"delete route to {route.destination}")])
    for name in d.removed_namespaces:
        kernel.remove_namespace(name)

    entries = journal.entries()
    removed_links = {(v.a.netns, v.a.name) for v in d.removed_veths} | {(b.netns, b.name) for b in d.removed_bridges}
    removed_links |= {(v.netns, v.name) for v in d.removed_vxlans}
    removed_ifaces = {(n.netns, i.name) for n, i in d.removed_interfaces if (n, i) not in readdressed}
    removed_ifaces |= {(e.netns, e.name) for v in d.removed_veths for e in (v.a, v.b)}    # bridge ports' qdiscs
    journal.bury(e for e in entries if _is_removed(e, gone_ns, gone_nodes, removed_links, removed_ifaces))
    journal.compact()


def _is_removed(entry: dict[str, Any], gone_ns: set[str], gone_nodes: set[str],
                links: set[tuple[str, str]], ifaces: set[tuple[str, str]]) -> bool:
    kind = entry.get("t")
    if kind == "netns":
        return entry["name"] in gone_ns
    if kind in ("veth", "bridge", "vxlan"):
        return (entry.get("netns"), entry.get("name")) in links
    if kind == "qdisc":
        return entry.get("netns") in gone_ns or (entry.get("netns"), entry.get("dev")) in ifaces
    if kind in ("pid", "process", "iptables"):
        return entry.get("node") in gone_nodes or (kind == "iptables" and entry.get("netns") in gone_ns)
    return False


def _delete_link(ifindex: int) -> bytes:
    return wire.message(RTM_DELLINK, wire.NLM_F_REQUEST | wire.NLM_F_ACK, wire.IFINFO.pack(0, 0, ifindex, 0, 0))


def _as(message: bytes, kind: int) -> bytes:
    """A create message turned into its delete (same body: the kernel finds the object by it)."""
    length, _kind, _flags, seq, pid = struct.unpack_from("=IHHII", message)
    return struct.pack("=IHHII", length, kind, wire.NLM_F_REQUEST | wire.NLM_F_ACK, seq, pid) + message[16:]


def _send_each(kernel: Kernel, netns: str, messages: list[tuple[bytes, str]]) -> None:
    """Deletions one by one, each allowed to find nothing (a crash after the removal, before its tombstone)."""
    for message, purpose in messages:
        batch = netlink.Batch()
        batch.add(message, purpose)
        try:
            kernel.send(netns, batch, purpose)
        except netlink.NetlinkError:
            pass


# -- additions -----------------------------------------------------------------------------------------------------

def _add(new: HostPlan, d: PlanDiff, state: ExperimentState, features: dict[str, bool], kernel: Kernel) -> None:
    journal = state.journal
    by_netns = {n.netns: n for n in new.local_nodes}
    if d.added_namespaces:
        journal.record({"t": "netns", "name": name} for name in d.added_namespaces)
        strict = apply._host_rp_filter_is_strict(kernel)
        kernel.create_namespaces(d.added_namespaces,
                                 lambda name: apply._sysctls(kernel, by_netns.get(name), strict), lambda _: None)
    if d.added_bridges or d.added_veths or d.added_vxlans:
        links = replace(new, bridges=d.added_bridges, veths=d.added_veths, vxlans=d.added_vxlans)
        journal.record(mechanisms.entries(links))
        apply._links(links, kernel, apply.NoProgress(), apply._underlays(links, kernel) if d.added_vxlans else {})
    if d.fdb_added:         # of devices that stay: the new peers' flood entries, the new remote members' MACs
        fdbs: dict[str, netlink.Batch] = {}
        for device, mac, dst in d.fdb_added:
            fdbs.setdefault(device.netns, netlink.Batch()).add(
                _replacing(netlink.fdb_entry(device.ifindex, mac, dst, False)) if mac != FLOOD_MAC
                else netlink.fdb_entry(device.ifindex, mac, dst, True), f"{device.name}: {mac} via {dst}")
        for netns, batch in fdbs.items():
            kernel.send(netns, batch, netns)

    netem = features.get("netem", False)
    added = {n.name for n in d.added_nodes}
    new_ifaces: dict[str, list[InterfacePlan]] = {}
    for node, iface in d.added_interfaces:
        new_ifaces.setdefault(node.name, []).append(iface)
    reshaped: dict[str, list[tuple[InterfacePlan, InterfacePlan]]] = {}
    for node, was, iface in d.reshaped:
        reshaped.setdefault(node.name, []).append((was, iface))
    routes: dict[str, list[Any]] = {}
    for node, route in d.routes_set:
        routes.setdefault(node.name, []).append(route)
    nodes = {n.name: n for n in new.local_nodes}
    shaped = [(n, i) for n in d.added_nodes for i in n.interfaces] + d.added_interfaces \
        + [(n, i) for n, was, i in d.reshaped if was.shaping is None]
    journal.record({"t": "qdisc", "netns": n.netns, "dev": i.name} for n, i in shaped if i.shaping)
    for node in d.added_nodes:
        apply._configure_node(node, netem, kernel)
    _reshape_ports(d, journal, netem, kernel)
    for name in sorted(set(new_ifaces) | set(reshaped) | set(routes)):
        if name in added:
            continue
        _configure_changes(nodes[name], new_ifaces.get(name, []), reshaped.get(name, []), routes.get(name, []),
                           netem, kernel)
    for node in d.forwarding:
        if node.name not in added:
            kernel.set_sysctls(node.netns, {"net/ipv4/ip_forward": "1" if node.forwarding else "0"})
    if features.get("iptables_loss"):
        lossy = [(n, shaping.iptables_loss_rules(n.interfaces, False)) for n in d.added_nodes]
        lossy = [(n, rules) for n, rules in lossy if rules]
        journal.record({"t": "iptables", "netns": n.netns, "node": n.name} for n, _ in lossy)
        for node, rules in lossy:
            apply._iptables(node, rules, kernel)
    _forget_runtime_shaping(state, [seg for seg, _, _ in d.shaping_changed]
                            + [s.name for s in d.removed_segments])

    if d.hosts_file or d.added_nodes or d.removed_nodes or d.others_changed:
        with open(state.hosts_path, "w") as handle:    # in place: the same inode is every node's /etc/hosts
            handle.write(new.hosts_file)
        kernel.write_identity(state, new, apply.control_info(new))
    if d.added_nodes:
        kernel.create_mailboxes(state.directory, new.experiment, [n.name for n in d.added_nodes if n.netns])
        with_commands = [n for n in d.added_nodes if n.commands]
        if with_commands:
            processes.start_commands(with_commands, state)
    changed = [n for n in d.commands_changed if n.name not in added and n.commands]
    if changed:            # their old commands were stopped with the removals
        processes.start_commands(changed, state)


def stop_commands(state: ExperimentState, nodes: set[str]) -> int:
    """Stop the start commands nestbed started for these nodes: their journaled pids (those without a program
    name: what the host agent spawned carries its own) that still name the process started, each one's process
    group (a command is `sh -c` leading its session) SIGTERMed, SIGKILLed after COMMANDS_GRACE; then their
    journal entries tombstoned. Returns how many were running."""
    entries = state.journal.entries()
    started = [e for e in entries if e.get("t") == "pid" and e.get("node") in nodes
               and "name" not in e and "role" not in e]
    running = [e["pid"] for e in started if procs.is_same(e["pid"], e.get("start"))]
    for pid in running:
        procs.kill_group(pid, signal.SIGTERM)
    left = list(running)
    deadline = time.monotonic() + COMMANDS_GRACE
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        for pid in left:
            _reaped(pid)
        left = [pid for pid in left if procs.group_alive(pid)]
    for pid in left:
        procs.kill_group(pid, signal.SIGKILL)
        _reaped(pid)
    state.journal.bury(started + [e for e in entries if e.get("t") == "process" and e.get("node") in nodes])
    return len(running)


def _configure_changes(node: NodePlan, ifaces: list[InterfacePlan], reshaped: list[tuple[InterfacePlan,
                       InterfacePlan]], routes: list[Any], netem: bool, kernel: Kernel) -> None:
    """One node that stays: its new interfaces up with addresses, its routes set, its shaping rebuilt in place."""
    quiet, strict = netlink.Batch(), netlink.Batch()
    for iface in ifaces:
        strict.add(netlink.quiet_ipv6(iface.ifindex), f"{iface.name} without IPv6 link-local")
        strict.add(netlink.link_up(iface.ifindex), f"{iface.name} up")
        ip, prefix = iface.address.split("/")
        strict.add(_replacing(netlink.address(iface.ifindex, ip, int(prefix))),
                   f"address {iface.address} on {iface.name}")
    ifindex = {i.name: i.ifindex for i in node.interfaces}
    for route in routes:
        strict.add(_replacing(netlink.route(route.destination, route.gateway, ifindex[route.device])),
                   f"route to {route.destination} via {route.gateway}")
    for iface in ifaces:
        for message, purpose in shaping.messages(iface, netem):
            strict.add(message, purpose)
    for _was, iface in reshaped:     # as `nestbed link set`: the old root qdisc goes, the new one is built
        quiet.add(linkmember.delete_root_qdisc(iface.ifindex), f"old qdisc on {iface.name}")
        for message, purpose in shaping.messages(iface, netem):
            strict.add(message, purpose)
    if quiet.messages:
        try:
            kernel.send(node.netns, quiet, f"node {node.name}")
        except netlink.NetlinkError:
            pass           # no root qdisc to delete
    if strict.messages:
        kernel.send(node.netns, strict, f"node {node.name}")


def _reshape_ports(d: PlanDiff, journal: Any, netem: bool, kernel: Kernel) -> None:
    """Members' ingress on their bridge ports, as `link set` rebuilds an egress: the old root qdisc deleted, the
    new one built (journaled first); a port left without any has its entry tombstoned."""
    from nestbed.realize import portshaping
    journal.record(portshaping.entry(now) for was, now in d.ports_reshaped if now is not None and was is None)
    for was, now in d.ports_reshaped:
        port = now or was
        assert port is not None and port.ifindex is not None
        if was is not None:
            _send_each(kernel, port.netns, [(linkmember.delete_root_qdisc(port.ifindex), f"old qdisc on {port.name}")])
        if now is not None:
            batch = netlink.Batch()
            for message, purpose in portshaping.messages(now, port.ifindex, netem):
                batch.add(message, purpose)
            kernel.send(port.netns, batch, f"ingress of {port.node}")
    unshaped = {(was.netns, was.name) for was, now in d.ports_reshaped if now is None and was is not None}
    if unshaped:
        journal.bury(e for e in journal.entries()
                     if e.get("t") == "qdisc" and (e.get("netns"), e.get("dev")) in unshaped)


def _replacing(message: bytes) -> bytes:
    return wire.with_flags(message, wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.NLM_F_CREATE | wire.NLM_F_REPLACE)


def _forget_runtime_shaping(state: ExperimentState, segments: list[str]) -> None:
    """A segment whose shaping the file changed takes the file's: a runtime `nestbed link set` on it is over."""
    changed = linkstate.load(state)
    if not any(seg in changed for seg in segments):
        return
    import json
    data = json.loads(linkstate.links_path(state).read_text())
    for seg in segments:
        data.get("segments", {}).pop(seg, None)
    linkstate.write(state, data)


def _reaped(pid: int) -> bool:
    """A command this process started (an agent that applied the previous plan) is its child: reap it, or it
    stays a zombie that looks alive (its group with it). False for anyone else's."""
    import os
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False
