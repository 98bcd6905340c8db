"""Compile a validated Experiment into the HostPlan of this machine.

Process nodes are namespaces. A qemu node is a VM; with `embed: {processes_in: qemu}` process nodes live in vhost
VMs. A VM's NIC is a TAP in its segment's switch namespace, so any segment with a VM member is bridged (a link
too); inside a vhost the guest agent realizes its own small HostPlan (`VmPlan.guest`): the processes'
namespaces and one bridge per segment, which the NIC of that segment joins (`UplinkPlan`). Every VM also has a
NIC on the experiment's control network (`ControlPlan`), where its agent listens.
"""
from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING

from nestbed import paths
from nestbed.errors import PreflightError, TopologyError
from nestbed.kinds import registry
from nestbed.model.cluster import LOCAL_HOST
from nestbed.model.topology import Endpoint, Experiment, Node, Shaping
from nestbed.plan import gcpause, mechanisms, pathshaping
from nestbed.plan.addressing import allocate
from nestbed.plan.hostplan import (
    ControlPlan,
    HostPlan,
    InterfacePlan,
    NodePlan,
    RoutePlan,
    SegmentPlan,
    ShapingPlan,
    VmPlan,
)
from nestbed.plan.mechanisms import bridge, tap, veth
from nestbed.plan.mechanisms.specs import FIRST_IFINDEX
from nestbed.plan.pins import Pins
from nestbed.plan.routing import Attachment, covering_supernet, shortest_path_routes
from nestbed.plan.userroutes import apply_user_routes

if TYPE_CHECKING:
    from nestbed.embed import Embedding

AGENT_PORT = 7007              # guest agents listen here, on their control address only
MAX_VMS = 250                  # control addresses .2 … .251 of the experiment's /24


def netns_name(experiment: str, node: str) -> str:
    """Kernel-visible names carry the experiment, so two experiments with the same node names coexist."""
    return f"{paths.object_prefix()}-{experiment}.{node}"


def switch_netns_name(experiment: str, lan: str) -> str:
    """A LAN's bridges; the '.sw' suffix cannot clash with a node (node names have no dots)."""
    return f"{paths.object_prefix()}-{experiment}.{lan}.sw"


def _shaping(shaping: Shaping) -> ShapingPlan | None:
    if shaping.is_empty:
        return None
    return ShapingPlan(shaping.bandwidth, shaping.delay, shaping.jitter, shaping.loss, shaping.queue)


def _member_shapings(kind: str, segment: ShapingPlan | None, ends: list[Endpoint]
                     ) -> list[tuple[ShapingPlan | None, ShapingPlan | None]] | None:
    """(egress qdisc, ingress at the bridge port) of each member with per-member settings; None without any.
    A link has no port of its own (a veth pair): the other end's ingress joins this end's egress."""
    if not any(end.has_own_shaping for end in ends):
        return None
    if kind == "link":
        (a, b) = ends
        return [(pathshaping.compose(segment, _shaping(a.egress), _shaping(b.ingress)), None),
                (pathshaping.compose(segment, _shaping(b.egress), _shaping(a.ingress)), None)]
    return [(pathshaping.compose(segment, _shaping(end.egress)), _shaping(end.ingress)) for end in ends]


def _mac(experiment_tag: int, node_index: int, interface_index: int) -> str:
    """Locally administered, stable: experiment tag, then 20 bits of node and 12 bits of interface number."""
    low = ((node_index & 0xFFFFF) << 12) | (interface_index & 0xFFF)
    return ":".join(f"{o:02x}" for o in [0x02, experiment_tag, *low.to_bytes(4, "big")])


def compile_plan(exp: Experiment, embedding: Embedding | None = None, pins: Pins | None = None,
                 busy_control_subnets: Collection[int] = ()) -> HostPlan:
    """The plan for this host. busy_control_subnets: third octets X of the 172.30.X.0/24 subnets in use on the
    host (other experiments' control networks); the control subnet is the first free one from the name's.
    pins: the numbering of the running experiment's plan (plan/pins.py), kept for every object still there."""
    with gcpause.paused():
        return _compile_plan(exp, embedding, pins, busy_control_subnets)


