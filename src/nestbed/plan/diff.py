"""What changes between two HostPlans of one experiment on one host, by identity keys (pure data, no kernel).

Keys (design §3): a namespace by name; a bridge by (switch netns, name); a veth by its two ends (its value, ifindexes
and master included: any change recreates it); an interface by (node, segment): its shaping changes in place,
anything else (name, ifindex, MAC, address, MTU) recreates it; a route by (node, destination): a new gateway or
device replaces it in place; a node's forwarding sysctl in place. With pins (plan/pins.py) an edited topology
keeps every untouched object's key and value, so the diff holds only what the edit changed.

    d = diff(old, new)          # old None: everything is new
    d.empty                     # nothing to do on the kernel
    d.summary()                 # ["node x added", "lan0: member c removed", "l1: bandwidth 10Mbit → 20Mbit"]
"""
from __future__ import annotations

from dataclasses import dataclass, field

TYPE_CHECKING = False     # not typing's: keep plan modules light
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import (
    BridgePlan,
    HostPlan,
    InterfacePlan,
    NodePlan,
    PortShapingPlan,
    RoutePlan,
    SegmentPlan,
    ShapingPlan,
    VethPlan,
    VxlanPlan,
)
from nestbed.plan.mechanisms.vxlan import FLOOD_MAC


