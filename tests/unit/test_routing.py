"""Static routing: every node reaches every experiment address along a shortest path, checked by following the
plan's routes hop by hop as the kernel would (connected subnets + routes, longest prefix match)."""
from __future__ import annotations

import ipaddress
import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestbed.model import Experiment, load_topology_text
from nestbed.plan import HostPlan, compile_plan
from nestbed.plan.routing import Attachment, covering_supernet, shortest_path_routes

Net = ipaddress.IPv4Network


# -- a route follower, independent of the planner ------------------------------------------------------------
class Unreachable(Exception):
    pass


class RouteFollower:
    """Walks a packet through a HostPlan: at each node, the longest prefix among connected subnets and routes."""

    def __init__(self, plan: HostPlan):
        self.nodes = {node.name: node for node in plan.nodes}
        self.owner: dict[ipaddress.IPv4Address, tuple[str, str]] = {}      # address → (node, segment)
        self.table: dict[str, list[tuple[Net, str | None, str]]] = {}      # node → (dest, gateway, device)
        for node in plan.nodes:
            entries = []
            connected = set()
            for iface in node.interfaces:
                address = ipaddress.IPv4Interface(iface.address)
                assert address.ip not in self.owner, f"{address.ip} is used twice"
                self.owner[address.ip] = (node.name, iface.segment)
                entries.append((address.network, None, iface.name))
                connected.add(address.network)
            devices = {iface.name: iface for iface in node.interfaces}
            destinations = set()
            for route in node.routes:
                dest = Net(route.destination)
                # The kernel refuses a second route to a destination (RTNETLINK: File exists).
                assert dest not in connected, f"{node.name}: route {dest} duplicates a connected subnet"
                assert dest not in destinations, f"{node.name}: two routes to {dest}"
                destinations.add(dest)
                assert route.device in devices, f"{node.name}: route via unknown device {route.device}"
                on_link = ipaddress.IPv4Interface(devices[route.device].address).network
                assert ipaddress.IPv4Address(route.gateway) in on_link, \
                    f"{node.name}: gateway {route.gateway} is not on {route.device} ({on_link})"
                entries.append((dest, route.gateway, route.device))
            self.table[node.name] = entries

    def addresses(self, node: str) -> list[ipaddress.IPv4Address]:
        return [ipaddress.IPv4Interface(i.address).ip for i in self.nodes[node].interfaces]

    def walk(self, source: str, destination: ipaddress.IPv4Address) -> list[str]:
        """The nodes a packet visits from source to the owner of destination; raises Unreachable."""
        target, _segment = self.owner[destination]
        path = [source]
        current = source
        for _ in range(len(self.nodes) + 1):
            if destination in self.addresses(current):
                return path
            matches = [entry for entry in self.table[current] if destination in entry[0]]
            if not matches:
                raise Unreachable(f"{current} has no route to {destination} (path {path})")
            _dest, gateway, device = max(matches, key=lambda entry: entry[0].prefixlen)
            segment = next(i.segment for i in self.nodes[current].interfaces if i.name == device)
            hop = destination if gateway is None else ipaddress.IPv4Address(gateway)
            owner = self.owner.get(hop)
            assert owner is not None and owner[1] == segment, \
                f"{current}: next hop {hop} is not on {device} ({segment}), path {path}"
            current = owner[0]
            if current != target:
                assert self.nodes[current].forwarding, f"{current} must forward toward {destination} (path {path})"
            path.append(current)
        raise AssertionError(f"routing loop toward {destination}: {path}")


def distances_from(plan: HostPlan, source: str) -> tuple[dict[str, int], dict[str, int]]:
    """Fewest segments a packet from source crosses to reach each node, and to arrive on each segment."""
    on: dict[str, list[str]] = {}
    for seg in plan.segments:
        on[seg.name] = [m[0] for m in seg.members]
    node_segments = {n.name: [i.segment for i in n.interfaces] for n in plan.nodes}
    distance = {source: 0}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        for seg in node_segments[node]:
            for other in on[seg]:
                if other not in distance:
                    distance[other] = distance[node] + 1
                    queue.append(other)
    to_segment = {seg: min(distance[n] for n in members) + 1 for seg, members in on.items()
                  if any(n in distance for n in members)}
    return distance, to_segment


