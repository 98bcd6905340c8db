"""What one host must hold for an experiment: plain data, JSON-serialisable, no behaviour beyond (de)serialising.

Node namespaces hold the nodes' interfaces (eth0, eth1, … with fixed ifindexes so a batch can address them
before they exist); each LAN's bridges live in a switch namespace of their own, so nothing of an experiment's
network lives in the host's own namespace. (One switch namespace for all LANs would be quadratic: the kernel
scans a namespace's list of peer namespaces on every notification, and it would peer with every node.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class ShapingPlan:
    bandwidth: int | None = None     # bit/s
    delay: float | None = None       # s
    jitter: float | None = None      # s
    loss: float | None = None        # fraction
    queue: int | None = None         # packets


@dataclass(frozen=True)
class InterfacePlan:
    name: str                        # eth0 …
    ifindex: int
    segment: str
    address: str                     # 10.0.1.2/24
    mac: str
    shaping: ShapingPlan | None = None   # its egress qdisc: the segment's shaping and the member's own composed
    mtu: int | None = None           # lowered for a segment its tunnel cannot carry at 1500 (None: the default)
    ingress: ShapingPlan | None = None   # a LAN member's own ingress, shaped by its bridge port (PortShapingPlan)


@dataclass(frozen=True)
class RoutePlan:
    destination: str
    gateway: str
    device: str


@dataclass
class NodePlan:
    name: str
    kind: str
    netns: str
    forwarding: bool
    interfaces: list[InterfacePlan] = field(default_factory=list)
    routes: list[RoutePlan] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    vm: str | None = None            # the VM this node is (qemu) or runs in (vhost); None: a namespace on the host
    control_address: str | None = None   # a process with control: true: its ctl0 on the control network
    host: str | None = None          # in HostPlan.others: the host it runs on (a multi-host experiment)
    host_netns: bool = False         # its namespace is its host's own (a physical node): never made or removed


@dataclass(frozen=True)
class VethEnd:
    netns: str
    name: str
    ifindex: int
    master: int | None = None        # ifindex of the bridge this end joins (switch namespace)


@dataclass(frozen=True)
class VethPlan:
    a: VethEnd
    b: VethEnd


@dataclass(frozen=True)
class BridgePlan:
    name: str
    ifindex: int
    segment: str
    netns: str                       # the LAN's switch namespace


@dataclass(frozen=True)
class PortShapingPlan:
    """A LAN member's ingress: egress shaping on the switch side of its attachment, the bridge port (a veth end in
    the switch namespace) or, for a VM, its TAP there (ifindex None: the kernel numbers TAPs)."""
    netns: str
    name: str
    ifindex: int | None
    segment: str
    node: str
    shaping: ShapingPlan


@dataclass(frozen=True)
class SegmentPlan:
    name: str
    kind: str                        # link | lan
    subnet: str
    members: list[tuple[str, str, str]]   # (node, interface, address)
    shaping: ShapingPlan | None = None


@dataclass(frozen=True)
class TapPlan:
    """A VM's NIC on the host: a TAP device in a segment's switch namespace, enslaved to its bridge."""
    netns: str
    name: str
    master: int                      # bridge ifindex
    mac: str                         # the guest side's MAC
    segment: str


@dataclass(frozen=True)
class UplinkPlan:
    """Inside a vhost: the NIC with this MAC joins the guest's bridge of its segment."""
    mac: str
    netns: str
    master: int


@dataclass(frozen=True)
class ControlTunnel:
    """A multi-host experiment's control network joined across hosts: a VXLAN device on this host's control bridge
    (in the host's own namespace, marked as the experiment's), unicast to the other hosts holding VMs."""
    vni: int
    local: str                       # this host's underlay address
    underlay: str                    # the underlay interface in the host's namespace
    port: int
    peers: list[str]                 # the other hosts' underlay addresses: one all-zero FDB entry each
    mtu: int


@dataclass(frozen=True)
class ControlPlan:
    """The experiment's control network: a /24 on a host bridge holding the host's address and the VMs'."""
    subnet: str
    host_address: str                # with prefix, e.g. 172.30.7.1/24
    port: int                        # where guest agents listen, on their control address
    tunnel: ControlTunnel | None = None   # several hosts: the bridges joined by VXLAN
    mtu: int | None = None           # every member's (bridge, ports, ctl0s, VMs' NICs): the tunnel's (None: default)


@dataclass(frozen=True)
class VxlanPlan:
    """A cross-host segment's end on this host: a VXLAN device in the segment's switch namespace, a port of its
    root bridge. Its UDP socket is in the host's own namespace (where `underlay` is)."""
    segment: str
    netns: str                       # the segment's switch namespace on this host
    name: str                        # f"vx{seg_index}" (fits IFNAMSIZ)
    ifindex: int                     # unique in that switch namespace (after the bridges and ports)
    master: int                      # ifindex of the segment's root bridge there
    vni: int                         # 24 bits
    local: str                       # this host's underlay address, e.g. 10.250.0.1
    underlay: str                    # the underlay interface in the host's namespace, e.g. "ul0" or "eth0"
    port: int                        # UDP destination port (default 4789)
    peers: list[str]                 # the other hosts' underlay addresses holding this segment: one all-zero
                                     # FDB entry each (head-end replication of broadcast/unknown)
    remote_macs: list[tuple[str, str]]   # (mac, peer underlay address) of every member on another host:
                                         # static FDB entries, so known unicast is never flooded
    mtu: int                         # the device's MTU (underlay MTU - 50); the members' MTU is set by compile


