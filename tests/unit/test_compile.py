"""From a validated topology to the HostPlan: namespaces, interfaces, veths, bridge trees, hosts file, JSON."""
from __future__ import annotations

import ipaddress
import json
from collections import Counter, defaultdict

import pytest

from nestbed.model import Experiment, load_topology_text
from nestbed.plan import HostPlan, compile_plan, netns_name, switch_netns_name
from nestbed.plan.hostplan import ShapingPlan
from nestbed.plan.mechanisms.bridge import MAX_BRIDGE_MEMBERS

LAN3 = """\
name: lan3
nodes:
  a: {}
  b: {commands: ["python3 -m http.server 80"]}
  r1: {router: true}
  c: {}
links:
  - {ends: [r1, c], bandwidth: 10Mbit, delay: 20ms, jitter: 2ms, loss: 0.5%, queue: 100}
lans:
  lan0: {members: [a, b, r1], bandwidth: 100Mbit}
"""


def plan_of(text: str) -> HostPlan:
    return compile_plan(load_topology_text(text, "t.yaml"))


def check_plan_consistency(plan: HostPlan) -> None:
    """What the realizer relies on, for any plan."""
    # Kernel interface names fit IFNAMSIZ and are unique per namespace, as are ifindexes.
    names: dict[str, set[str]] = defaultdict(set)
    indexes: dict[str, set[int]] = defaultdict(set)

    def claim(netns: str, name: str, ifindex: int) -> None:
        assert len(name) <= 15, name
        assert name not in names[netns], (netns, name)
        assert ifindex not in indexes[netns], (netns, ifindex)
        names[netns].add(name)
        indexes[netns].add(ifindex)

    for bridge in plan.bridges:
        claim(bridge.netns, bridge.name, bridge.ifindex)
    for veth in plan.veths:
        for end in (veth.a, veth.b):
            claim(end.netns, end.name, end.ifindex)
    for node in plan.nodes:
        assert [i.name for i in node.interfaces] == [f"eth{j}" for j in range(len(node.interfaces))]
        assert [i.ifindex for i in node.interfaces] == [2 + j for j in range(len(node.interfaces))]
        assert names[node.netns] == {i.name for i in node.interfaces}   # every interface has its veth
    assert len(set(plan.netns_names)) == len(plan.netns_names)
    macs = [i.mac for n in plan.nodes for i in n.interfaces]
    assert len(set(macs)) == len(macs)
    assert all(int(mac.split(":")[0], 16) & 0b11 == 0b10 for mac in macs)   # local, unicast
    # A bridge's ports: masters point at bridges in the same namespace, and no bridge exceeds 1024 ports.
    bridges = {(b.netns, b.ifindex): b for b in plan.bridges}
    ports = Counter()
    for veth in plan.veths:
        for end in (veth.a, veth.b):
            if end.master is not None:
                assert (end.netns, end.master) in bridges
                ports[(end.netns, end.master)] += 1
    assert all(count <= 1024 for count in ports.values())


def test_lan3_plan():
    plan = plan_of(LAN3)
    check_plan_consistency(plan)
    assert (plan.experiment, plan.host, plan.routing) == ("lan3", "local", "static")
    assert [n.name for n in plan.nodes] == ["a", "b", "r1", "c"]
    assert [n.netns for n in plan.nodes] == ["nb-lan3.a", "nb-lan3.b", "nb-lan3.r1", "nb-lan3.c"]
    assert plan.node("b").commands == ["python3 -m http.server 80"]
    r1 = plan.node("r1")
    # Interfaces in segment order: the link comes first in the file.
    assert [(i.name, i.segment) for i in r1.interfaces] == [("eth0", "link0"), ("eth1", "lan0")]
    assert r1.interfaces[0].shaping == ShapingPlan(10_000_000, 0.02, 0.002, 0.005, 100)
    assert r1.interfaces[1].shaping == ShapingPlan(bandwidth=100_000_000)
    link0, lan0 = plan.segments
    assert (link0.name, link0.kind, lan0.name, lan0.kind) == ("link0", "link", "lan0", "lan")
    assert [m[0] for m in lan0.members] == ["a", "b", "r1"]
    assert [m[1] for m in lan0.members] == ["eth0", "eth0", "eth1"]
    assert lan0.shaping == ShapingPlan(bandwidth=100_000_000)


