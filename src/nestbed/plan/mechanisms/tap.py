"""The TAP mechanism: a VM's NIC on a segment is a TAP in the segment's switch namespace, on its root bridge.

In a vhost the processes' interfaces join a bridge of the guest's own (planned by the bridge mechanism inside
the guest's HostPlan), which the NIC of that segment joins as an uplink (`UplinkPlan`, applied by the guest
agent). The TAP itself is made by opening /dev/net/tun for qemu (realize/vms.py, which launches the VM: a TAP
lives as long as qemu holds its fd, and qemu's launch joins it to its bridge): that launch is its `create`.
Nothing to remove: it goes when qemu closes it (teardown stops the VMs), and with the switch namespace.
"""
from __future__ import annotations

from nestbed.kinds import registry
from nestbed.plan.hostplan import (
    BridgePlan,
    HostPlan,
    InterfacePlan,
    NodePlan,
    PortShapingPlan,
    TapPlan,
    UplinkPlan,
    VmPlan,
)
from nestbed.plan.mechanisms import bridge as bridges


def plan(tag: int, seg_index: int, segment: str, pairs: list[tuple[NodePlan, InterfacePlan]], root: BridgePlan,
         vms: dict[str, VmPlan], guests: dict[str, HostPlan], node_index: dict[str, int],
         host: HostPlan | None = None) -> None:
    """One TAP per VM on this segment; inside a vhost, a bridge that its processes and that NIC join (whose
    ports shape the processes' own ingress). A qemu node's own ingress: a qdisc on its TAP in `host`'s switch
    namespace (made by realize/vms.py once qemu has opened it)."""
    inside: dict[str, list[tuple[NodePlan, InterfacePlan]]] = {}
    for node, iface in pairs:
        if node.vm is not None:
            inside.setdefault(node.vm, []).append((node, iface))
    if not inside:            # no VM on it (most segments): numbering the VMs would make compile V × segments
        return
    vm_index = {name: k for k, name in enumerate(vms)}
    for vm_name, ends in inside.items():
        vm = vms[vm_name]
        k = vm_index[vm_name]
        if registry.get(vm.kind).own_vm:          # the VM is the node: its NIC has the node's MAC
            mac = ends[0][1].mac
            ingress = ends[0][1].ingress
            if ingress is not None and host is not None:
                host.port_shaping.append(PortShapingPlan(root.netns, f"tap{k}", None, segment, ends[0][0].name,
                                                         ingress))
        else:
            mac = ":".join(f"{o:02x}" for o in (0x0a, tag, k >> 8, k & 0xFF, seg_index >> 8, seg_index & 0xFF))
            guest_root = bridges.plan(guests[vm_name], root.netns, seg_index, segment, ends, node_index)
            vm.uplinks.append(UplinkPlan(mac, root.netns, guest_root.ifindex))
        vm.taps.append(TapPlan(root.netns, f"tap{k}", root.ifindex, mac, segment))
