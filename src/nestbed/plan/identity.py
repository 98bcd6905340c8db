"""Testbed identity files for every node (pure): what DETER/Emulab tools read from /var/emulab/boot.

Formats follow ../shared/reference/testbed-files.md. For a node N of experiment EXP in project PROJECT:

  nickname    `N.EXP.PROJECT`
  controlif   the control interface (ControlInfo.interface, e.g. `ctl0`) when N has a control address; `lo` when it
              has none. Those tools treat the control interface as "not an experiment interface": naming `lo` keeps
              every ethN an experiment interface (naming eth0 would hide it from them), and says "no control network
              here". The nickname then resolves to N's first experiment address (see hosts_with_control), so
              name-based control traffic still reaches the node, over the experiment network.
  topomap     `# nodes: vname,links`, `N,SEG:IP SEG:IP …` per node; `# lans: vname,mask,cost`, `SEG,MASK,1` per
              link and LAN (a node without interfaces is listed as `N,`).
  ltmap       `h N` per node, then `l SRC DST BW DELAY LOSS SEG droptail` for both directions of every pair of each
              link and LAN: bandwidth in bit/s, delay in seconds, loss as a rate, taken from SRC's egress shaping
              (which is where nestbed shapes), composed with DST's own ingress (a LAN member's, its port's).
              Unshaped: UNSHAPED_BANDWIDTH (100 Mbit/s, Emulab's default link bandwidth), delay 0, loss 0;
              node.json says `"shaping": null` for the truth. LANs above LTMAP_FULL_MESH members (n·(n-1) lines
              would be millions) list a star through their first member.
  ifmap       `ETH IP MAC` per experiment interface (the control interface is not an experiment interface).
  hosts       the experiment's hosts file (`IP node-SEG node`, see plan.compile.hosts_file) plus `IP N.EXP.PROJECT`
              per node: its control address when it has one, else its first experiment address, else 127.0.0.1
              (a node with no interface reaches nobody anyway).
  node.json   nestbed's own description: node, kind, experiment, project, nickname, router, interfaces (name,
              segment, segment_kind, address, prefix, netmask, subnet, mac, shaping), routes, control, commands.

topomap, ltmap and hosts are the same for every node: IdentityBuilder computes them once per plan (lazily) and
`node_files` gives the four per-node files; 10,000 nodes take a fraction of a second.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import HostPlan, InterfacePlan, NodePlan, ShapingPlan
from nestbed.plan.pathshaping import compose

DEFAULT_PROJECT = "nestbed"
UNSHAPED_BANDWIDTH = 100_000_000      # bit/s written in ltmap for links without a bandwidth (Emulab's default)
LTMAP_FULL_MESH = 1000                # LANs with more members list a star in ltmap instead of every pair
NO_CONTROL_INTERFACE = "lo"           # controlif of a node without a control address

SHARED_FILES = ("topomap", "ltmap", "hosts")
NODE_FILES = ("nickname", "controlif", "ifmap", "node.json")
FILES = NODE_FILES + SHARED_FILES


@dataclass
class ControlInfo:
    """The experiment's control network as the integrator knows it: which nodes have a control address.

    VMs and vhosts always have one; process nodes only with `control: true`. Addresses may carry a prefix
    (`172.16.0.5/16`); only the address is written.
    """
    interface: str = "ctl0"
    addresses: dict[str, str] = field(default_factory=dict)     # node -> control IPv4 address
    subnet: str = ""                                            # e.g. 172.16.0.0/16

    def address(self, node: str) -> str | None:
        address = self.addresses.get(node)
        return address.split("/", 1)[0] if address else None


def nickname(node: str, experiment: str, project: str = DEFAULT_PROJECT) -> str:
    return f"{node}.{experiment}.{project}"


def _ip(address: str) -> str:
    return address.split("/", 1)[0]


def _netmask(prefix: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF if prefix else 0
    return ".".join(str((bits >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _number(value: float) -> str:
    """Plain decimal, no exponent (0.005, 0.02, 0): what Perl and awk parsers of these files expect."""
    if not value:
        return "0"
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _ltmap_params(shaping: ShapingPlan | None) -> str:
    if shaping is None:
        return f"{UNSHAPED_BANDWIDTH} 0 0"
    bandwidth = shaping.bandwidth if shaping.bandwidth else UNSHAPED_BANDWIDTH
    return f"{bandwidth} {_number(shaping.delay or 0.0)} {_number(shaping.loss or 0.0)}"


def _shaping_json(shaping: ShapingPlan | None) -> dict[str, Any] | None:
    return None if shaping is None else dict(shaping.__dict__)


class IdentityBuilder:
    """Identity files of every node of one plan; shared files are built once, on first use."""

    def __init__(self, plan: HostPlan, project: str = DEFAULT_PROJECT, control: ControlInfo | None = None):
        self.plan = plan
        self.project = project
        self.control = control
        self.nodes: dict[str, NodePlan] = {node.name: node for node in plan.every_node()}
        # segment -> (kind, prefix length, netmask, subnet)
        self.segments: dict[str, tuple[str, int, str, str]] = {}
        for seg in plan.segments:
            prefix = int(seg.subnet.split("/", 1)[1]) if "/" in seg.subnet else 32
            self.segments[seg.name] = (seg.kind, prefix, _netmask(prefix), seg.subnet)

    # --- per node -------------------------------------------------------------------------------------------

    def nickname(self, node: str) -> str:
        return nickname(node, self.plan.experiment, self.project)

    def control_address(self, node: str) -> str | None:
        return self.control.address(node) if self.control is not None else None

    def controlif(self, node: str) -> str:
        if self.control is not None and self.control.address(node):
            return self.control.interface + "\n"
        return NO_CONTROL_INTERFACE + "\n"

    def nickname_address(self, node: NodePlan) -> str:
        """What the nickname resolves to: control address, else first experiment address, else 127.0.0.1."""
        control = self.control_address(node.name)
        if control:
            return control
        if node.interfaces:
            return _ip(node.interfaces[0].address)
        return "127.0.0.1"

    def ifmap(self, node: NodePlan) -> str:
        return "".join(f"{i.name} {_ip(i.address)} {i.mac}\n" for i in node.interfaces)

    def node_json(self, node: NodePlan) -> str:
        control = None
        address = self.control_address(node.name)
        if address and self.control is not None:
            control = {"interface": self.control.interface, "address": address, "subnet": self.control.subnet}
        return json.dumps({
            "format": 1,
            "node": node.name, "kind": node.kind, "experiment": self.plan.experiment, "project": self.project,
            "nickname": self.nickname(node.name), "router": node.forwarding,
            "interfaces": [self._interface_json(i) for i in node.interfaces],
            "routes": [{"destination": r.destination, "gateway": r.gateway, "device": r.device}
                       for r in node.routes],
            "control": control,
            "commands": list(node.commands),
        }) + "\n"        # compact: the C encoder (indent= takes the pure-Python one, ~0.1 ms a node)

    def _interface_json(self, iface: InterfacePlan) -> dict[str, Any]:
        kind, prefix, mask, subnet = self.segments.get(iface.segment, ("", 32, "255.255.255.255", ""))
        return {"name": iface.name, "segment": iface.segment, "segment_kind": kind, "address": _ip(iface.address),
                "prefix": prefix, "netmask": mask, "subnet": subnet, "mac": iface.mac,
                "shaping": _shaping_json(iface.shaping),
                **({"ingress": _shaping_json(iface.ingress)} if iface.ingress is not None else {})}

    def node_files(self, name: str) -> dict[str, str]:
        """The four files that differ between nodes."""
        node = self.nodes[name]
        return {"nickname": self.nickname(name) + "\n", "controlif": self.controlif(name),
                "ifmap": self.ifmap(node), "node.json": self.node_json(node)}

    def files(self, name: str) -> dict[str, str]:
        """Every file of a node: filename -> content (shared ones are the same string objects for all nodes)."""
        return {**self.node_files(name), **self.shared_files()}

    # --- shared by every node -------------------------------------------------------------------------------

    def shared_files(self) -> dict[str, str]:
        return {"topomap": self.topomap, "ltmap": self.ltmap, "hosts": self.hosts}

    @cached_property
    def topomap(self) -> str:
        lines = ["# nodes: vname,links"]
        for node in self.plan.every_node():
            lines.append(f"{node.name}," + " ".join(f"{i.segment}:{_ip(i.address)}" for i in node.interfaces))
        lines.append("# lans: vname,mask,cost")
        for seg in self.plan.segments:
            lines.append(f"{seg.name},{self.segments[seg.name][2]},1")
        return "\n".join(lines) + "\n"

    @cached_property
    def ltmap(self) -> str:
        lines = [f"h {node.name}" for node in self.plan.every_node()]
        shaping = {(node.name, i.name): i.shaping for node in self.plan.every_node() for i in node.interfaces}
        ingress_of = {(node.name, i.name): i.ingress for node in self.plan.every_node() for i in node.interfaces
                      if i.ingress is not None}
        for seg in self.plan.segments:
            names = [member[0] for member in seg.members]
            suffix = {member[0]: f" {_ltmap_params(shaping.get((member[0], member[1]), seg.shaping))} {seg.name} "
                                 f"droptail" for member in seg.members}
            ingress = {m[0]: ingress_of[(m[0], m[1])] for m in seg.members if (m[0], m[1]) in ingress_of}
            if ingress and len(names) <= LTMAP_FULL_MESH:     # members' own ingress: each pair its own values
                egress = {m[0]: shaping.get((m[0], m[1]), seg.shaping) for m in seg.members}
                lines.extend(f"l {src} {dst} {_ltmap_params(compose(egress[src], ingress.get(dst)))} {seg.name} "
                             f"droptail" for src in names for dst in names if dst != src)
            elif len(names) <= LTMAP_FULL_MESH:
                for src in names:
                    head, tail = f"l {src} ", suffix[src]
                    lines.extend([head + dst + tail for dst in names if dst != src])
            else:
                hub = names[0]
                for other in names[1:]:
                    lines.append(f"l {hub} {other}{suffix[hub]}")
                    lines.append(f"l {other} {hub}{suffix[other]}")
        return "\n".join(lines) + "\n"

    @cached_property
    def hosts(self) -> str:
        return hosts_with_control(self.plan, self.control, self.project, _builder=self)


def identity_files(plan: HostPlan, node: str, *, project: str = DEFAULT_PROJECT,
                   control: ControlInfo | None = None) -> dict[str, str]:
    """Filename -> content of one node's /var/emulab/boot (for many nodes, use one IdentityBuilder)."""
    return IdentityBuilder(plan, project, control).files(node)


def hosts_with_control(plan: HostPlan, control: ControlInfo | None = None, project: str = DEFAULT_PROJECT,
                       *, _builder: IdentityBuilder | None = None) -> str:
    """/etc/hosts for the experiment: the plan's hosts file plus `ADDR node.EXP.PROJECT` for every node.

    ADDR is the node's control address where it has one, else its first experiment address (127.0.0.1 for a node
    without interfaces), so the nickname always resolves, and to the control address when there is one.
    """
    builder = _builder or IdentityBuilder(plan, project, control)
    base = plan.hosts_file
    if not base:
        from nestbed.plan.compile import hosts_file
        base = hosts_file(plan.experiment, plan.every_node())
    if not base.endswith("\n"):
        base += "\n"
    suffix = f".{plan.experiment}.{project}"
    lines = ["# nicknames: the control address, else the first experiment address"]
    lines.extend(f"{builder.nickname_address(node)}\t{node.name}{suffix}" for node in plan.every_node())
    return base + "\n".join(lines) + "\n"
