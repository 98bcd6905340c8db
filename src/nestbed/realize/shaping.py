"""Egress shaping on a node's own interface: htb for bandwidth, netem for delay/jitter/loss, a fifo for queue.

Where the kernel has no netem, loss is done by an iptables `statistic` rule instead (delay cannot be; preflight
refuses such topologies before anything is created).
"""
from __future__ import annotations

from nestbed.plan.hostplan import InterfacePlan, ShapingPlan
from nestbed.realize import netlink

ROOT = 0x10000          # 1:
CLASS = 0x10001         # 1:1
LEAF = 0x100000         # 10:
TC_H_ROOT = 0xFFFFFFFF


def uses_netem(shaping: ShapingPlan, netem_available: bool) -> bool:
    return bool(shaping.delay or shaping.jitter or (shaping.loss and netem_available))


def messages(iface: InterfacePlan, netem_available: bool) -> list[tuple[bytes, str]]:
    """tc messages for one interface, with what each does (for error messages)."""
    if iface.shaping is None:
        return []
    return device_messages(Device(iface.name, iface.ifindex), iface.shaping, netem_available)


class Device:
    """What the qdisc messages need of a device: a node's interface, or a bridge port / TAP (realize/portshaping)."""
    __slots__ = ("name", "ifindex")

    def __init__(self, name: str, ifindex: int):
        self.name, self.ifindex = name, ifindex


def device_messages(iface: Device | InterfacePlan, shaping: ShapingPlan, netem_available: bool
                    ) -> list[tuple[bytes, str]]:
    """tc messages shaping the egress of one device (by its ifindex in the namespace they are sent in)."""
    out: list[tuple[bytes, str]] = []
    leaf_parent = TC_H_ROOT
    if shaping.bandwidth:
        out.append((netlink.tc("add", "htb", iface.ifindex, (("handle", ROOT), ("parent", TC_H_ROOT),
                                                                ("default", 1))), f"htb on {iface.name}"))
        rate = f"{shaping.bandwidth}bit"
        out.append((netlink.tc("add-class", "htb", iface.ifindex, (("handle", CLASS), ("parent", ROOT),
                                                                      ("rate", rate), ("ceil", rate))),
                    f"htb rate {rate} on {iface.name}"))
        leaf_parent = CLASS
    if uses_netem(shaping, netem_available):
        params: list[tuple[str, object]] = [("handle", LEAF if shaping.bandwidth else ROOT),
                                            ("parent", leaf_parent), ("limit", shaping.queue or 1000)]
        if shaping.delay:
            params.append(("delay", int(shaping.delay * 1e6)))
        if shaping.jitter:
            params.append(("jitter", int(shaping.jitter * 1e6)))
        if shaping.loss and netem_available:
            params.append(("loss", shaping.loss * 100))
        out.append((netlink.tc("add", "netem", iface.ifindex, tuple(params)), f"netem on {iface.name}"))
    elif shaping.queue:
        out.append((netlink.tc("add", "pfifo", iface.ifindex, (("handle", LEAF if shaping.bandwidth else ROOT),
                                                                 ("parent", leaf_parent), ("limit", shaping.queue))),
                    f"pfifo limit {shaping.queue} on {iface.name}"))
    return out


def iptables_loss_rules(interfaces: list[InterfacePlan], netem_available: bool, mark: str | None = None) -> str:
    """iptables-restore input dropping the loss fraction of each interface's egress (None when netem does it).
    `mark`: a comment on each rule, in a namespace that is not the experiment's own (realize/hostnetns.py)."""
    rules = []
    comment = f" -m comment --comment {mark}" if mark else ""
    for iface in interfaces:
        shaping = iface.shaping
        if shaping and shaping.loss and not uses_netem(shaping, netem_available):
            match = (f"-o {iface.name} -m statistic --mode random --probability {shaping.loss:.6f}{comment} "
                     f"-j DROP")
            rules += [f"-A OUTPUT {match}", f"-A FORWARD {match}"]
    if not rules:
        return ""
    return "*filter\n" + "\n".join(rules) + "\nCOMMIT\n"
