"""One node's own network configuration as rtnetlink messages: lo and its interfaces up (without IPv6 link-local
chatter), their addresses, its routes, its egress shaping. Pure data from the plan, so the host can compile a
qemu node's boot configuration (realize/bootconfig.py) and apply() can send it in the node's namespace.

Guests import this module (through realize/apply.py): keep its imports light.
"""
from __future__ import annotations

from nestbed.plan.hostplan import NodePlan
from nestbed.realize import netlink, shaping


def node_messages(node: NodePlan, netem_available: bool) -> list[tuple[bytes, str]]:
    """The rtnetlink messages that configure one node's own links (pure: its interfaces' ifindexes as planned)."""
    out = [(netlink.link_up(1), "lo up")]
    for iface in node.interfaces:
        out.append((netlink.quiet_ipv6(iface.ifindex), f"{iface.name} without IPv6 link-local"))
        out.append((netlink.link_up(iface.ifindex), f"{iface.name} up"))
        ip, prefix = iface.address.split("/")
        out.append((netlink.address(iface.ifindex, ip, int(prefix)), f"address {iface.address} on {iface.name}"))
    ifindex = {iface.name: iface.ifindex for iface in node.interfaces}
    for route in node.routes:
        out.append((netlink.route(route.destination, route.gateway, ifindex[route.device]),
                    f"route to {route.destination} via {route.gateway}"))
    for iface in node.interfaces:
        out.extend(shaping.messages(iface, netem_available))
    return out