def assert_all_reach_all(plan: HostPlan, shortest: bool = True) -> int:
    """Every node reaches every address of every node in its component along a shortest path toward that
    address's subnet (the packet is delivered early if it meets the owner on the way); returns the count."""
    follower = RouteFollower(plan)
    checked = 0
    for source in plan.nodes:
        to_node, to_segment = distances_from(plan, source.name)
        for target in plan.nodes:
            for iface in target.interfaces:
                address = ipaddress.IPv4Interface(iface.address).ip
                if iface.segment not in to_segment:
                    with pytest.raises(Unreachable):        # other component: dropped, never looped
                        follower.walk(source.name, address)
                    continue
                path = follower.walk(source.name, address)
                assert path[-1] == target.name
                if shortest and source.name != target.name:
                    hops = len(path) - 1
                    assert to_node[target.name] <= hops <= to_segment[iface.segment], (iface.address, path)
                checked += 1
    return checked


def load(text: str):
    return compile_plan(load_topology_text(text, "t.yaml"))


# -- fixed shapes ---------------------------------------------------------------------------------------------
CHAIN = """
name: chain
nodes: {a: {}, r1: {}, r2: {}, b: {}}
links:
  - {ends: [a, r1]}
  - {ends: [r1, r2]}
  - {ends: [r2, b]}
"""


def test_three_hop_chain_every_node_reaches_every_subnet():
    plan = load(CHAIN)
    follower = RouteFollower(plan)
    assert assert_all_reach_all(plan) == 4 * 6
    b_address = ipaddress.IPv4Interface(plan.node("b").interfaces[0].address).ip
    assert follower.walk("a", b_address) == ["a", "r1", "r2", "b"]
    for segment in plan.segments:
        for node in plan.nodes:
            # Some address in every subnet is reachable from every node.
            address = ipaddress.IPv4Interface(segment.members[0][2]).ip
            assert follower.walk(node.name, address)[-1] == segment.members[0][0]


def test_transit_nodes_forward_and_end_nodes_do_not():
    plan = load(CHAIN)
    assert {n.name: n.forwarding for n in plan.nodes} == {"a": False, "r1": True, "r2": True, "b": False}


def test_routes_in_a_chain_use_the_covering_supernet():
    plan = load(CHAIN)
    supernet = covering_supernet([Net(s.subnet) for s in plan.segments])
    a_routes = plan.node("a").routes
    assert [(r.destination, r.gateway, r.device) for r in a_routes] == [(str(supernet), "10.0.0.2", "eth0")]
    # r1's only remote subnet is behind r2, so one supernet route via r2 covers it.
    r2_on_link1 = plan.node("r2").interfaces[0].address.split("/")[0]
    assert [(r.destination, r.gateway, r.device) for r in plan.node("r1").routes] == [
        (str(supernet), r2_on_link1, "eth1")]


LAN3 = """
name: lan3
nodes:
  a: {}
  b: {}
  r1: {router: true}
  c: {}
  bot: {count: 4}
links:
  - {ends: [r1, c]}
lans:
  lan0: {members: [a, b, r1, bot]}
"""


def test_lan_behind_a_router():
    plan = load(LAN3)
    assert_all_reach_all(plan)
    assert {n.name for n in plan.nodes if n.forwarding} == {"r1"}


def test_leaves_on_one_lan_share_the_same_routes():
    plan = load(LAN3)
    routes = [plan.node(n).routes for n in ("a", "b", "bot-0", "bot-3")]
    assert all(r == routes[0] for r in routes) and routes[0]