def _compile_plan(exp: Experiment, embedding: Embedding | None, pins: Pins | None,
                  busy_control_subnets: Collection[int]) -> HostPlan:
    exp.validate()
    nodes = exp.expanded_nodes()
    members = {name: exp.segment_members(seg, nodes) for name, seg in exp.segments.items()}
    pins = pins.copy() if pins is not None else Pins()
    pins.keep_only(set(nodes), set(exp.segments))
    pins.keep_memberships({name: {end.node for end in ends} for name, ends in members.items()})
    addresses = allocate([(name, seg.kind, members[name]) for name, seg in exp.segments.items()],
                         pins.subnets, pins.addresses, pins.next_address)
    for name, seg_addresses in addresses.items():
        pins.subnets[name] = str(seg_addresses.subnet)
        pins.addresses[name] = {node: str(a) for node, a in seg_addresses.addresses.items()}
        if not any(end.ip is not None for end in members[name]):     # auto-allocated: new ones go past it
            pins.next_address = max(pins.next_address, int(seg_addresses.subnet.broadcast_address) + 1)

    tag = zlib.crc32(exp.name.encode()) & 0xFF
    if pins.control_tag is None:
        pins.control_tag = control_subnet_tag(exp.name, busy_control_subnets)
    control_tag = pins.control_tag
    node_index = {name: pins.node_index(name) for name in nodes}
    vm_of = _vm_of(exp, nodes, embedding)
    plans = {name: NodePlan(name=name, kind=node.kind, netns=netns_name(exp.name, name), forwarding=node.router,
                            commands=list(node.commands), vm=vm_of.get(name)) for name, node in nodes.items()}
    plan = HostPlan(experiment=exp.name, host=LOCAL_HOST, routing=exp.routing)
    vms = _vm_plans(exp, nodes, vm_of, tag, control_tag)
    guests = {name: HostPlan(experiment=exp.name, host=name, routing=exp.routing)
              for name, vm in vms.items() if not registry.get(vm.kind).own_vm}

    attachments: dict[str, tuple[ipaddress.IPv4Network, list[Attachment]]] = {}
    for name, segment in exp.segments.items():
        seg_index = pins.segment_index(name)
        shaping = _shaping(segment.shaping)
        seg_addresses = addresses[name]
        ends: list[InterfacePlan] = []
        own = _member_shapings(segment.kind, shaping, members[name])
        for k, end in enumerate(members[name]):
            node = plans[end.node]
            j = pins.eth_number(end.node, name)
            egress, ingress = own[k] if own else (shaping, None)
            iface = InterfacePlan(name=f"eth{j}", ifindex=FIRST_IFINDEX + j, segment=name,
                                  address=str(seg_addresses.addresses[end.node]),
                                  mac=_mac(tag, node_index[end.node], j), shaping=egress, ingress=ingress)
            node.interfaces.append(iface)
            ends.append(iface)
        attachments[name] = (seg_addresses.subnet, [
            Attachment(end.node, iface.name, seg_addresses.addresses[end.node])
            for end, iface in zip(members[name], ends)])
        plan.segments.append(SegmentPlan(name=name, kind=segment.kind, subnet=str(seg_addresses.subnet),
                                         members=[(end.node, iface.name, iface.address)
                                                  for end, iface in zip(members[name], ends)],
                                         shaping=shaping))
        pairs = [(plans[e.node], iface) for e, iface in zip(members[name], ends)]
        if mechanisms.choose(segment.kind, pairs) == "veth":
            veth.plan(plan, pairs)
            continue
        root = bridge.plan(plan, switch_netns_name(exp.name, name), seg_index, name,
                           [(n, i) for n, i in pairs if n.vm is None], node_index, pins)
        tap.plan(tag, seg_index, name, pairs, root, vms, guests, node_index, plan)

    if exp.routing == "static":
        supernet = covering_supernet([subnet for subnet, _ in attachments.values()])
        routes, forwarders = shortest_path_routes(attachments, supernet)
        converted: dict[int, list[RoutePlan]] = {}     # leaves on one segment share their routes: convert once
        for name, node_routes in routes.items():
            if id(node_routes) not in converted:
                converted[id(node_routes)] = [RoutePlan(r.destination, r.gateway, r.device) for r in node_routes]
            plans[name].routes = list(converted[id(node_routes)])
            if name in forwarders:
                plans[name].forwarding = True

    for node_plan in plans.values():      # by ethN: with pins a new segment early in the file still comes last
        node_plan.interfaces.sort(key=lambda iface: iface.ifindex)
    apply_user_routes(nodes, plans, {name: subnet for name, (subnet, _) in attachments.items()},
                      {name for name, segment in exp.segments.items() if segment.kind == "link"})
    plan.nodes = list(plans.values())
    plan.hosts_file = hosts_file(exp.name, plan.nodes)
    # Process nodes with `control: true` get a ctl0 on the control network too (after the VMs), on the host's
    # control bridge, or inside their vhost on a bridge with the VM's control NIC.
    controlled = [plans[name] for name, node in nodes.items()
                  if not registry.get(node.kind).own_vm and registry.get(node.kind).has_control(node)]
    if len(vms) + len(controlled) > MAX_VMS:
        raise TopologyError(f"{len(vms)} VMs and {len(controlled)} nodes with control: true, but an experiment's "
                            f"control network holds {MAX_VMS}", exp.location,
                            "use fewer qemu nodes, a larger embed.per_vhost or fewer control: true")
    number = control_host_numbers(exp, nodes, list(vms))
    for node in controlled:
        node.control_address = f"{_control_prefix(control_tag)}.{number[node.name]}/24"
    if vms or controlled:
        prefix = _control_prefix(control_tag)
        plan.control = ControlPlan(subnet=f"{prefix}.0/24", host_address=f"{prefix}.1/24", port=AGENT_PORT)
        for vm in vms.values():
            attach_guest(vm, [p for p in plan.nodes if p.vm == vm.name], guests, plan)
        plan.vms = list(vms.values())
    plan.pins = pins.to_dict()
    return plan