@dataclass
class VmPlan:
    name: str                        # the node's name (qemu) or the vhost's
    kind: str                        # qemu | vhost
    cpus: int
    memory: int                      # MiB
    control_address: str             # with prefix
    control_mac: str
    taps: list[TapPlan] = field(default_factory=list)
    uplinks: list[UplinkPlan] = field(default_factory=list)
    guest: HostPlan | None = None    # what the guest agent realizes inside; a node with netns "" is the VM itself


@dataclass
class HostPlan:
    experiment: str
    host: str
    switch_namespaces: list[str] = field(default_factory=list)   # one per LAN
    nodes: list[NodePlan] = field(default_factory=list)
    segments: list[SegmentPlan] = field(default_factory=list)
    bridges: list[BridgePlan] = field(default_factory=list)
    veths: list[VethPlan] = field(default_factory=list)
    hosts_file: str = ""
    routing: str = "static"
    vms: list[VmPlan] = field(default_factory=list)
    control: ControlPlan | None = None
    vxlans: list[VxlanPlan] = field(default_factory=list)     # this host's ends of cross-host segments
    # A multi-host experiment's nodes on other hosts (with their `host`): identity files and views list the whole
    # experiment on every host, exactly as on one host; nothing of them is realized here.
    others: list[NodePlan] = field(default_factory=list)
    node_order: list[str] = field(default_factory=list)    # with others: every node's name, in experiment order
    pins: dict[str, Any] = field(default_factory=dict)      # the numbering this plan fixes (plan/pins.py)
    port_shaping: list[PortShapingPlan] = field(default_factory=list)    # LAN members' ingress, switch side

    @property
    def local_nodes(self) -> list[NodePlan]:
        """Nodes realized as namespaces of this host (not inside a VM)."""
        return [node for node in self.nodes if node.vm is None]

    @property
    def netns_names(self) -> list[str]:
        """The namespaces this plan makes (and teardown removes)."""
        return self.switch_namespaces + [node.netns for node in self.nodes if node.vm is None and not node.host_netns]

    @property
    def link_netns_names(self) -> list[str]:
        """Every namespace links of the plan end in: those it makes, and the hosts' own of physical nodes."""
        return self.netns_names + [node.netns for node in self.nodes if node.vm is None and node.host_netns]

    def every_node(self) -> list[NodePlan]:
        """The experiment's nodes in its order: this host's, and with `others` those of the other hosts too."""
        if not self.others:
            return self.nodes
        by_name = {node.name: node for node in self.nodes + self.others}
        return [by_name[name] for name in self.node_order]

    def vm(self, name: str) -> VmPlan:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def to_json(self) -> str:
        # default= walks the dataclasses' __dict__ directly: 10x faster than asdict() (which deep-copies).
        return json.dumps(self, default=lambda obj: obj.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> HostPlan:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostPlan:
        def shaping(raw: dict[str, Any] | None) -> ShapingPlan | None:
            return ShapingPlan(**raw) if raw else None
        def node(n: dict[str, Any]) -> NodePlan:
            return NodePlan(name=n["name"], kind=n["kind"], netns=n["netns"], forwarding=n["forwarding"],
                            interfaces=[InterfacePlan(**{**i, "shaping": shaping(i["shaping"]),
                                                             "ingress": shaping(i.get("ingress"))})
                                        for i in n["interfaces"]],
                            routes=[RoutePlan(**r) for r in n["routes"]], commands=list(n["commands"]),
                            vm=n.get("vm"), control_address=n.get("control_address"), host=n.get("host"),
                            host_netns=bool(n.get("host_netns", False)))
        nodes = [node(n) for n in data["nodes"]]
        vms = [VmPlan(name=v["name"], kind=v["kind"], cpus=v["cpus"], memory=v["memory"],
                      control_address=v["control_address"], control_mac=v["control_mac"],
                      taps=[TapPlan(**t) for t in v["taps"]], uplinks=[UplinkPlan(**u) for u in v["uplinks"]],
                      guest=cls.from_dict(v["guest"]) if v.get("guest") else None)
               for v in data.get("vms", [])]
        raw_control = data.get("control")
        control = ControlPlan(**{**raw_control, "tunnel": ControlTunnel(**raw_control["tunnel"])
                                 if raw_control.get("tunnel") else None}) if raw_control else None
        segments = [SegmentPlan(name=s["name"], kind=s["kind"], subnet=s["subnet"],
                                members=[tuple(m) for m in s["members"]],
                                shaping=shaping(s["shaping"])) for s in data["segments"]]
        vxlans = [VxlanPlan(**{**v, "peers": list(v["peers"]), "remote_macs": [tuple(m) for m in v["remote_macs"]]})
                  for v in data.get("vxlans", [])]
        return cls(experiment=data["experiment"], host=data["host"], switch_namespaces=list(data["switch_namespaces"]),
                   nodes=nodes, segments=segments, bridges=[BridgePlan(**b) for b in data["bridges"]],
                   veths=[VethPlan(VethEnd(**v["a"]), VethEnd(**v["b"])) for v in data["veths"]],
                   hosts_file=data["hosts_file"], routing=data["routing"], vms=vms, control=control, vxlans=vxlans,
                   others=[node(n) for n in data.get("others", [])], node_order=list(data.get("node_order", [])),
                   pins=dict(data.get("pins", {})),
                   port_shaping=[PortShapingPlan(**{**p, "shaping": ShapingPlan(**p["shaping"])})
                                 for p in data.get("port_shaping", [])])
