"""One experiment across hosts: a HostPlan per host from the embedding, the same vtopo as on one host.

compile_plan (compile.py) gives every node its interfaces, addresses, MACs and routes exactly as on one host; here
each host's plan takes the nodes placed on it, and each segment is wired on every host that holds a member of it:
a segment on one host as there (veth or bridge), a segment across hosts as a bridge in its switch namespace on
each of them plus a VXLAN device on that bridge (plan/mechanisms/vxlan.py), unicast to the segment's other hosts,
with the remote members' MACs as static FDB entries. So addresses, routes, names, identity files and pings are
those of the one-host run: the ptopo stays invisible.

Where the underlay cannot carry a full inner frame (its MTU - 50 < 1500), every member of that segment, on every
host, gets the lower MTU, and `notes` says so; the control network joined across hosts likewise (ControlPlan.mtu:
the hosts' control bridges and ports, process nodes' ctl0, the VMs' control NICs). Each host's objects carry that
host's object prefix (emulated hosts share one machine's /run/netns). VNIs: the experiment's block (vni_base) + the
segment's place among the segments crossing hosts (pinned: plan/pins.py), so host-local segments take none and an
experiment may have any number of them; the block's last VNI is the control network's.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

from nestbed.errors import TopologyError
from nestbed.kinds import registry
from nestbed.model.topology import Experiment
from nestbed.plan import gcpause, mechanisms
from nestbed.plan.compile import attach_guest, compile_plan
from nestbed.plan.hostplan import ControlTunnel, HostPlan, InterfacePlan, NodePlan, VmPlan, VxlanPlan
from nestbed.plan.mechanisms import bridge, tap, veth, vxlan
from nestbed.plan.pins import RESERVED, Pins

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.embed import Embedding

VXLAN_OVERHEAD = vxlan.HEADROOM
FULL_MTU = 1500
VNI_BLOCK = 1 << 12            # VNIs per experiment block; 4,096 blocks in the 24-bit VNI space
CONTROL_HOST_LAST = 254        # host k's address on the control network: .254 - k (the VMs' are .2 …)
CONTROL_SEGMENT = VNI_BLOCK - 1    # the control network's VNI in the experiment's block (segments count from 0)
CROSSING_VNIS = CONTROL_SEGMENT    # what the block holds for segments crossing hosts (offsets 0 … 4094)
HOST_NETNS_FIRST_IFINDEX = 50000   # a physical node's interfaces in its host's namespace, clear of the host's own
# (created from that same namespace, so no kernel checks them elsewhere; the veth's other end, in a switch
# namespace, is sent from inside it on kernels before 6.15 when the host holds its index: realize/linksender.py)


@dataclass(frozen=True)
class HostSite:
    """What the plan needs to know of one host: its objects' prefix and its end of the underlay."""
    prefix: str                # object prefix of nestbed's kernel objects there (NESTBED_PREFIX)
    address: str               # underlay address (VXLAN local/remote)
    underlay: str              # underlay interface in the host's own namespace
    mtu: int = FULL_MTU        # underlay MTU
    netns: str | None = None   # the host's own namespace by name (an emulated host's), where a physical node is


@dataclass
class ClusterPlan:
    plans: dict[str, HostPlan]                      # host → its plan (hosts without nodes included, empty)
    whole: HostPlan                                 # the one-host plan (views, status, identity)
    notes: list[str] = field(default_factory=list)  # what the user should know (MTU lowered …)


