"""The VXLAN mechanism: a segment spanning hosts has, on each of them, a VXLAN device on the segment's root bridge.

compile builds the VxlanPlans (one per cross-host segment per host): after `bridge.plan` has placed the segment's
bridges and ports, the device takes `device_name(seg_index)`, `next_ifindex(host, root)` in the switch namespace,
`master=root.ifindex` and an MTU of the underlay's minus HEADROOM.

realize creates the device in the switch namespace from a socket in the host's own namespace (IFLA_NET_NS_FD): its
UDP socket stays in the host's namespace, where the underlay is, and decapsulated frames go to the device in the
other namespace (kernel commit f01ec1c017de). Nothing of it is ever in the host's namespace, so it needs no mark and
`remove` returns nothing: it goes with the switch namespace. Unicast only, no learning: an all-zero FDB entry per
peer host (broadcast and unknown unicast are copied to each) and a static entry per remote member's MAC.
"""
from __future__ import annotations

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import BridgePlan, HostPlan, VxlanPlan
from nestbed.plan.mechanisms.specs import FIRST_IFINDEX, FdbEntry, NewLink

HEADROOM = 50              # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 (the kernel's VXLAN_HEADROOM)
DEFAULT_PORT = 4789        # IANA's; without a port the kernel would use 8472
FLOOD_MAC = "00:00:00:00:00:00"    # the FDB entry of broadcast, multicast and unknown unicast


def device_name(seg_index: int) -> str:
    return f"vx{seg_index}"


def next_ifindex(host: HostPlan, root: BridgePlan, since: tuple[int, int, int] = (0, 0, 0)) -> int:
    """The first ifindex after every one the plan gives in the root bridge's switch namespace (bridges, ports,
    uplinks, devices placed before): where the segment's VXLAN device goes. TAPs get theirs from the kernel when
    qemu opens them, after the links exist, and the kernel skips taken ones. (A kernel before 6.15 checks it
    against the sending host namespace too: realize/linksender.py then gives the first index free in both.)
    `since`: how many bridges, veths and VXLAN devices the plan held before the segment's own were added; a
    switch namespace is one segment's, so only those after can be in it (scanning the whole plan for each
    segment of a host was quadratic)."""
    bridges, veths, vxlans = since
    used = [b.ifindex for b in host.bridges[bridges:] if b.netns == root.netns]
    used += [end.ifindex for v in host.veths[veths:] for end in (v.a, v.b) if end.netns == root.netns]
    used += [v.ifindex for v in host.vxlans[vxlans:] if v.netns == root.netns]
    return max(used, default=FIRST_IFINDEX - 1) + 1


def entry(v: VxlanPlan) -> dict[str, Any]:
    return {"t": "vxlan", "netns": v.netns, "name": v.name, "vni": v.vni}


def create(v: VxlanPlan) -> list[NewLink | FdbEntry]:
    """The device (up, in its bridge), then its FDB: one flooding destination per peer, one entry per remote MAC."""
    device = NewLink("vxlan", v.netns, v.name, v.ifindex, f"vxlan {v.name} (vni {v.vni}, segment {v.segment})",
                     master=v.master, up=True, mtu=v.mtu, tunnel=v)
    floods = [FdbEntry(v.netns, v.ifindex, FLOOD_MAC, peer, True, f"vxlan {v.name}: flood to {peer}")
              for peer in v.peers]
    statics = [FdbEntry(v.netns, v.ifindex, mac, dst, False, f"vxlan {v.name}: {mac} via {dst}")
               for mac, dst in v.remote_macs]
    return [device, *floods, *statics]


def remove(entry: dict[str, Any]) -> list[Any]:
    """Nothing of its own: the device lives in the segment's switch namespace and goes with it (its UDP socket
    closes with the host's last device on that port)."""
    return []
