"""Planning VMs (no root): qemu nodes and vhosts get TAPs on their segments' bridges, guests get what runs
inside them, and the experiment sees the same addresses and names however its processes are placed."""
from __future__ import annotations

import textwrap

import pytest

from nestbed.errors import TopologyError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan

SEED = """\
name: seed
nodes:
  a: {}
  b: {}
  vm1: {kind: qemu, memory: 256M}
lans:
  lan0: {members: [a, b, vm1], bandwidth: 100Mbit}
"""


def plan_of(text: str) -> HostPlan:
    return compile_plan(load_topology_text(textwrap.dedent(text), "t.yaml"))


def test_a_qemu_node_is_a_vm_with_a_tap_on_its_lan_bridge():
    plan = plan_of(SEED)
    assert [vm.name for vm in plan.vms] == ["vm1"]
    vm = plan.vm("vm1")
    assert (vm.kind, vm.cpus, vm.memory) == ("qemu", 1, 256)
    bridge = next(b for b in plan.bridges if b.segment == "lan0")
    (tap,) = vm.taps
    assert (tap.netns, tap.master, tap.segment) == (bridge.netns, bridge.ifindex, "lan0")
    assert tap.mac == plan.node("vm1").interfaces[0].mac          # the guest's NIC is the node's eth0
    assert plan.node("vm1").vm == "vm1" and plan.node("a").vm is None
    assert "nb-seed.vm1" not in plan.netns_names                  # no namespace on the host for a VM node
    assert [n.name for n in vm.guest.nodes] == ["vm1"] and vm.guest.nodes[0].netns == ""


def test_processes_in_qemu_go_into_a_vhost_with_a_bridge_per_segment():
    plan = plan_of(SEED + "embed: {processes_in: qemu}\n")
    vhost = next(vm for vm in plan.vms if vm.kind == "vhost")
    assert {n.name for n in plan.nodes if n.vm == vhost.name} == {"a", "b"}
    assert plan.local_nodes == []
    (uplink,) = vhost.uplinks
    (tap,) = vhost.taps
    assert uplink.mac == tap.mac
    guest = vhost.guest
    assert {n.name for n in guest.nodes} == {"a", "b"} and all(n.vm is None for n in guest.nodes)
    assert guest.switch_namespaces == [uplink.netns]
    assert {v.b.master for v in guest.veths} == {uplink.master}


def test_placement_does_not_change_what_the_experiment_sees():
    flat, nested = plan_of(SEED), plan_of(SEED + "embed: {processes_in: qemu}\n")
    view = lambda plan: {(n.name, i.name, i.address, i.mac) for n in plan.nodes for i in n.interfaces}  # noqa: E731
    assert view(flat) == view(nested)
    assert flat.hosts_file == nested.hosts_file
    assert [(s.name, s.members) for s in flat.segments] == [(s.name, s.members) for s in nested.segments]


def test_a_link_to_a_vm_is_bridged_and_a_link_between_processes_is_not():
    plan = plan_of("""\
        name: links
        nodes: {a: {}, b: {}, v: {kind: qemu}}
        links:
          - {ends: [a, b]}
          - {ends: [a, v]}
        """)
    assert [b.segment for b in plan.bridges] == ["link1"]
    assert plan.vm("v").taps[0].segment == "link1"


def test_every_vm_has_a_control_address_and_mac_of_its_own():
    plan = plan_of("""\
        name: ctl
        nodes: {v1: {kind: qemu}, v2: {kind: qemu}, p: {count: 25}}
        lans:
          lan0: {members: [v1, v2, p]}
        embed: {processes_in: qemu, per_vhost: 10}
        """)
    assert plan.control is not None and plan.control.host_address.endswith(".1/24")
    assert len(plan.vms) == 2 + 3
    assert len({vm.control_address for vm in plan.vms}) == len(plan.vms)
    assert len({vm.control_mac for vm in plan.vms}) == len(plan.vms)
    macs = [t.mac for vm in plan.vms for t in vm.taps] + [i.mac for n in plan.nodes for i in n.interfaces
                                                          if n.kind == "process"]
    assert len(set(macs)) == len(macs)


def test_a_plan_with_vms_survives_json():
    plan = plan_of(SEED + "embed: {processes_in: qemu}\n")
    assert HostPlan.from_json(plan.to_json()).to_json() == plan.to_json()


def test_no_vms_no_control_network():
    plan = plan_of("name: flat\nnodes: {a: {}, b: {}}\nlinks:\n  - {ends: [a, b]}\n")
    assert plan.vms == [] and plan.control is None


def test_too_many_vms_for_the_control_network_is_one_line():
    nodes = "\n".join(f"  v{i}: {{kind: qemu}}" for i in range(260))
    with pytest.raises(TopologyError, match="260 VMs, but an experiment's control network holds 250"):
        plan_of(f"name: many\nnodes:\n{nodes}\n")


def test_the_control_subnet_moves_past_those_in_use_on_the_host():
    import zlib

    from nestbed.errors import PreflightError
    from nestbed.plan.compile import control_subnet_tag
    text = SEED.replace("  a: {}", "  a: {control: true}")
    exp = load_topology_text(text, "t.yaml")
    first = zlib.crc32(b"seed") & 0xFF
    alone = compile_plan(exp)
    assert alone.control.subnet == f"172.30.{first}.0/24"
    moved = compile_plan(load_topology_text(text, "t.yaml"), busy_control_subnets={first, (first + 1) % 256})
    prefix = f"172.30.{(first + 2) % 256}."
    assert moved.control.subnet == prefix + "0/24" and moved.control.host_address == prefix + "1/24"
    assert all(vm.control_address.startswith(prefix) for vm in moved.vms)
    assert next(n for n in moved.nodes if n.name == "a").control_address.startswith(prefix)
    assert control_subnet_tag("seed", {first}) == (first + 1) % 256
    with pytest.raises(PreflightError, match="every control subnet"):
        control_subnet_tag("seed", set(range(256)))
