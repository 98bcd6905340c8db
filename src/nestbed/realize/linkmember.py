"""One member node of a runtime link change: the netlink batches that take its interfaces down or up (routes put
back) or replace their egress qdiscs, sent in its namespace on this host (`prepare_on_host`, then `send`) or
inside the guest that holds it (`apply_in_node`, the guest agent's "link" op); and, where this host's kernel has
no netem, the swap of its iptables loss rules.

The guest agent imports this module at request time: keep its top-level imports light.
"""
from __future__ import annotations

from dataclasses import replace

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed import netlinkwire as wire
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import NodePlan, ShapingPlan
from nestbed.realize import netlink, shaping
from nestbed.realize.linkvalues import shaping_from


def link_down(ifindex: int) -> bytes:
    return wire.message(wire.RTM_NEWLINK, wire.NLM_F_REQUEST | wire.NLM_F_ACK,
                        wire.IFINFO.pack(0, 0, ifindex, 0, wire.IFF_UP))


def delete_root_qdisc(ifindex: int) -> bytes:
    return wire.message(wire.RTM_DELQDISC, wire.NLM_F_REQUEST | wire.NLM_F_ACK,
                        wire.TCMSG.pack(0, ifindex, 0, shaping.TC_H_ROOT, 0))


def _replacing(message: bytes) -> bytes:
    """A create message turned into create-or-replace (routes put back after an up)."""
    return wire.with_flags(message, wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.NLM_F_CREATE | wire.NLM_F_REPLACE)


def node_batches(node: NodePlan, names: list[str], action: str, new: ShapingPlan | None, netem: bool,
                 ifindex: dict[str, int]) -> tuple[netlink.Batch, netlink.Batch]:
    """(messages whose failure does not matter, messages that must succeed) for one node."""
    quiet, strict = netlink.Batch(), netlink.Batch()
    ifaces = [i for i in node.interfaces if i.name in names]
    if action == "down":
        for iface in ifaces:
            strict.add(link_down(ifindex[iface.name]), f"{iface.name} down")
    elif action == "up":
        for iface in ifaces:
            strict.add(netlink.link_up(ifindex[iface.name]), f"{iface.name} up")
        for route in node.routes:
            if route.device in names:
                strict.add(_replacing(netlink.route(route.destination, route.gateway, ifindex[route.device])),
                           f"route to {route.destination} via {route.gateway}")
    else:
        for iface in ifaces:
            quiet.add(delete_root_qdisc(ifindex[iface.name]), f"old qdisc on {iface.name}")
            here = replace(iface, ifindex=ifindex[iface.name], shaping=new)
            for message, purpose in shaping.messages(here, netem):
                strict.add(message, purpose)
    return quiet, strict


def send(sock: Any, quiet: netlink.Batch, strict: netlink.Batch, where: str) -> None:
    """Send on a socket opened in the node's namespace, then close it."""
    try:
        if quiet.messages:
            try:
                netlink.send(sock, quiet, where)
            except netlink.NetlinkError:
                pass        # e.g. no root qdisc to delete
        netlink.send(sock, strict, where)
    finally:
        sock.close()


def prepare_on_host(node: NodePlan, names: list[str], action: str, new: ShapingPlan | None,
                    netem: bool) -> tuple[Any, netlink.Batch, netlink.Batch]:
    """A process node of this host: its batches (plan ifindexes) and a netlink socket in its namespace."""
    ifindex = {i.name: i.ifindex for i in node.interfaces}
    quiet, strict = node_batches(node, names, action, new, netem, ifindex)
    try:
        sock = netlink.open_socket(node.netns)
    except OSError as error:
        raise ExperimentError(f"cannot enter node {node.name} ({error.strerror}); its namespace may be gone") \
            from None
    return sock, quiet, strict


def needs_iptables(action: str, old: ShapingPlan | None, new: ShapingPlan | None, netem: bool) -> bool:
    return action == "set" and not netem and bool((old and old.loss) or (new and new.loss))


def replace_iptables_loss(node: NodePlan, names: list[str], old: ShapingPlan | None,
                           new: ShapingPlan | None) -> None:
    """Swap the iptables `statistic` rules of these interfaces (loss where the kernel has no netem): one
    iptables-restore deleting the old rules by their exact text and adding the new; if the old rules are not
    as expected, they are found with iptables-save instead."""
    import subprocess

    from nestbed.realize import processes

    def run(argv: list[str], text: str | None = None) -> tuple[int, str]:
        result = subprocess.run(argv, input=text, text=True, capture_output=True,
                                preexec_fn=lambda: processes.enter_netns(node.netns))
        return result.returncode, result.stdout if result.returncode == 0 else result.stderr.strip()

    def body(deletions: list[str]) -> str:
        added = shaping.iptables_loss_rules([replace(i, shaping=new) for i in node.interfaces if i.name in names],
                                            False)
        lines = "".join(line + "\n" for line in deletions)
        if added:
            lines += added.split("\n", 1)[1].rsplit("COMMIT", 1)[0]
        return "*filter\n" + lines + "COMMIT\n" if lines else ""

    expected = shaping.iptables_loss_rules([replace(i, shaping=old) for i in node.interfaces if i.name in names],
                                           False)
    deletions = ["-D" + line[2:] for line in expected.splitlines() if line.startswith("-A ")]
    text = body(deletions)
    if text and run(["iptables-restore", "-w", "--noflush"], text)[0] == 0:
        return
    code, saved = run(["iptables-save", "-t", "filter"])
    if code != 0:
        raise netlink.NetlinkError(f"iptables-save failed: {saved}")
    deletions = []
    for line in saved.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0] == "-A" and parts[1] in ("OUTPUT", "FORWARD") and parts[2] == "-o" \
                and parts[3] in names and "statistic" in parts:
            deletions.append("-D" + line[2:])
    text = body(deletions)
    if text:
        code, message = run(["iptables-restore", "-w", "--noflush"], text)
        if code != 0:
            raise netlink.NetlinkError(f"iptables loss rules failed: {message}")


def apply_in_node(node: NodePlan, names: list[str], action: str, new: dict[str, Any] | None) -> None:
    """Inside a guest (the guest agent's "link" op): the node is the VM itself (netns "") or a namespace of a
    vhost; interfaces are found by name there. Guest kernels have netem."""
    import socket

    from nestbed.realize import namespaces
    shaping_plan = shaping_from(new)

    def here() -> None:
        ifindex = {name: socket.if_nametoindex(name) for name in names}
        quiet, strict = node_batches(node, names, action, shaping_plan, True, ifindex)
        send(netlink.open_socket(), quiet, strict, f"node {node.name}")
    if node.netns:
        with namespaces.entered(node.netns):
            here()
    else:
        here()