def test_a_link_is_one_veth_between_the_two_nodes():
    plan = plan_of(LAN3)
    link_veths = [v for v in plan.veths if v.a.master is None and v.b.master is None]
    assert len(link_veths) == 1
    (veth,) = link_veths
    assert (veth.a.netns, veth.a.name, veth.b.netns, veth.b.name) == ("nb-lan3.r1", "eth0", "nb-lan3.c", "eth0")


def test_a_lan_is_a_bridge_in_its_own_switch_namespace():
    plan = plan_of(LAN3)
    assert plan.switch_namespaces == [switch_netns_name("lan3", "lan0")] == ["nb-lan3.lan0.sw"]
    (bridge,) = plan.bridges
    assert (bridge.segment, bridge.netns) == ("lan0", "nb-lan3.lan0.sw")
    ports = [v for v in plan.veths if v.b.master == bridge.ifindex]
    assert [(v.a.netns, v.a.name) for v in ports] == [("nb-lan3.a", "eth0"), ("nb-lan3.b", "eth0"),
                                                      ("nb-lan3.r1", "eth1")]
    assert all(v.b.netns == bridge.netns for v in ports)


def test_count_expansion_in_the_plan():
    plan = plan_of("""\
name: cnt
nodes:
  r: {router: true}
  bot: {count: 3, commands: ["echo hi"]}
lans:
  lan0: {members: [r, bot]}
""")
    check_plan_consistency(plan)
    assert [n.name for n in plan.nodes] == ["r", "bot-0", "bot-1", "bot-2"]
    assert [m[2] for m in plan.segments[0].members] == ["10.0.0.1/24", "10.0.0.2/24", "10.0.0.3/24", "10.0.0.4/24"]
    assert all(plan.node(f"bot-{i}").commands == ["echo hi"] for i in range(3))


def test_explicit_addresses_are_honoured_and_automatic_subnets_avoid_them():
    plan = plan_of("""\
name: fixed
nodes: {a: {}, b: {}, c: {}}
links:
  - {ends: [a, b]}
  - {name: wan, ends: [{node: b, ip: 10.0.0.1/24}, c]}
lans:
  lan0: {members: [a, b, {node: c, ip: 10.0.1.50/24}]}
""")
    check_plan_consistency(plan)
    subnets = {s.name: ipaddress.IPv4Network(s.subnet) for s in plan.segments}
    assert str(subnets["wan"]) == "10.0.0.0/24" and str(subnets["lan0"]) == "10.0.1.0/24"
    assert not subnets["link0"].overlaps(subnets["wan"]) and not subnets["link0"].overlaps(subnets["lan0"])
    assert [i.address for i in plan.node("c").interfaces] == ["10.0.0.2/24", "10.0.1.50/24"]
    assert plan.node("b").interfaces[1].address == "10.0.0.1/24"


def test_1100_member_lan_gets_a_big_subnet_and_a_tree_of_bridges():
    exp = Experiment("big")
    exp.process("r", router=True)
    exp.process("n", count=1099)
    exp.process("x")
    exp.lan("lan0", ["r", "n"])
    exp.link("r", "x")
    plan = compile_plan(exp)
    check_plan_consistency(plan)

    subnet = ipaddress.IPv4Network(plan.segments[0].subnet)
    assert subnet.prefixlen <= 21
    assert len({m[2] for m in plan.segments[0].members}) == 1100

    lan_bridges = [b for b in plan.bridges if b.segment == "lan0"]
    assert len(lan_bridges) == 3                          # a root and two leaves
    netns = lan_bridges[0].netns
    assert all(b.netns == netns for b in lan_bridges) and plan.switch_namespaces == [netns]
    root, leaves = lan_bridges[0], lan_bridges[1:]
    members_on: Counter = Counter()
    uplinks_on: Counter = Counter()
    attached: list[tuple[str, str]] = []
    for veth in plan.veths:
        if veth.a.netns == netns and veth.b.netns == netns:          # an uplink between two bridges
            assert {veth.a.master, veth.b.master} - {root.ifindex} <= {b.ifindex for b in leaves}
            assert root.ifindex in (veth.a.master, veth.b.master)
            for end in (veth.a, veth.b):
                uplinks_on[end.master] += 1
        elif veth.b.netns == netns:                                   # a member's port
            members_on[veth.b.master] += 1
            attached.append((veth.a.netns, veth.a.name))
    assert members_on[root.ifindex] == 0
    assert uplinks_on[root.ifindex] == len(leaves)
    for leaf in leaves:
        assert 0 < members_on[leaf.ifindex] <= MAX_BRIDGE_MEMBERS
        assert uplinks_on[leaf.ifindex] == 1
        assert members_on[leaf.ifindex] + uplinks_on[leaf.ifindex] <= 1024
    assert sum(members_on.values()) == 1100
    assert sorted(attached) == sorted((netns_name("big", m[0]), m[1]) for m in plan.segments[0].members)


