"""The Python API builds the same model as the topology file and enforces the same rules."""
from __future__ import annotations

import ipaddress

import pytest

from nestbed.errors import TopologyError
from nestbed.model import Endpoint, Experiment, Shaping, load_topology_text
from nestbed.plan import compile_plan


def lan3() -> Experiment:
    exp = Experiment("lan3")
    a, b = exp.process("a"), exp.process("b", commands=["python3 -m http.server 80"])
    r1 = exp.process("r1", router=True)
    c = exp.process("c")
    exp.link(r1, c, bandwidth="10Mbit", loss="0.5%")
    exp.lan("lan0", [a, b, r1], bandwidth="100Mbit")
    return exp


LAN3_YAML = """\
name: lan3
nodes:
  a: {}
  b: {commands: ["python3 -m http.server 80"]}
  r1: {router: true}
  c: {}
links:
  - {ends: [r1, c], bandwidth: 10Mbit, loss: 0.5%}
lans:
  lan0: {members: [a, b, r1], bandwidth: 100Mbit}
"""


def test_api_and_file_give_the_same_plan():
    from_api = compile_plan(lan3())
    from_file = compile_plan(load_topology_text(LAN3_YAML, "lan3.yaml"))
    assert from_api == from_file
    assert from_api.to_json() == from_file.to_json()


def test_building_returns_the_model_objects():
    exp = Experiment("api")
    a = exp.process("a")
    b = exp.node("b", "process", router=True)
    vm = exp.qemu("vm1", cpus=2, memory="1G")
    t = exp.physical("t")
    link = exp.link(a, "b", bandwidth="10Mbps", delay="5ms", jitter="1ms", loss=0.01, queue=50)
    lan = exp.lan("lan0", [a, b, vm, t])
    assert (a.kind, vm.kind, t.kind, b.router) == ("process", "qemu", "physical", True)
    assert (vm.cpus, vm.memory) == (2.0, 2**30)
    assert str(a) == "a"
    assert link.name == "link0" and [e.node for e in link.ends] == ["a", "b"]
    assert link.shaping == Shaping(10_000_000, 0.005, 0.001, 0.01, 50)
    assert [m.node for m in lan.members] == ["a", "b", "vm1", "t"]
    assert list(exp.segments) == ["link0", "lan0"]
    assert all(e.location == "<python>" for e in lan.members)
    exp.validate()


def test_links_are_numbered_in_call_order_and_may_be_named():
    exp = Experiment("names")
    a, b, c = (exp.process(n) for n in "abc")
    assert exp.link(a, b).name == "link0"
    assert exp.link(b, c, name="uplink").name == "uplink"
    assert exp.link(a, c).name == "link2"


def test_member_addresses_as_tuples_and_endpoints():
    exp = Experiment("addr")
    a, b, c = (exp.process(n) for n in "abc")
    lan = exp.lan("lan0", [(a, "10.1.0.10/24"), ("b", "10.1.0.11/24"), Endpoint("c")])
    assert [m.ip for m in lan.members] == [ipaddress.IPv4Interface("10.1.0.10/24"),
                                           ipaddress.IPv4Interface("10.1.0.11/24"), None]
    plan = compile_plan(exp)
    assert [m[2] for m in plan.segments[0].members] == ["10.1.0.10/24", "10.1.0.11/24", "10.1.0.1/24"]


def test_commands_may_be_any_iterable_of_lines():
    exp = Experiment("cmds")
    node = exp.process("a", commands=(f"echo {i}" for i in range(2)))
    assert node.commands == ["echo 0", "echo 1"]


def test_count_groups_from_the_api():
    exp = Experiment("grp")
    exp.process("r", router=True)
    bots = exp.process("bot", count=4)
    exp.lan("lan0", ["r", bots])
    plan = compile_plan(exp)
    assert [n.name for n in plan.nodes] == ["r", "bot-0", "bot-1", "bot-2", "bot-3"]
    assert [m[0] for m in plan.segments[0].members] == ["r", "bot-0", "bot-1", "bot-2", "bot-3"]


@pytest.mark.parametrize("build, message", [
    (lambda: Experiment("Bad Name"), "experiment name 'Bad Name' is not valid"),
    (lambda: Experiment(""), "experiment name '' is not valid"),
    (lambda: Experiment("sixteen-chars-xx"), "is not valid"),
    (lambda: Experiment("ok", routing="ospf"), "routing 'ospf' is not known"),
])
def test_bad_experiments(build, message):
    with pytest.raises(TopologyError, match=message) as caught:
        build()
    assert str(caught.value).startswith("<python>: ")


def test_experiment_names_up_to_fifteen_characters():
    assert Experiment("a" * 15).name == "a" * 15
    assert Experiment("x-1").name == "x-1"


def _exp() -> Experiment:
    exp = Experiment("err")
    exp.process("a")
    exp.process("b")
    exp.process("bot", count=3)
    return exp