@dataclass
class PlanDiff:
    added_nodes: list[NodePlan] = field(default_factory=list)            # new plan's
    removed_nodes: list[NodePlan] = field(default_factory=list)          # old plan's
    added_namespaces: list[str] = field(default_factory=list)            # switch namespaces too
    removed_namespaces: list[str] = field(default_factory=list)
    added_bridges: list[BridgePlan] = field(default_factory=list)
    removed_bridges: list[BridgePlan] = field(default_factory=list)
    added_veths: list[VethPlan] = field(default_factory=list)
    removed_veths: list[VethPlan] = field(default_factory=list)
    # interfaces of nodes that stay (a new node's are all new: added_nodes)
    added_interfaces: list[tuple[NodePlan, InterfacePlan]] = field(default_factory=list)
    removed_interfaces: list[tuple[NodePlan, InterfacePlan]] = field(default_factory=list)
    reshaped: list[tuple[NodePlan, InterfacePlan, InterfacePlan]] = field(default_factory=list)   # node, old, new
    routes_set: list[tuple[NodePlan, RoutePlan]] = field(default_factory=list)       # create or replace
    routes_removed: list[tuple[NodePlan, RoutePlan]] = field(default_factory=list)
    forwarding: list[NodePlan] = field(default_factory=list)                          # sysctl changed
    commands_changed: list[NodePlan] = field(default_factory=list)                    # restarted there
    hosts_file: bool = False
    # a host plan across hosts: VXLAN devices by (switch netns, segment), recreated when anything but their FDB
    # changes; the FDB entries of devices that stay, one by one (flood entries of peers, remote members' MACs)
    added_vxlans: list[VxlanPlan] = field(default_factory=list)
    removed_vxlans: list[VxlanPlan] = field(default_factory=list)
    fdb_added: list[tuple[VxlanPlan, str, str]] = field(default_factory=list)       # device, mac, underlay dst
    fdb_removed: list[tuple[VxlanPlan, str, str]] = field(default_factory=list)
    others_added: list[NodePlan] = field(default_factory=list)       # other hosts' nodes (identity files only)
    others_removed: list[NodePlan] = field(default_factory=list)
    others_changed: bool = False
    # for the summary: the topology's view
    added_segments: list[SegmentPlan] = field(default_factory=list)
    removed_segments: list[SegmentPlan] = field(default_factory=list)
    members_added: list[tuple[str, str]] = field(default_factory=list)       # (segment, node) of segments that stay
    members_removed: list[tuple[str, str]] = field(default_factory=list)
    shaping_changed: list[tuple[str, ShapingPlan | None, ShapingPlan | None]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)      # what in-place modify cannot do yet (one line each)
    # LAN members' own ingress on their bridge ports, by (switch netns, port): (old, new), None for none. A port
    # whose veth is made anew has only its new shaping (the old qdisc went with the old veth).
    ports_reshaped: list[tuple[PortShapingPlan | None, PortShapingPlan | None]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to do on the host (the plans may still differ in bookkeeping, e.g. pins)."""
        return not any(value for value in self.__dict__.values())

    def summary(self) -> list[str]:
        lines = [f"node {n.name} added" for n in self.added_nodes]
        lines += [f"node {n.name} removed" for n in self.removed_nodes]
        lines += [f"{s.kind} {s.name} added ({', '.join(m[0] for m in s.members)})" for s in self.added_segments]
        lines += [f"{s.kind} {s.name} removed" for s in self.removed_segments]
        lines += [f"{seg}: member {node} added" for seg, node in self.members_added]
        lines += [f"{seg}: member {node} removed" for seg, node in self.members_removed]
        for seg, old, new in self.shaping_changed:
            lines += [f"{seg}: {change}" for change in shaping_changes(old, new)]
        segment_wide = {seg for seg, _, _ in self.shaping_changed}
        lines += [f"{i.segment}: egress of {n.name}: {change}" for n, was, i in self.reshaped
                  if i.segment not in segment_wide for change in shaping_changes(was.shaping, i.shaping)]
        lines += [f"{port.segment}: ingress of {port.node}: {change}" for was, now in self.ports_reshaped
                  for port in [now or was] if port is not None
                  for change in shaping_changes(was.shaping if was else None, now.shaping if now else None)]
        readdressed = {(n.name, i.segment) for n, i in self.added_interfaces} \
            & {(n.name, i.segment) for n, i in self.removed_interfaces}
        lines += [f"{node}: interface on {seg} recreated (address, MAC or MTU changed)"
                  for node, seg in sorted(readdressed)]
        lines += [f"node {n.name} added on {n.host}" for n in self.others_added]
        lines += [f"node {n.name} removed from {n.host}" for n in self.others_removed]
        lines += [f"{v.segment}: tunnel to {', '.join(v.peers) or 'no peer'} (re)made" for v in self.added_vxlans
                  if v.segment not in {s.name for s in self.added_segments}]
        fdb = len(self.fdb_added) + len(self.fdb_removed)
        if fdb:
            lines.append(f"{fdb} tunnel FDB entr{'y' if fdb == 1 else 'ies'} changed")
        lines += [f"node {n.name}: forwarding {'on' if n.forwarding else 'off'}" for n in self.forwarding]
        lines += [f"node {n.name}: commands changed ({'restarted' if n.commands else 'stopped'})"
                  for n in self.commands_changed]
        changed_routes = {n.name for n, _ in self.routes_set + self.routes_removed}
        if changed_routes:
            lines.append(f"routes changed on {len(changed_routes)} node{'s' if len(changed_routes) != 1 else ''}")
        if (self.hosts_file or self.others_changed) and not lines:
            lines.append("hosts and identity files changed")
        return lines + self.refused


UNITS = {"bandwidth": "bit", "delay": "s", "jitter": "s", "loss": "", "queue": " packets"}


def shaping_changes(old: ShapingPlan | None, new: ShapingPlan | None) -> list[str]:
    """"bandwidth 10Mbit → 20Mbit" per changed value."""
    out = []
    for key in UNITS:
        before, after = getattr(old, key, None) if old else None, getattr(new, key, None) if new else None
        if before != after:
            out.append(f"{key} {_shown(key, before)} → {_shown(key, after)}")
    return out


def _shown(key: str, value: float | int | None) -> str:
    if value is None:
        return "none"
    if key == "bandwidth":
        for unit, size in (("Gbit", 10**9), ("Mbit", 10**6), ("kbit", 10**3)):
            if value >= size and value % size == 0:
                return f"{int(value // size)}{unit}"
        return f"{int(value)}bit"
    if key in ("delay", "jitter"):
        return f"{value * 1000:g}ms"
    if key == "loss":
        return f"{value * 100:g}%"
    return f"{value}"


def diff(old: HostPlan | None, new: HostPlan) -> PlanDiff:
    """What turns `old` (None: nothing) into `new` on this host."""
    out = PlanDiff()
    out.refused = _refused(old, new)
    if old is None:
        old = HostPlan(experiment=new.experiment, host=new.host, routing=new.routing)
    old_nodes = {n.name: n for n in old.local_nodes}
    new_nodes = {n.name: n for n in new.local_nodes}
    out.added_nodes = [n for name, n in new_nodes.items() if name not in old_nodes]
    out.removed_nodes = [n for name, n in old_nodes.items() if name not in new_nodes]
    out.added_namespaces, out.removed_namespaces = _added_removed(old.netns_names, new.netns_names)
    out.added_bridges, out.removed_bridges = _added_removed(old.bridges, new.bridges)
    out.added_veths, out.removed_veths = _added_removed(old.veths, new.veths)

    for name, node in new_nodes.items():
        before = old_nodes.get(name)
        if before is None:
            continue
        _node_changes(before, node, out)
    out.hosts_file = old.hosts_file != new.hosts_file
    _vxlan_changes(old, new, out)
    _others_changes(old, new, out)
    _port_changes(old, new, out)

    # A host plan across hosts lists every segment: only those with a member here (before or after) concern it
    here = set(old_nodes) | set(new_nodes)
    old_segs = {s.name: s for s in old.segments if any(m[0] in here for m in s.members)}
    new_segs = {s.name: s for s in new.segments if any(m[0] in here for m in s.members)}
    out.added_segments = [s for name, s in new_segs.items() if name not in old_segs]
    out.removed_segments = [s for name, s in old_segs.items() if name not in new_segs]
    for name, seg in new_segs.items():
        before_seg = old_segs.get(name)
        if before_seg is None:
            continue
        old_members = [m[0] for m in before_seg.members]
        new_members = [m[0] for m in seg.members]
        out.members_added += [(name, n) for n in new_members if n not in old_members]
        out.members_removed += [(name, n) for n in old_members if n not in new_members]
        if before_seg.shaping != seg.shaping:
            out.shaping_changed.append((name, before_seg.shaping, seg.shaping))
    return out


def _port_changes(old: HostPlan, new: HostPlan, out: PlanDiff) -> None:
    """Bridge ports' qdiscs (members' ingress) that change in place; TAPs' go with their VMs (modify refuses)."""
    before = {(p.netns, p.name): p for p in old.port_shaping if p.ifindex is not None}
    after = {(p.netns, p.name): p for p in new.port_shaping if p.ifindex is not None}
    fresh = {(e.netns, e.name) for v in out.added_veths for e in (v.a, v.b)}
    gone = {(e.netns, e.name) for v in out.removed_veths for e in (v.a, v.b)}
    for key, port in after.items():
        if key in fresh:
            out.ports_reshaped.append((None, port))
        elif before.get(key) != port:
            out.ports_reshaped.append((before.get(key), port))
    out.ports_reshaped += [(was, None) for key, was in before.items() if key not in after and key not in gone]