def attach_guest(vm: VmPlan, inside: list[NodePlan], guests: dict[str, HostPlan], host: HostPlan) -> None:
    """The plan its guest agent realizes: a qemu node configures the VM's own root namespace (netns ""); a vhost's
    guest holds its processes' namespaces and the bridges the NIC planning gave it (`guests`)."""
    nodes = [replace(node, vm=None) for node in inside]
    if registry.get(vm.kind).own_vm:          # the VM is the node: it configures its own root namespace
        vm.guest = HostPlan(experiment=host.experiment, host=vm.name, routing=host.routing,
                            nodes=[replace(nodes[0], netns="")])
    else:
        vm.guest = guests[vm.name]
        vm.guest.nodes = nodes
    vm.guest.hosts_file = host.hosts_file


def _vm_of(exp: Experiment, nodes: dict[str, Node], embedding: Embedding | None) -> dict[str, str]:
    """node → the VM it is (qemu) or runs in (a vhost). Placement on this machine comes from the embedder."""
    if embedding is None and exp.embed.processes_in == "qemu":
        from nestbed.embed import embed
        from nestbed.model.cluster import local_cluster
        embedding = embed(exp, local_cluster())
    vm_of = {}
    for name, node in nodes.items():
        kind = registry.get(node.kind)
        if kind.own_vm:
            vm_of[name] = name
        elif kind.runs_in_vhost and embedding is not None and embedding.placement[name].vhost is not None:
            vm_of[name] = embedding.placement[name].vhost  # type: ignore[assignment]
    return vm_of


def _vm_plans(exp: Experiment, nodes: dict[str, Node], vm_of: dict[str, str], tag: int,
              control_tag: int) -> dict[str, VmPlan]:
    names = list(dict.fromkeys(vm_of.values()))       # in node order
    if len(names) > MAX_VMS:
        raise TopologyError(f"{len(names)} VMs, but an experiment's control network holds {MAX_VMS}",
                            exp.location, "use fewer qemu nodes or a larger embed.per_vhost")
    number = control_host_numbers(exp, nodes, names)
    vms = {}
    for k, name in enumerate(names):
        own = nodes.get(name)
        node = own if own is not None and registry.get(own.kind).own_vm else None     # None: a vhost
        kind = registry.get(node.kind if node is not None else registry.VHOST)
        vms[name] = VmPlan(name=name, kind=kind.name, cpus=max(1, round(kind.cpus(node))),
                           memory=max(64, kind.memory(node) // 2**20),
                           control_address=f"{_control_prefix(control_tag)}.{number[name]}/24",
                           control_mac=":".join(f"{o:02x}" for o in (0x06, tag, 0, 0, 0, k)))
    return vms


def control_host_numbers(exp: Experiment, nodes: dict[str, Node], vms: list[str]) -> dict[str, int]:
    """The last octet of each control address: the experiment's own (nodes whose kind gives them one: qemu nodes,
    processes with `control: true`) in node order from .2, whatever the embedding; then the vhosts, the testbed's."""
    own = [name for name, node in nodes.items() if registry.get(node.kind).has_control(node)]
    vhosts = [name for name in vms if name not in nodes]
    return {name: k + 2 for k, name in enumerate(own + vhosts)}


def control_subnet_tag(experiment: str, busy: Collection[int] = ()) -> int:
    """X of the experiment's control subnet 172.30.X.0/24: from its name, or the next one not busy on the host."""
    first = zlib.crc32(experiment.encode()) & 0xFF
    for step in range(256):
        if (first + step) % 256 not in busy:
            return (first + step) % 256
    raise PreflightError("every control subnet 172.30.0.0/24 … 172.30.255.0/24 is in use on this host; "
                         "take another experiment down")


def _control_prefix(tag: int) -> str:
    return f"172.30.{tag}"


def hosts_file(experiment: str, nodes: list[NodePlan]) -> str:
    """/etc/hosts for every node: `node-segment` per interface and the plain name on the first one (Emulab)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"# nestbed experiment {experiment}"]
    taken = {node.name for node in nodes}     # a node called `a-lan0` owns that name, not node a's lan0 address
    for node in nodes:
        for j, iface in enumerate(node.interfaces):
            alias = f"{node.name}-{iface.segment}"
            names = ([alias] if alias not in taken else []) + ([node.name] if j == 0 else [])
            if names:
                lines.append(f"{iface.address.split('/')[0]}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"