@pytest.mark.parametrize("step, message", [
    (lambda e: e.process("a"), "node 'a' is defined twice (first at <python>)"),
    (lambda e: e.process("A"), "node name 'A' is not valid"),
    (lambda e: e.process("a-"), "node name 'a-' is not valid"),
    (lambda e: e.process("1a"), "node name '1a' is not valid"),
    (lambda e: e.node("c", "docker"), "node 'c' has unknown kind 'docker'"),
    (lambda e: e.process("c", router="yes"), "router must be true or false"),
    (lambda e: e.process("c", commands="echo hi"), "commands must be a list of command lines"),
    (lambda e: e.process("c", commands=[""]), "commands must be a list of command lines"),
    (lambda e: e.process("c", count=0), "count 0 must be an integer from 1 to 100000"),
    (lambda e: e.process("c", count=True), "count True must be an integer"),
    (lambda e: e.process("c", host="H 1"), "host name 'H 1' is not valid"),
    (lambda e: e.qemu("c", memory="lots"), "node 'c': memory 'lots' is not a size"),
    (lambda e: e.qemu("c", cpus=-1), "node 'c': cpus -1 must be a number above 0"),
    (lambda e: e.link("a", "b", bandwidth="10MB"), "is in bytes"),
    (lambda e: e.link("a", "b", delay="100s"), "above the 60s limit"),
    (lambda e: e.link("a", "b", loss="150%"), "between 0% and 100%"),
    (lambda e: e.link("a", "b", jitter="1ms"), "jitter needs a delay"),
    (lambda e: e.link("a", "b", name="Link"), "link name 'Link' is not valid"),
    (lambda e: e.lan("LAN", ["a", "b"]), "lan name 'LAN' is not valid"),
    (lambda e: e.link(("a", "10.0.0.300/24"), "b"), "is not an IPv4 address with prefix"),
    (lambda e: e.link(("a", "10.0.0.3"), "b"), "has no prefix length"),
    (lambda e: e.link(("a", "10.0.0.0/24"), "b"), "is the network address of 10.0.0.0/24"),
    (lambda e: e.link(("a", "10.0.0.255/24"), "b"), "is the broadcast address of 10.0.0.0/24"),
    (lambda e: e.link(("a", "10.0.0.1/32"), "b"), "prefix /32 is too small"),
    (lambda e: e.link(5, "b"), "5 is not a node name"),
    (lambda e: e.set_routing("ospf"), "routing 'ospf' is not known"),
])
def test_mistakes_are_caught_when_building(step, message):
    exp = _exp()
    with pytest.raises(TopologyError, match=None) as caught:
        step(exp)
    assert message in str(caught.value)
    assert str(caught.value).startswith("<python>: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize("step, message", [
    (lambda e: e.link("a", "zz"), "link 'link0' names unknown node 'zz'"),
    (lambda e: e.lan("lan0", ["a", "bb"]), "lan 'lan0' names unknown node 'bb'; did you mean 'b'?"),
    (lambda e: e.link("a", "a"), "link 'link0' links a node to itself ('a')"),
    (lambda e: e.link("a", "bot"), "link 'link0' ends at 'bot', a group of 3 nodes"),
    (lambda e: e.lan("lan0", ["a", "bot-1", "bot"]), "lan 'lan0' lists 'bot-1' twice"),
    (lambda e: e.lan("lan0", ["a", ("bot", "10.0.0.1/24")]), "'bot' is a group of 3 nodes and cannot take one"),
    (lambda e: e.process("bot-2"), "node 'bot-2' collides with 'bot-2' from 'bot' (count 3)"),
    (lambda e: e.lan("lan0", [("a", "10.1.0.1/24"), ("b", "10.2.0.1/24")]), "is not in subnet 10.1.0.0/24"),
    (lambda e: e.lan("lan0", [("a", "10.1.0.1/24"), ("b", "10.1.0.1/24")]), "10.1.0.1 is given to both a and b"),
    (lambda e: (e.link(("a", "10.1.0.1/24"), "b"), e.link(("a", "10.1.0.5/16"), "b")), "overlaps 10.1.0.0/24"),
])
def test_mistakes_are_caught_when_validating(step, message):
    exp = _exp()
    step(exp)
    with pytest.raises(TopologyError) as caught:
        compile_plan(exp)
    assert message in str(caught.value)
    assert str(caught.value).startswith("<python>: ")


def test_segment_names_are_shared_by_links_and_lans():
    exp = _exp()
    exp.lan("link0", ["a", "b"])
    with pytest.raises(TopologyError, match="lan name 'link0' is already used by the lan at <python>"):
        exp.lan("link0", ["a", "b"])
    assert exp.link("a", "b").name == "link1"      # an unnamed link takes the next free number


def test_shaping_flags():
    assert Shaping().is_empty and not Shaping().needs_netem
    assert Shaping.parse("<python>", bandwidth="1Mbit").needs_netem is False
    assert Shaping.parse("<python>", delay="1ms").needs_netem
    assert Shaping.parse("<python>", loss=0).is_empty          # zero loss shapes nothing
    assert Shaping.parse("<python>", delay="0ms").is_empty
    with pytest.raises(TopologyError, match="jitter 20ms is larger than delay 5ms"):
        Shaping.parse("x.yaml:3", delay="5ms", jitter="20ms")


def test_validate_checks_the_whole_topology_once_built():
    exp = Experiment("late")
    exp.link("a", "b")               # nodes may be declared after the links that use them
    exp.process("a")
    exp.process("b")
    exp.validate()
    assert [n.name for n in compile_plan(exp).nodes] == ["a", "b"]


def test_unnamed_link_skips_a_number_taken_by_an_explicit_name():
    from nestbed.model.topology import Experiment
    exp = Experiment("names")
    a, b, c = exp.process("a"), exp.process("b"), exp.process("c")
    exp.link(a, b, name="link1")
    second = exp.link(b, c)
    assert second.name == "link2"


def test_localhost_is_not_a_node_name():
    import pytest

    from nestbed.errors import TopologyError
    from nestbed.model.topology import Experiment
    with pytest.raises(TopologyError, match="reserved"):
        Experiment("names").process("localhost")
