"""plan/multihost.py: one experiment across hosts gives the one-host vtopo (addresses, routes, identity files) with
each segment wired on every host holding a member, VXLAN between them, and MTUs lowered where the underlay is
short."""
from __future__ import annotations

from dataclasses import replace

from nestbed.embed import embed
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan
from nestbed.plan.identity import IdentityBuilder
from nestbed.plan.multihost import HostSite, compile_plans, vni_base

TOPOLOGY = """
name: span
nodes:
  a: {host: emu0}
  b: {host: emu1}
  c: {host: emu2}
  d: {host: emu0}
  r: {router: true, host: emu1}
lans:
  lan0: {members: [a, b, c, r], bandwidth: 100Mbit}
links:
  - {name: l1, ends: [r, d]}
  - {name: l2, ends: [a, d]}
"""


def sites(mtu: int = 9000) -> dict[str, HostSite]:
    return {f"emu{i}": HostSite(prefix=f"nb{i}", address=f"10.250.0.{i + 1}", underlay="ul0", mtu=mtu)
            for i in range(3)}


def plans(mtu: int = 9000, text: str = TOPOLOGY):
    exp = load_topology_text(text, "span.yaml")
    cluster = load_cluster_text("emulate: 3\n", "lab.yaml")
    return exp, compile_plans(exp, embed(exp, cluster), sites(mtu))


def test_every_node_keeps_its_one_host_interfaces_routes_and_identity():
    exp, cluster_plan = plans()
    one = compile_plan(exp)
    placed = {n.name: host for host, plan in cluster_plan.plans.items() for n in plan.nodes}
    assert placed == {"a": "emu0", "b": "emu1", "c": "emu2", "d": "emu0", "r": "emu1"}
    for node in one.nodes:
        there = cluster_plan.plans[placed[node.name]].node(node.name)
        assert there.interfaces == node.interfaces and there.routes == node.routes
        assert there.netns == f"nb{placed[node.name][-1]}-span.{node.name}"
    alone = IdentityBuilder(one)
    for host, plan in cluster_plan.plans.items():
        assert [n.name for n in plan.every_node()] == [n.name for n in one.nodes]
        assert plan.hosts_file == one.hosts_file
        builder = IdentityBuilder(plan)
        assert builder.topomap == alone.topomap and builder.ltmap == alone.ltmap and builder.hosts == alone.hosts
        assert {n.host for n in plan.others} <= set(sites()) - {host}
        assert HostPlan.from_json(plan.to_json()) == plan


def test_a_lan_across_three_hosts_is_a_bridge_and_a_vxlan_on_each():
    _, cluster_plan = plans()
    base = vni_base("span")
    for i, plan in enumerate(cluster_plan.plans.values()):
        (lan,) = [v for v in plan.vxlans if v.segment == "lan0"]
        assert lan.vni == base and lan.local == f"10.250.0.{i + 1}" and lan.underlay == "ul0"
        assert sorted(lan.peers) == sorted(f"10.250.0.{j + 1}" for j in range(3) if j != i)
        assert lan.netns == f"nb{i}-span.lan0.sw" and lan.netns in plan.switch_namespaces
        root = next(b for b in plan.bridges if b.netns == lan.netns and b.segment == "lan0")
        assert lan.master == root.ifindex
        used = {b.ifindex for b in plan.bridges if b.netns == lan.netns} | \
            {end.ifindex for v in plan.veths for end in (v.a, v.b) if end.netns == lan.netns}
        assert lan.ifindex not in used
        local = {n.name for n in plan.nodes}
        remote_macs = {mac for mac, _ in lan.remote_macs}
        expected = {i.mac for n in cluster_plan.whole.nodes for i in n.interfaces
                    if i.segment == "lan0" and n.name not in local}
        assert remote_macs == expected and lan.mtu == 9000 - 50
    assert 0 < base < 1 << 24 and base % 4096 == 0


def test_a_link_on_one_host_stays_a_veth_and_a_link_across_hosts_is_bridged():
    _, cluster_plan = plans()
    emu0 = cluster_plan.plans["emu0"]
    assert not [v for v in emu0.vxlans if v.segment == "l2"]                 # a and d are both on emu0
    assert any({v.a.netns, v.b.netns} == {"nb0-span.a", "nb0-span.d"} for v in emu0.veths)
    across = [v for p in cluster_plan.plans.values() for v in p.vxlans if v.segment == "l1"]
    assert sorted(v.local for v in across) == ["10.250.0.1", "10.250.0.2"]    # r on emu1, d on emu0
    vni_of = {(v.segment, v.vni) for p in cluster_plan.plans.values() for v in p.vxlans}
    assert len(vni_of) == len({segment for segment, _ in vni_of}) == 2      # one VNI per segment, each its own


def test_a_short_underlay_lowers_the_mtu_of_every_member_of_a_crossing_segment():
    _, cluster_plan = plans(mtu=1500)
    lowered = {(n.name, i.name): i.mtu for p in cluster_plan.plans.values() for n in p.nodes for i in n.interfaces}
    assert all(lowered[(n, i)] == 1450 for n, i in [("a", "eth0"), ("b", "eth0"), ("c", "eth0"), ("r", "eth0")])
    assert lowered[("a", "eth1")] is None                                    # l2 stays on emu0: full frames
    assert any("segment lan0: MTU 1450" in note for note in cluster_plan.notes)