def vni_base(experiment: str) -> int:
    """The first VNI of the experiment's block (never 0: VNI 0 is reserved by some switches)."""
    return ((zlib.crc32(experiment.encode()) % ((1 << 24) // VNI_BLOCK - 1)) + 1) * VNI_BLOCK


def compile_plans(exp: Experiment, embedding: Embedding, sites: dict[str, HostSite], pins: Pins | None = None
                  ) -> ClusterPlan:
    """A plan per host of `sites` for `exp` placed by `embedding` (from embed(exp, cluster)); `pins`: the running
    experiment's numbering (the controller's whole plan's, plan/pins.py), so that a modify keeps every untouched
    object's names, MACs, ifindexes, addresses and VNIs. A bridge port keeps its ifindex from the pins on every
    host, and each host's VXLAN device of a segment is pinned in the same numbering ("~vx@host"): a member added or
    removed elsewhere never renumbers it."""
    with gcpause.paused():
        return _compile_plans(exp, embedding, sites, pins)


def _compile_plans(exp: Experiment, embedding: Embedding, sites: dict[str, HostSite], pins: Pins | None
                   ) -> ClusterPlan:
    whole = compile_plan(exp, embedding, pins)
    numbering = Pins.from_dict(whole.pins)
    host_of = {name: place.host for name, place in embedding.placement.items()}
    missing = sorted({h for h in host_of.values() if h not in sites})
    if missing:
        raise TopologyError(f"the embedding uses host(s) {', '.join(missing)} that the cluster does not reach")
    order = [node.name for node in whole.nodes]
    notes: list[str] = []
    mtu_of = _lowered_mtus(exp, whole, host_of, sites, notes)
    nodes = {node.name: _on_host(node, whole.experiment, sites[host_of[node.name]], mtu_of)
             for node in whole.nodes}
    own_vm_address = {vm.name: vm.control_address for vm in whole.vms if registry.get(vm.kind).own_vm}
    # How the other hosts list a node: built once, the same object in every other host's `others` (plans are
    # read-only once compiled). Built per host it made compile quadratic: 10k nodes on 100 hosts took 11 s.
    listed = [_elsewhere(nodes[n], host_of[n], own_vm_address.get(n)) for n in order]
    positions: dict[str, list[int]] = {host: [] for host in sites}     # host → where its nodes are in `order`
    for k, name in enumerate(order):
        positions[host_of[name]].append(k)
    plans = {host: HostPlan(experiment=whole.experiment, host=host, routing=whole.routing,
                            hosts_file=whole.hosts_file, segments=list(whole.segments), node_order=order,
                            nodes=[nodes[order[k]] for k in positions[host]],
                            others=_all_but(listed, positions[host]))
             for host in sites}
    node_index = {name: numbering.nodes.get(name, i) for i, name in enumerate(order)}
    base = vni_base(exp.name)
    vni_of = _crossing_vnis(exp, whole, host_of, numbering)
    # VMs with their NICs rebuilt on their host's bridges (one dict for all hosts: a NIC's MAC and TAP number come
    # from its VM's place in it, unique across the experiment as on one host).
    vms = {vm.name: replace(vm, taps=[], uplinks=[], guest=None) for vm in whole.vms}
    guests = {name: HostPlan(experiment=whole.experiment, host=name, routing=whole.routing)
              for name, vm in vms.items() if not registry.get(vm.kind).own_vm}
    tag = zlib.crc32(exp.name.encode()) & 0xFF
    for position, segment in enumerate(whole.segments):
        seg_index = numbering.segments.get(segment.name, position)      # pinned: bridge names, VNIs stay
        pairs_of: dict[str, list[tuple[NodePlan, InterfacePlan]]] = {}
        for node_name, iface_name, _ in segment.members:
            node = nodes[node_name]
            iface = next(i for i in node.interfaces if i.name == iface_name)
            pairs_of.setdefault(host_of[node_name], []).append((node, iface))
        hosts = list(pairs_of)
        tunnel_mtu = min(sites[h].mtu for h in hosts) - VXLAN_OVERHEAD
        for host, pairs in pairs_of.items():
            plan, site = plans[host], sites[host]
            if len(hosts) == 1 and mechanisms.choose(segment.kind, pairs) == "veth":
                veth.plan(plan, pairs)
                continue
            netns = f"{site.prefix}-{whole.experiment}.{segment.name}.sw"
            since = (len(plan.bridges), len(plan.veths), len(plan.vxlans))
            root = bridge.plan(plan, netns, seg_index, segment.name, [(n, i) for n, i in pairs if n.vm is None],
                               node_index, numbering)
            tap.plan(tag, seg_index, segment.name, pairs, root, vms, guests, node_index, plan)
            if len(hosts) == 1:
                continue
            peers = [h for h in hosts if h != host]
            remote = [(iface.mac, sites[h].address) for h in peers for _, iface in pairs_of[h]]
            plan.vxlans.append(VxlanPlan(
                segment=segment.name, netns=netns, name=vxlan.device_name(seg_index),
                ifindex=numbering.port_ifindex(segment.name, f"{RESERVED}vx@{host}",
                                               vxlan.next_ifindex(plan, root, since)),
                master=root.ifindex, vni=base + vni_of[segment.name],
                local=site.address, underlay=site.underlay, port=vxlan.DEFAULT_PORT,
                peers=[sites[h].address for h in peers], remote_macs=remote, mtu=tunnel_mtu))
    whole.pins = numbering.to_dict()
    _place_vms(whole, plans, vms, guests)
    _join_control_networks(plans, sites, base + CONTROL_SEGMENT, notes)
    return ClusterPlan(plans=plans, whole=whole, notes=notes)


def _crossing_vnis(exp: Experiment, whole: HostPlan, host_of: dict[str, str], numbering: Pins) -> dict[str, int]:
    """Each segment crossing hosts → its VNI's offset in the experiment's block (numbering keeps a running
    experiment's); more crossing segments than the block holds is refused before anything is made."""
    crossing = [s.name for s in whole.segments if len({host_of[node] for node, _, _ in s.members}) > 1]
    if len(crossing) > CROSSING_VNIS:
        raise TopologyError(f"{len(crossing)} segments cross hosts, but an experiment's VXLAN block holds "
                            f"{CROSSING_VNIS}", exp.location,
                            "place more of each link's and LAN's members on one host (host: …), or use fewer hosts")
    return numbering.number_vnis(crossing, CROSSING_VNIS)


def _place_vms(whole: HostPlan, plans: dict[str, HostPlan], vms: dict[str, VmPlan],
               guests: dict[str, HostPlan]) -> None:
    """Each VM on the host of its nodes, with its guest's plan; each host with VMs gets the control network,
    with an address of its own on it (the VMs keep theirs: the experiment's, as on one host)."""
    if whole.control is None:
        return
    prefix = whole.control.subnet.rsplit(".", 1)[0]
    for k, plan in enumerate(plans.values()):
        inside: dict[str, list[NodePlan]] = {}
        for node in plan.nodes:
            if node.vm is not None:
                inside.setdefault(node.vm, []).append(node)
        mine = [vm for vm in vms.values() if vm.name in inside]
        controlled = [n for n in plan.nodes if n.control_address]
        if not mine and not controlled:
            continue
        plan.control = replace(whole.control, host_address=f"{prefix}.{CONTROL_HOST_LAST - k}/24")
        for vm in mine:
            attach_guest(vm, inside[vm.name], guests, whole)
        plan.vms = mine


def _join_control_networks(plans: dict[str, HostPlan], sites: dict[str, HostSite], vni: int,
                           notes: list[str]) -> None:
    """The hosts that have the control network get it joined into one by VXLAN: a VM reaches every control
    address of the experiment, on any host, as on one host. Where the tunnel carries less than a full frame,
    every member of the control network gets the tunnel's MTU (ControlPlan.mtu): a 1500-byte frame from a VM
    would otherwise be dropped without a word at the tunnel (a bridge drops what its egress port cannot carry)."""
    holding = [host for host, plan in plans.items() if plan.control is not None]
    if len(holding) < 2:
        return
    mtu = min(sites[h].mtu for h in holding) - VXLAN_OVERHEAD
    if mtu < 576:
        raise TopologyError(f"the control network crosses hosts whose underlay MTU {mtu + VXLAN_OVERHEAD} leaves "
                            f"{mtu} bytes for its frames", None,
                            "raise the underlay MTU (cluster file underlay_mtu, or the hosts' interfaces)")
    lowered = mtu if mtu < FULL_MTU else None
    if lowered is not None:
        notes.append(f"control network: MTU {mtu} on its members on every host (bridges, VMs' control NICs, "
                     f"nodes' ctl0: it crosses hosts, and the underlay carries {mtu + VXLAN_OVERHEAD} bytes: "
                     f"{VXLAN_OVERHEAD} go to VXLAN)")
    for host in holding:
        plan, site = plans[host], sites[host]
        assert plan.control is not None
        plan.control = replace(plan.control, mtu=lowered, tunnel=ControlTunnel(
            vni=vni, local=site.address, underlay=site.underlay, port=vxlan.DEFAULT_PORT,
            peers=[sites[h].address for h in holding if h != host], mtu=mtu))


def _lowered_mtus(exp: Experiment, whole: HostPlan, host_of: dict[str, str], sites: dict[str, HostSite],
                  notes: list[str]) -> dict[tuple[str, str], int]:
    """(node, interface) → MTU for the members of segments whose underlay cannot carry full inner frames."""
    lowered: dict[tuple[str, str], int] = {}
    for segment in whole.segments:
        hosts = {host_of[node] for node, _, _ in segment.members}
        if len(hosts) < 2:
            continue
        inner = min(sites[h].mtu for h in hosts) - VXLAN_OVERHEAD
        if inner >= FULL_MTU:
            continue
        if inner < 576:
            raise TopologyError(f"segment {segment.name!r} crosses hosts whose underlay MTU "
                                f"{inner + VXLAN_OVERHEAD} leaves {inner} bytes for its frames", exp.location,
                                "raise the underlay MTU (cluster file underlay_mtu, or the hosts' interfaces)")
        for node, iface, _ in segment.members:
            lowered[(node, iface)] = inner
        notes.append(f"segment {segment.name}: MTU {inner} on its members (it crosses hosts, and the underlay "
                     f"carries {inner + VXLAN_OVERHEAD} bytes: {VXLAN_OVERHEAD} go to VXLAN)")
    return lowered


def _all_but(items: list[NodePlan], skipped: list[int]) -> list[NodePlan]:
    """`items` without the positions `skipped` (ascending), as slices: a host's nodes are mostly contiguous."""
    out: list[NodePlan] = []
    start = 0
    for k in skipped:
        out += items[start:k]
        start = k + 1
    out += items[start:]
    return out


def _elsewhere(node: NodePlan, host: str, vm_address: str | None = None) -> NodePlan:
    """A node of another host as this host's plan lists it: what the shared identity files (topomap, ltmap, hosts)
    say of it, its name and interfaces, and its host. Its routes and commands are its own host's business: sent to
    every host they made the plans (and the files each host writes and reads back) ~10x bigger (69 routes a node
    in the 1,000-node benchmark). A qemu node carries its VM's control address, which its nickname resolves to in
    every node's identity files."""
    return replace(node, host=host, routes=[], commands=[],
                   control_address=vm_address if vm_address is not None else node.control_address)


def _on_host(node: NodePlan, experiment: str, site: HostSite, mtu_of: dict[tuple[str, str], int]) -> NodePlan:
    """The node as its host realizes it: that host's namespace name (a physical node: the host's own), lowered
    MTUs."""
    interfaces = [replace(i, mtu=mtu_of[(node.name, i.name)]) if (node.name, i.name) in mtu_of else i
                  for i in node.interfaces]
    if registry.get(node.kind).whole_host:
        # the host's namespace has links of its own (lo, its underlay): the node's come after them. A real host's
        # own namespace has no name: its agent gives it the node's (a handle, realize/hostnetns.py)
        interfaces = [replace(i, ifindex=HOST_NETNS_FIRST_IFINDEX + k) for k, i in enumerate(interfaces)]
        netns = site.netns if site.netns is not None else f"{site.prefix}-{experiment}.{node.name}"
        return replace(node, netns=netns, host_netns=True, interfaces=interfaces)
    return replace(node, netns=f"{site.prefix}-{experiment}.{node.name}", interfaces=interfaces)