def _vxlan_changes(old: HostPlan, new: HostPlan, out: PlanDiff) -> None:
    """A device whose VNI, ifindex, master, local end, port, underlay or MTU changed is made anew (with its
    FDB); of one that stays only the FDB entries that changed are added or deleted."""
    before = {(v.netns, v.segment): v for v in old.vxlans}
    after = {(v.netns, v.segment): v for v in new.vxlans}
    for key, device in after.items():
        was = before.get(key)
        if was is None or _device(was) != _device(device):
            out.added_vxlans.append(device)
            if was is not None:
                out.removed_vxlans.append(was)
            continue
        old_fdb, new_fdb = _fdb(was), _fdb(device)
        out.fdb_removed += [(was, mac, dst) for mac, dst in old_fdb if (mac, dst) not in new_fdb]
        out.fdb_added += [(device, mac, dst) for mac, dst in new_fdb if (mac, dst) not in old_fdb]
    out.removed_vxlans += [v for key, v in before.items() if key not in after]


def _device(v: VxlanPlan) -> tuple[Any, ...]:
    return (v.name, v.ifindex, v.master, v.vni, v.local, v.underlay, v.port, v.mtu)


def _fdb(v: VxlanPlan) -> list[tuple[str, str]]:
    """Flood entries first (peers), then the remote members' MACs."""
    return [(FLOOD_MAC, peer) for peer in v.peers] + [(mac, dst) for mac, dst in v.remote_macs]


