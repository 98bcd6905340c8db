"""LAN members' own ingress: an egress qdisc on the switch side of each member's attachment (its bridge port, or
a VM's TAP), built like a node's own shaping (realize/shaping.py) from a socket in the switch namespace.

Journaled before it is made ({"t": "qdisc", "netns", "dev"}); it lives in the switch namespace and goes with it
at teardown. Loss there needs netem: bridged frames pass no iptables (bridge-nf-call-iptables is off), so
preflight refuses ingress loss on a kernel without netem.
"""
from __future__ import annotations

TYPE_CHECKING = False     # not typing's: guests import this module
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import PortShapingPlan
from nestbed.realize import netlink, shaping
from nestbed.realize.kernel import LINUX, Kernel


def entry(port: PortShapingPlan) -> dict[str, Any]:
    return {"t": "qdisc", "netns": port.netns, "dev": port.name}


def messages(port: PortShapingPlan, ifindex: int, netem: bool) -> list[tuple[bytes, str]]:
    return [(message, f"{what} (ingress of {port.node} on {port.segment})")
            for message, what in shaping.device_messages(shaping.Device(port.name, ifindex), port.shaping, netem)]


def realize(ports: list[PortShapingPlan], journal: Any, kernel: Kernel, netem: bool) -> None:
    """The bridge ports' qdiscs (TAPs, numbered by the kernel, are shaped by realize/vms.py once they exist)."""
    known = [port for port in ports if port.ifindex is not None]
    if not known:
        return
    journal.record([entry(port) for port in known])
    by_netns: dict[str, netlink.Batch] = {}
    for port in known:
        assert port.ifindex is not None
        batch = by_netns.setdefault(port.netns, netlink.Batch())
        for message, purpose in messages(port, port.ifindex, netem):
            batch.add(message, purpose)
    for netns, batch in by_netns.items():
        kernel.send(netns, batch, f"ingress shaping in {netns}")



def shape_tap(ports: list[PortShapingPlan], netns: str, name: str, ifindex: int, journal: Any,
              kernel: Kernel | None = None) -> None:
    """A qemu node's own ingress on its TAP, once qemu's launch made it (the kernel chose its ifindex). netem is
    there whenever this is asked for: preflight refused ingress delay, jitter or loss on a kernel without it."""
    for port in ports:
        if port.netns == netns and port.name == name and port.ifindex is None:
            journal.record([entry(port)])
            batch = netlink.Batch()
            for message, purpose in messages(port, ifindex, True):
                batch.add(message, purpose)
            (kernel or LINUX).send(netns, batch, f"ingress shaping of {port.node}")
