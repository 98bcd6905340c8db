"""The control network joined across hosts at the tunnel's MTU (plan/multihost.py, ControlPlan.mtu): on a
1500-byte underlay every member (bridges, ports, ctl0s, the VMs' control NICs through qemu's host_mtu) gets 1450,
and the notes say so; on a 9000-byte underlay, or on one host, nothing changes. Plus the encoders that carry it."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed import netlinkwire as wire
from nestbed.embed import embed
from nestbed.errors import TopologyError
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan
from nestbed.plan.multihost import HostSite, compile_plans
from nestbed.realize import netlink
from nestbed.realize.qemu import cmdline

VMS = """
name: ctlmtu
embed: {processes_in: qemu, per_vhost: 2}
nodes:
  p: {count: 4}
  q: {kind: qemu, host: emu1}
  w: {control: true, host: emu0}
lans:
  lan0: {members: [p, q, w]}
"""


def cluster_plan(mtu: int, hosts: int = 2):
    exp = load_topology_text(VMS, "ctlmtu.yaml")
    cluster = load_cluster_text(f"emulate: {hosts}\nhosts: {{emu0: {{max_vms: 2}}, emu1: {{max_vms: 2}}}}\n",
                                "lab.yaml")
    sites = {f"emu{i}": HostSite(prefix=f"nb{i}", address=f"10.250.0.{i + 1}", underlay="ul0", mtu=mtu)
             for i in range(hosts)}
    return compile_plans(exp, embed(exp, cluster), sites)


def test_a_short_underlay_gives_the_whole_control_network_the_tunnels_mtu_and_says_so():
    plan = cluster_plan(1500)
    controls = {host: p.control for host, p in plan.plans.items()}
    assert all(c is not None and c.tunnel is not None for c in controls.values())
    assert {c.mtu for c in controls.values()} == {1450} == {c.tunnel.mtu for c in controls.values()}
    notes = [n for n in plan.notes if n.startswith("control network")]
    assert notes == ["control network: MTU 1450 on its members on every host (bridges, VMs' control NICs, nodes' "
                     "ctl0: it crosses hosts, and the underlay carries 1500 bytes: 50 go to VXLAN)"]
    for p in plan.plans.values():
        assert HostPlan.from_json(p.to_json()) == p            # the field survives the trip to the host


def test_an_underlay_with_room_for_full_frames_or_one_host_changes_nothing():
    roomy = cluster_plan(9000)
    assert all(p.control.mtu is None and p.control.tunnel.mtu == 8950 for p in roomy.plans.values())
    assert not [n for n in roomy.notes if n.startswith("control network")]
    alone = VMS.replace(", host: emu1", "").replace(", host: emu0", "")
    assert compile_plan(load_topology_text(alone, "ctlmtu.yaml")).control.mtu is None


APART = """
name: ctlapart
nodes:
  w: {control: true, host: emu0}
  a: {host: emu0}
  x: {control: true, host: emu1}
  b: {host: emu1}
links:
  - {ends: [w, a]}
  - {ends: [x, b]}
"""


def test_an_underlay_too_short_for_the_control_network_is_refused_in_one_line():
    exp = load_topology_text(APART, "apart.yaml")                  # only the control network crosses hosts
    sites = {f"emu{i}": HostSite(prefix=f"nb{i}", address=f"10.250.0.{i + 1}", underlay="ul0", mtu=600)
             for i in range(2)}
    with pytest.raises(TopologyError) as caught:
        compile_plans(exp, embed(exp, load_cluster_text("emulate: 2\n", "lab.yaml")), sites)
    assert str(caught.value) == ("the control network crosses hosts whose underlay MTU 600 leaves 550 bytes for "
                                 "its frames; raise the underlay MTU (cluster file underlay_mtu, or the hosts' "
                                 "interfaces)")
    sites = {h: HostSite(s.prefix, s.address, s.underlay, 1500) for h, s in sites.items()}
    plan = compile_plans(exp, embed(exp, load_cluster_text("emulate: 2\n", "lab.yaml")), sites)
    assert [p.control.mtu for p in plan.plans.values()] == [1450, 1450]      # process nodes' ctl0s alone too


def test_the_vms_guest_config_carries_the_mtu_and_qemu_tells_the_control_nic():
    plan = cluster_plan(1500).plans["emu1"]
    assert plan.control is not None and plan.vm("q") is not None
    guest_control = {k: v for k, v in plan.control.__dict__.items() if k != "tunnel"}    # as vms.py writes it
    assert guest_control["mtu"] == 1450
    spec = cmdline.VmSpec(name="q", memory=256, cpus=1, kernel=Path("/k"), initrd=Path("/i"), argv=["x"],
                          nics=[(7, "52:54:00:00:00:01"), (9, "52:54:00:00:00:02")], qmp=Path("/q"),
                          console=Path("/c"), pidfile=Path("/p"), control_mtu=plan.control.mtu)
    cmd = cmdline.build_command(spec)
    nics = [cmd[k + 1] for k, word in enumerate(cmd) if word == "-device" and cmd[k + 1].startswith("virtio-net")]
    assert nics == ["virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,host_mtu=1450",     # control: lowered
                    "virtio-net-pci,netdev=net1,mac=52:54:00:00:00:02"]                   # experiment NIC: its own
    assert "host_mtu" not in " ".join(cmdline.build_command(
        cmdline.VmSpec(**{**spec.__dict__, "control_mtu": None})))


def _attrs(message: bytes) -> dict[int, bytes]:
    body = message[16 + 16:]
    out = {}
    while body:
        length, kind = int.from_bytes(body[:2], "little"), int.from_bytes(body[2:4], "little")
        out[kind & 0x3FFF] = body[4:length]
        body = body[(length + 3) & ~3:]
    return out


def test_a_port_joins_the_control_bridge_at_the_mtu_and_the_ctl0_veth_has_it_on_both_ends():
    joined = _attrs(netlink.link_up(12, master=3, mtu=1450))
    assert int.from_bytes(joined[netlink.IFLA_MTU], "little") == 1450 and wire.IFLA_MASTER in joined
    assert netlink.IFLA_MTU not in _attrs(netlink.link_up(12, master=3))
    veth = netlink.veth("nbk1.0", 0, 5, "ctl0", 0, 6, mtu=1450)
    assert veth.count(wire.u32_attr(netlink.IFLA_MTU, 1450)) == 2