def test_a_physical_node_is_its_hosts_own_namespace_by_name_or_by_a_handle_on_a_real_host():
    text = TOPOLOGY.replace("  c: {host: emu2}", "  c: {host: emu2, kind: physical}")
    _, on_real = plans(text=text)                     # these sites have no namespace name: real hosts
    handle = on_real.plans["emu2"].node("c")
    assert handle.host_netns and handle.netns == f"{sites()['emu2'].prefix}-span.c"   # the agent names its own
    assert handle.netns not in on_real.plans["emu2"].netns_names                      # never made or removed
    exp = load_topology_text(text, "span.yaml")
    emulated = {h: replace(site, netns=f"nt-span.{h}") for h, site in sites().items()}
    cluster_plan = compile_plans(exp, embed(exp, load_cluster_text("emulate: 3\n", "lab.yaml")), emulated)
    c = cluster_plan.plans["emu2"].node("c")
    assert c.netns == "nt-span.emu2" and c.host_netns and c.kind == "physical"
    plan = cluster_plan.plans["emu2"]
    assert "nt-span.emu2" not in plan.netns_names and "nt-span.emu2" in plan.link_netns_names
    alone = compile_plan(exp).node("c").interfaces                           # the same vtopo; its links come
    assert [replace(i, ifindex=0) for i in c.interfaces] == [replace(i, ifindex=0) for i in alone]   # after the host's
    assert all(i.ifindex >= 50000 for i in c.interfaces)


VMS = """
name: vmspan
embed: {processes_in: qemu, per_vhost: 2}
nodes:
  p: {count: 4}
  q: {kind: qemu, host: emu1}
lans:
  lan0: {members: [p, q]}
"""


def test_vms_go_to_their_hosts_with_their_nics_on_that_hosts_bridges_and_a_control_network_each():
    exp = load_topology_text(VMS, "vmspan.yaml")
    cluster = load_cluster_text("emulate: 2\nhosts: {emu0: {max_vms: 2}, emu1: {max_vms: 2}}\n", "lab.yaml")
    cluster_plan = compile_plans(exp, embed(exp, cluster), {h: s for h, s in sites().items() if h != "emu2"})
    whole = cluster_plan.whole
    macs = [t.mac for p in cluster_plan.plans.values() for vm in p.vms for t in vm.taps]
    assert len(macs) == len(set(macs)) == len(whole.vms)               # one NIC each on lan0, none shared
    addresses = set()
    for plan in cluster_plan.plans.values():
        assert plan.vms and plan.control is not None
        assert plan.control.subnet == whole.control.subnet and plan.control.port == whole.control.port
        addresses.add(plan.control.host_address)
        for vm in plan.vms:
            assert vm.control_address == whole.vm(vm.name).control_address       # the experiment's, unchanged
            assert {n.name for n in vm.guest.nodes} == {n.name for n in plan.nodes if n.vm == vm.name}
            root = next(b for b in plan.bridges if b.segment == "lan0")
            assert all(t.netns == root.netns and t.master == root.ifindex for t in vm.taps)
        assert HostPlan.from_json(plan.to_json()) == plan
    assert len(addresses) == 2                                       # each host its own
    qemu = cluster_plan.plans["emu1"].vm("q")
    assert qemu.taps[0].mac == whole.node("q").interfaces[0].mac and qemu.guest.nodes[0].netns == ""
    tunnels = {host: plan.control.tunnel for host, plan in cluster_plan.plans.items()}
    assert tunnels["emu0"].peers == ["10.250.0.2"] and tunnels["emu1"].peers == ["10.250.0.1"]
    assert tunnels["emu0"].vni == tunnels["emu1"].vni == vni_base("vmspan") + 4095     # the block's last
    assert all(t.vni not in {v.vni for p in cluster_plan.plans.values() for v in p.vxlans} for t in tunnels.values())
    seen_from_emu0 = next(n for n in cluster_plan.plans["emu0"].others if n.name == "q")
    assert seen_from_emu0.control_address == whole.vm("q").control_address    # its nickname's address everywhere


def test_a_node_of_another_host_is_listed_without_its_routes_and_commands():
    """Each host's plan lists the other hosts' nodes for the shared identity files only: their interfaces as on
    one host, their host, and none of their routes or commands (sent to every host, those made the 1,000-node
    plans ~5x bigger)."""
    exp, cluster_plan = plans(text=TOPOLOGY.replace("d: {host: emu0}", "d: {host: emu0, commands: ['sleep 1']}"))
    one = {n.name: n for n in compile_plan(exp).nodes}
    assert one["d"].commands and one["a"].routes          # there is something to leave out
    for host, plan in cluster_plan.plans.items():
        assert plan.others
        for node in plan.others:
            assert node.routes == [] and node.commands == [] and node.host not in (None, host)
            assert [(i.name, i.address, i.mac, i.segment) for i in node.interfaces] == \
                [(i.name, i.address, i.mac, i.segment) for i in one[node.name].interfaces]
        for node in plan.nodes:                           # its own nodes keep everything
            assert node.routes == one[node.name].routes and node.commands == one[node.name].commands