def test_a_lan_of_exactly_max_members_needs_no_tree():
    exp = Experiment("edge")
    exp.process("n", count=MAX_BRIDGE_MEMBERS)
    exp.lan("lan0", ["n"])
    plan = compile_plan(exp)
    check_plan_consistency(plan)
    assert len(plan.bridges) == 1


def test_node_kinds_are_carried():
    plan = plan_of("name: kinds\nnodes: {p: {}, q: {kind: qemu}, t: {kind: physical}}\nlinks:\n  - {ends: [p, q]}\n")
    assert [(n.name, n.kind) for n in plan.nodes] == [("p", "process"), ("q", "qemu"), ("t", "physical")]
    assert plan.node("t").interfaces == []


def test_unshaped_segments_have_no_shaping_plan():
    plan = plan_of("name: plain\nnodes: {a: {}, b: {}}\nlinks:\n  - {ends: [a, b]}\n")
    assert plan.segments[0].shaping is None and plan.node("a").interfaces[0].shaping is None


def test_hosts_file_names_every_node_and_interface():
    plan = plan_of(LAN3)
    assert plan.hosts_file == (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "# nestbed experiment lan3\n"
        "10.0.1.1\ta-lan0 a\n"
        "10.0.1.2\tb-lan0 b\n"
        "10.0.0.1\tr1-link0 r1\n"
        "10.0.1.3\tr1-lan0\n"
        "10.0.0.2\tc-link0 c\n")


def test_hosts_file_resolves_every_name_once():
    plan = plan_of(LAN3)
    lines = plan.hosts_file.splitlines()
    assert lines[:2] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    entries = [line.split("\t") for line in lines[2:] if not line.startswith("#")]
    names = Counter(name for _address, names in entries for name in names.split())
    assert all(count == 1 for count in names.values())
    for node in plan.nodes:
        assert names[node.name] == 1
        for iface in node.interfaces:
            assert f"{iface.address.split('/')[0]}\t{node.name}-{iface.segment}" in plan.hosts_file


def test_plans_are_deterministic():
    assert plan_of(LAN3).to_json() == plan_of(LAN3).to_json()


@pytest.mark.parametrize("text", [LAN3, LAN3 + "routing: none\n"])
def test_json_round_trip(text):
    plan = plan_of(text)
    data = plan.to_json()
    json.loads(data)                                   # valid JSON
    again = HostPlan.from_json(data)
    assert again == plan
    assert again.to_json() == data


def test_json_round_trip_of_a_bridge_tree():
    exp = Experiment("tree")
    exp.process("n", count=1100)
    exp.lan("lan0", ["n"], delay="1ms")
    plan = compile_plan(exp)
    assert HostPlan.from_json(plan.to_json()) == plan


def test_two_experiments_with_the_same_node_names_do_not_share_namespaces():
    one = plan_of(LAN3)
    two = plan_of(LAN3.replace("name: lan3", "name: lan4"))
    assert not set(one.netns_names) & set(two.netns_names)
    assert [n.name for n in one.nodes] == [n.name for n in two.nodes]


def test_nodes_on_no_segment_still_get_a_namespace():
    plan = plan_of("name: solo\nnodes: {a: {}}\n")
    assert [(n.name, n.netns, n.interfaces, n.routes) for n in plan.nodes] == [("a", "nb-solo.a", [], [])]
    assert plan.veths == [] and plan.bridges == [] and plan.switch_namespaces == []


def test_a_node_named_like_another_nodes_interface_keeps_its_name():
    plan = plan_of("name: clash\nnodes: {a: {}, a-lan0: {}}\nlans:\n  lan0: {members: [a, a-lan0]}\n")
    entries = {line.split("\t")[0]: line.split("\t")[1] for line in plan.hosts_file.splitlines()[3:]}
    assert entries == {"10.0.0.1": "a", "10.0.0.2": "a-lan0-lan0 a-lan0"}


def test_macs_stay_unique_beyond_256_interfaces():
    from nestbed.model.topology import Experiment
    from nestbed.plan import compile_plan
    exp = Experiment("manyif")
    hub = exp.process("hub")
    for i in range(300):
        exp.link(hub, exp.process(f"s{i}"))
    macs = [i.mac for n in compile_plan(exp).nodes for i in n.interfaces]
    assert len(macs) == len(set(macs)) == 600