def _others_changes(old: HostPlan, new: HostPlan, out: PlanDiff) -> None:
    """Other hosts' nodes: what this host's identity files say of them."""
    before = {n.name: n for n in old.others}
    after = {n.name: n for n in new.others}
    out.others_added = [n for name, n in after.items() if name not in before]
    out.others_removed = [n for name, n in before.items() if name not in after]
    out.others_changed = bool(out.others_added or out.others_removed) or any(
        before[name] != n for name, n in after.items() if name in before) or old.node_order != new.node_order


def _added_removed(old: list[Any], new: list[Any]) -> tuple[list[Any], list[Any]]:
    """By value (frozen dataclasses, names): (in new only, in old only), each in its plan's order."""
    old_set, new_set = set(old), set(new)
    return [x for x in new if x not in old_set], [x for x in old if x not in new_set]


def _node_changes(before: NodePlan, node: NodePlan, out: PlanDiff) -> None:
    """A node that stays: its interfaces by segment, its routes by destination, its forwarding and commands."""
    old_ifaces = {i.segment: i for i in before.interfaces}
    new_ifaces = {i.segment: i for i in node.interfaces}
    recreated: set[str] = set()
    for seg, iface in new_ifaces.items():
        was = old_ifaces.get(seg)
        if was is None:
            out.added_interfaces.append((node, iface))
            recreated.add(iface.name)
        elif _without_shaping(was) != _without_shaping(iface):
            out.removed_interfaces.append((before, was))
            out.added_interfaces.append((node, iface))
            recreated.add(iface.name)
        elif was.shaping != iface.shaping:
            out.reshaped.append((node, was, iface))
    gone = {i.name for seg, i in old_ifaces.items() if seg not in new_ifaces}
    out.removed_interfaces += [(before, i) for seg, i in old_ifaces.items() if seg not in new_ifaces]

    old_routes = {r.destination: r for r in before.routes}
    new_routes = {r.destination: r for r in node.routes}
    for dest, route in new_routes.items():
        if old_routes.get(dest) != route or route.device in recreated:
            out.routes_set.append((node, route))    # a recreated interface lost its routes with the old link
    for dest, route in old_routes.items():
        if dest not in new_routes and route.device not in gone | recreated:    # those went with their link
            out.routes_removed.append((node, route))
    if before.forwarding != node.forwarding:
        out.forwarding.append(node)
    if before.commands != node.commands:
        out.commands_changed.append(node)


def _without_shaping(iface: InterfacePlan) -> tuple[str, int, str, str, int | None]:
    return (iface.name, iface.ifindex, iface.address, iface.mac, iface.mtu)


def _refused(old: HostPlan | None, new: HostPlan) -> list[str]:
    """In place for process nodes only (on one host or across hosts), for now: one line for what is left."""
    lines = []
    if old is not None and (old.vms or new.vms or old.control or new.control):
        lines.append("modify of VM nodes (and of control: true) comes next: take the experiment down and up")
    return lines
