"""What a qemu node's VM applies at boot without the full guest agent, compiled here on the host.

Under software emulation every module the guest imports costs tens to hundreds of milliseconds of CPU, and ten
VMs booting together share two cores. The host has the plan, the netlink encoders and pyroute2's tc plugins
loaded anyway: it compiles the node's whole network configuration to rtnetlink messages, numbered against the
ifindexes the guest's NICs will have (lo is 1, then the NICs in qemu's order: control first, then the TAPs).
agent/guestboot.py checks that prediction by MAC and sends the batch in one write; when the prediction does not
hold (a user's kernel with built-in tunnel devices, say), the full agent configures the VM from the plan instead.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nestbed.kinds import registry
from nestbed.plan.hostplan import VmPlan
from nestbed.realize import identity, mailboxes, netlink, nodeconfig

FIRST_NIC_IFINDEX = 2          # after lo


def boot_config(vm: VmPlan, state_dir: Path) -> dict[str, object] | None:
    """guest.json's "boot" section for a VM whose kind boots from the host's compilation (a qemu node); None for
    the others (a vhost: its namespaces need the full agent)."""
    if not registry.get(vm.kind).boot_config_on_host or vm.guest is None or len(vm.guest.nodes) != 1:
        return None
    node = vm.guest.nodes[0]
    control = FIRST_NIC_IFINDEX
    by_mac = {tap.mac: FIRST_NIC_IFINDEX + 1 + k for k, tap in enumerate(vm.taps)}
    ifindex = {iface.name: by_mac[iface.mac] for iface in node.interfaces}
    address, prefix = vm.control_address.split("/")
    messages = [(netlink.set_link(control, name="ctl0"), "control NIC named ctl0")]
    # temporary names first: the kernel may already call another NIC by a planned name (eth1 …)
    messages += [(netlink.set_link(ifindex[i.name], name=f"nbtmp{k}"), f"{i.name} renamed")
                 for k, i in enumerate(node.interfaces)]
    messages += [(netlink.set_link(ifindex[i.name], name=i.name), f"{i.name} named") for i in node.interfaces]
    messages += [(netlink.address(control, address, int(prefix)), f"control address {address}"),
                 (netlink.quiet_ipv6(control), "ctl0 without IPv6 link-local"), (netlink.link_up(control), "ctl0 up")]
    here = replace(node, interfaces=[replace(i, ifindex=ifindex[i.name]) for i in node.interfaces])
    messages += nodeconfig.node_messages(here, netem_available=True)       # the guest's kernel has netem
    return {"node": node.name, "experiment": vm.guest.experiment,
            "nics": [[vm.control_mac, control]] + [[mac, index] for mac, index in by_mac.items()],
            "netlink": [[netlink.acked(message, seq).hex(), purpose]
                        for seq, (message, purpose) in enumerate(messages, start=1)],
            "forwarding": node.forwarding, "commands": list(node.commands), "hosts_file": vm.guest.hosts_file,
            "identity": str(identity.node_dir(state_dir, node.name)),
            "mailbox_events": mailboxes.EVENTS, "mailbox_fifo": mailboxes.FIFO}