def test_a_ring_takes_the_short_way_round():
    exp = Experiment("ring")
    names = [f"n{i}" for i in range(6)]
    for name in names:
        exp.process(name)
    for i, name in enumerate(names):
        exp.link(name, names[(i + 1) % 6])
    plan = compile_plan(exp)
    assert_all_reach_all(plan)
    assert all(n.forwarding for n in plan.nodes)


def test_lans_joined_by_routers_on_a_core_lan():
    """The benchmark's shape, small: LANs of nodes, each with a router, routers on a core LAN."""
    exp = Experiment("bench")
    routers = []
    for i in range(4):
        router = exp.process(f"r{i}")
        hosts = exp.process(f"h{i}", count=5)
        exp.lan(f"lan{i}", [router, hosts])
        routers.append(router)
    exp.lan("core", routers)
    plan = compile_plan(exp)
    assert_all_reach_all(plan)
    assert {n.name for n in plan.nodes if n.forwarding} == {"r0", "r1", "r2", "r3"}
    # Leaves need one route (the supernet via their router): the table stays small however big the experiment.
    assert len(plan.node("h0-0").routes) == 1


def test_fixed_subnets_outside_10_8_are_routed_too():
    plan = load("""
name: wan
nodes: {a: {}, r: {}, b: {}}
links:
  - {name: wan, ends: [{node: a, ip: 192.168.9.1/30}, {node: r, ip: 192.168.9.2/30}]}
  - {ends: [r, b]}
""")
    assert_all_reach_all(plan)


def test_parallel_links_between_two_nodes():
    exp = Experiment("par")
    a, b, c = exp.process("a"), exp.process("b"), exp.process("c")
    exp.link(a, b)
    exp.link(a, b)
    exp.link(b, c)
    assert_all_reach_all(compile_plan(exp))


def test_disconnected_parts_reach_within_and_drop_across():
    exp = Experiment("split")
    for n in "abcdef":
        exp.process(n)
    exp.link("a", "b")
    exp.link("b", "c")
    exp.lan("lan0", ["d", "e", "f"])
    exp.process("lonely")
    plan = compile_plan(exp)
    assert_all_reach_all(plan)
    assert plan.node("lonely").routes == [] and plan.node("lonely").interfaces == []


def test_routing_none_gives_no_routes():
    plan = load(CHAIN.replace("name: chain", "name: chain\nrouting: none"))
    assert plan.routing == "none"
    assert all(n.routes == [] for n in plan.nodes)
    assert not any(n.forwarding for n in plan.nodes)


def test_routing_none_keeps_router_flags():
    plan = load(LAN3 + "routing: none\n")
    assert {n.name for n in plan.nodes if n.forwarding} == {"r1"}
    assert all(n.routes == [] for n in plan.nodes)


# -- random topologies ----------------------------------------------------------------------------------------
def random_experiment(rng: random.Random, size: int, connected: bool = True) -> Experiment:
    """Nodes joined by a random spanning structure of links and LANs, plus extra random segments."""
    exp = Experiment("rnd")
    names = [f"n{i}" for i in range(size)]
    for name in names:
        exp.process(name, router=rng.random() < 0.1)
    segments: list[list[str]] = []
    for i in range(1, size):
        if not connected and rng.random() < 0.25:
            continue
        earlier = names[rng.randrange(i)]
        choice = rng.random()
        joinable = [s for s in segments if earlier in s]
        if choice < 0.3 and joinable:
            rng.choice(joinable).append(names[i])
        else:
            segments.append([earlier, names[i]])
    for _ in range(rng.randrange(0, size // 2 + 1)):
        segments.append(rng.sample(names, min(size, rng.choice([2, 2, 3, 4]))))
    for index, members in enumerate(segments):
        if len(members) == 2 and rng.random() < 0.7:
            exp.link(*members)
        else:
            exp.lan(f"lan{index}", members)
    return exp


@pytest.mark.parametrize("seed", range(40))
def test_random_connected_topologies(seed):
    rng = random.Random(seed)
    plan = compile_plan(random_experiment(rng, rng.randrange(2, 16)))
    assert_all_reach_all(plan)


@pytest.mark.parametrize("seed", range(20))
def test_random_disconnected_topologies(seed):
    rng = random.Random(1000 + seed)
    assert_all_reach_all(compile_plan(random_experiment(rng, rng.randrange(2, 14), connected=False)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(2, 12), connected=st.booleans())
def test_any_topology_routes_correctly(seed, size, connected):
    exp = random_experiment(random.Random(seed), size, connected)
    plan = compile_plan(exp)
    assert_all_reach_all(plan)
    declared_routers = {name for name, node in exp.nodes.items() if node.router}
    for node in plan.nodes:
        if len(node.interfaces) < 2:      # a node on one segment never carries others' traffic
            assert node.forwarding == (node.name in declared_routers)


# -- the pure functions ---------------------------------------------------------------------------------------
def att(node: str, device: str, address: str) -> Attachment:
    return Attachment(node, device, ipaddress.IPv4Interface(address))


def test_shortest_path_routes_without_a_supernet_lists_every_destination():
    segments = {
        "l0": (Net("10.0.0.0/24"), [att("a", "eth0", "10.0.0.1/24"), att("r", "eth0", "10.0.0.2/24")]),
        "l1": (Net("10.0.1.0/24"), [att("r", "eth1", "10.0.1.1/24"), att("b", "eth0", "10.0.1.2/24")]),
        "l2": (Net("10.0.2.0/24"), [att("b", "eth1", "10.0.2.1/24"), att("c", "eth0", "10.0.2.2/24")]),
    }
    routes, forwarders = shortest_path_routes(segments, None)
    assert sorted((r.destination, r.gateway, r.device) for r in routes["a"]) == [
        ("10.0.1.0/24", "10.0.0.2", "eth0"), ("10.0.2.0/24", "10.0.0.2", "eth0")]
    assert [(r.destination, r.gateway) for r in routes["r"]] == [("10.0.2.0/24", "10.0.1.2")]
    assert [(r.destination, r.gateway) for r in routes["b"]] == [("10.0.0.0/24", "10.0.1.1")]
    assert forwarders == {"r", "b"}


def test_shortest_path_routes_with_a_supernet_aggregate_the_common_next_hop():
    segments = {
        "l0": (Net("10.0.0.0/24"), [att("a", "eth0", "10.0.0.1/24"), att("r", "eth0", "10.0.0.2/24")]),
        "l1": (Net("10.0.1.0/24"), [att("r", "eth1", "10.0.1.1/24"), att("b", "eth0", "10.0.1.2/24")]),
        "l2": (Net("10.0.2.0/24"), [att("r", "eth2", "10.0.2.1/24"), att("c", "eth0", "10.0.2.2/24")]),
    }
    routes, forwarders = shortest_path_routes(segments, Net("10.0.0.0/22"))
    assert [(r.destination, r.gateway, r.device) for r in routes["a"]] == [("10.0.0.0/22", "10.0.0.2", "eth0")]
    assert routes["r"] == []
    assert forwarders == {"r"}


@pytest.mark.parametrize("subnets, supernet", [
    (["10.0.0.0/24"], "10.0.0.0/24"),
    (["10.0.0.0/24", "10.0.1.0/24"], "10.0.0.0/23"),
    (["10.0.0.0/24", "10.0.2.0/24"], "10.0.0.0/22"),
    (["10.0.1.0/24", "10.0.2.0/24"], "10.0.0.0/22"),
    (["10.0.0.0/24", "10.255.0.0/16"], "10.0.0.0/8"),
    (["10.0.0.0/24", "192.168.9.0/30"], None),
    ([], None),
])
def test_covering_supernet(subnets, supernet):
    result = covering_supernet([Net(s) for s in subnets])
    assert (None if result is None else str(result)) == supernet
    if result is not None:
        assert all(Net(s).subnet_of(result) for s in subnets)
