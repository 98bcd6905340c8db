"""Per-member shaping (a link end's or LAN member's own `egress` and `ingress`): the YAML keys and their one-line
errors, the composition compile puts on each member's egress, the bridge port's qdisc for a LAN member's ingress
(journaled before it is made, gone at teardown, changed in place by a reconcile), preflight, linktest's
expectations, ltmap, and `link set` refusing such a segment."""
from __future__ import annotations

import os
import textwrap

import pytest
from fake_kernel import FakeKernel

from nestbed.agent import lifecycle, supervision
from nestbed.errors import ExperimentError, PreflightError, TopologyError
from nestbed.model import load_topology_text
from nestbed.model.topology import Experiment
from nestbed.plan import compile_plan, pathshaping
from nestbed.plan.hostplan import HostPlan, ShapingPlan
from nestbed.plan.identity import IdentityBuilder
from nestbed.plan.pins import pins_of
from nestbed.realize import links, preflight
from nestbed.realize.apply import realize
from nestbed.realize.state import ExperimentState, experiment
from nestbed.realize.teardown import teardown

LAN = """\
name: {name}
nodes: {{a: {{}}, b: {{}}, c: {{}}}}
lans:
  lan0:
    bandwidth: 100Mbit
    loss: 0.1
    members:
      - a
      - {{node: b, ingress: {{bandwidth: {b_in}}}}}
      - {{node: c, egress: {{bandwidth: 20Mbit, loss: 0.5}}}}
"""


def lan_plan(name: str = "ms", b_in: str = "10Mbit", previous: HostPlan | None = None) -> HostPlan:
    text = LAN.format(name=name, b_in=b_in)
    return compile_plan(load_topology_text(text, "t.yaml"), pins=pins_of(previous))


def iface(plan: HostPlan, node: str, segment: str):
    return next(i for i in plan.node(node).interfaces if i.segment == segment)


# -- composition ---------------------------------------------------------------------------------------------------

def test_compose_adds_delays_multiplies_kept_fractions_and_takes_the_smallest_rate() -> None:
    got = pathshaping.compose(ShapingPlan(bandwidth=100, delay=0.01, jitter=0.001, loss=0.1, queue=50),
                              None, ShapingPlan(bandwidth=20, delay=0.005, loss=0.5, queue=80))
    assert got == ShapingPlan(bandwidth=20, delay=0.015, jitter=0.001, loss=pytest.approx(0.55), queue=50)
    assert pathshaping.compose(None, None) is None
    assert pathshaping.compose(ShapingPlan(), None) is None


def test_a_lan_member_egress_composes_with_the_lan_and_its_ingress_is_its_bridge_port() -> None:
    plan = lan_plan()
    assert iface(plan, "a", "lan0").shaping == ShapingPlan(bandwidth=100_000_000, loss=0.1)
    assert iface(plan, "b", "lan0").shaping == ShapingPlan(bandwidth=100_000_000, loss=0.1)
    assert iface(plan, "b", "lan0").ingress == ShapingPlan(bandwidth=10_000_000)
    assert iface(plan, "c", "lan0").shaping == ShapingPlan(bandwidth=20_000_000, loss=pytest.approx(0.55))
    (port,) = plan.port_shaping
    b_port = next(v.b for v in plan.veths if (v.a.netns, v.a.name) == (plan.node("b").netns, "eth0"))
    assert (port.netns, port.name, port.ifindex, port.node) == (b_port.netns, b_port.name, b_port.ifindex, "b")
    assert port.netns == plan.bridges[0].netns and port.shaping == ShapingPlan(bandwidth=10_000_000)
    assert HostPlan.from_json(plan.to_json()) == plan
    # what linktest expects of each way
    seg = plan.segments[0]
    assert pathshaping.between(plan, seg, "a", "b") == ShapingPlan(bandwidth=10_000_000, loss=0.1)
    assert pathshaping.between(plan, seg, "c", "a").bandwidth == 20_000_000
    assert pathshaping.has_member_shaping(plan, seg)


def test_a_link_end_takes_the_other_ends_ingress_on_its_egress() -> None:
    exp = Experiment("lk")
    a, b = exp.process("a"), exp.process("b")
    exp.link(exp.member(a, egress={"delay": "5ms"}), exp.member(b, "10.9.0.2/24", ingress={"bandwidth": "1Mbit"}),
             delay="10ms")
    plan = compile_plan(exp)
    assert iface(plan, "a", "link0").shaping == ShapingPlan(bandwidth=1_000_000, delay=pytest.approx(0.015))
    assert iface(plan, "b", "link0").shaping == ShapingPlan(delay=0.01)
    assert iface(plan, "b", "link0").address == "10.9.0.2/24"
    assert not plan.port_shaping and all(i.ingress is None for n in plan.nodes for i in n.interfaces)


def test_a_group_member_gives_its_own_shaping_to_each_node_of_the_group() -> None:
    text = """\
    name: grp
    nodes: {bot: {count: 3}, s: {}}
    lans:
      lan0: {members: [s, {node: bot, egress: {bandwidth: 5Mbit}}]}
    """
    plan = compile_plan(load_topology_text(textwrap.dedent(text), "g.yaml"))
    assert [iface(plan, f"bot-{i}", "lan0").shaping for i in range(3)] == [ShapingPlan(bandwidth=5_000_000)] * 3
    assert iface(plan, "s", "lan0").shaping is None


def test_no_member_shaping_keeps_the_segments_one_object() -> None:
    plan = compile_plan(load_topology_text("name: p\nnodes: {a: {}, b: {}, c: {}}\n"
                                           "lans: {l: {members: [a, b, c], delay: 5ms}}\n", "p.yaml"))
    shapings = {id(iface(plan, n, "l").shaping) for n in "abc"}
    assert len(shapings) == 1 and not plan.port_shaping
    assert not pathshaping.has_member_shaping(plan, plan.segments[0])


# -- the topology file ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("member", "line", "words"), [
    ("{node: b, egress: {bandwith: 1Mbit}}", 4, "unknown key 'bandwith' in egress of b in lan 'l'; "
                                                "did you mean 'bandwidth'?"),
    ("{node: b, ingress: {delay: soon}}", 4, "ingress of b: "),
    ("{node: b, ingress: 5ms}", 4, "ingress of b in lan 'l' must be a mapping of shaping keys"),
    ("{node: b, egress: {jitter: 1ms}}", 4, "egress of b: jitter needs a delay"),
    ("{node: b, egres: {delay: 1ms}}", 4, "unknown key 'egres' in member of lan 'l'; did you mean 'egress'?"),
])
def test_bad_member_shaping_is_one_line_at_its_line(member: str, line: int, words: str) -> None:
    text = f"name: e\nnodes: {{a: {{}}, b: {{}}}}\nlans:\n  l: {{members: [a, {member}]}}\n"
    with pytest.raises(TopologyError) as caught:
        load_topology_text(text, "e.yaml")
    message = str(caught.value)
    assert message.startswith(f"e.yaml:{line}: ") and words in message and "\n" not in message


def test_the_python_api_refuses_bad_member_shaping_in_one_line() -> None:
    exp = Experiment("api")
    with pytest.raises(TopologyError, match="unknown key 'rate' in egress of a"):
        exp.member("a", egress={"rate": "1Mbit"})
    with pytest.raises(TopologyError, match="egress of a must be a mapping"):
        exp.member("a", egress="1Mbit")        # type: ignore[arg-type]


# -- realize on the fake kernel --------------------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    return tmp_path


def test_the_port_qdisc_is_journaled_before_it_is_made_and_goes_at_teardown(root) -> None:
    kernel = FakeKernel()
    plan = lan_plan("fkp")
    state = experiment(plan.experiment)
    state.directory.mkdir(parents=True)
    kernel.journal = state.journal
    realize(plan, state, kernel.features(plan), kernel=kernel)
    (port,) = plan.port_shaping
    assert kernel.namespaces[port.netns].qdiscs == {port.ifindex}       # only b's port in the switch namespace
    made = [(key, then) for key, then in kernel.log if key == ("qdisc", port.netns, port.name)]
    assert len(made) == 1
    entries = state.journal.entries()
    journaled = next(k for k, e in enumerate(entries) if e == {"t": "qdisc", "netns": port.netns, "dev": port.name})
    assert journaled < made[0][1]
    teardown(state, kernel)
    assert kernel.objects() == set() and os.listdir(root) == []


def test_preflight_refuses_ingress_loss_without_netem(monkeypatch) -> None:
    monkeypatch.setattr(preflight, "has_qdisc", lambda kind: kind == "htb")
    monkeypatch.setattr(preflight.namespaces, "exists", lambda name: False)
    plan = compile_plan(load_topology_text(
        "name: pf\nnodes: {a: {}, b: {}}\nlans: {l: {members: [a, {node: b, ingress: {loss: 0.1}}]}}\n", "pf.yaml"))
    with pytest.raises(PreflightError) as caught:
        preflight.check(plan)
    assert "loss on l (ingress of b) needs the netem qdisc" in str(caught.value)
    delayed = compile_plan(load_topology_text(
        "name: pf\nnodes: {a: {}, b: {}}\nlans: {l: {members: [a, {node: b, egress: {delay: 1ms}}]}}\n", "pf.yaml"))
    with pytest.raises(PreflightError, match="delay/jitter on l needs the netem qdisc"):
        preflight.check(delayed)


# -- reconcile -------------------------------------------------------------------------------------------------------

@pytest.fixture
def agentless(tmp_path, monkeypatch) -> FakeKernel:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(supervision, "spawn_agent", lambda state: _Agent())
    monkeypatch.setattr(supervision, "stop_agent", lambda entries: 0)
    monkeypatch.setattr(lifecycle, "reload_agent", lambda state: {"ok": True})
    return FakeKernel()


class _Agent:
    def start(self) -> int:
        return 4242


def test_a_changed_ingress_is_rebuilt_on_its_port_in_place(agentless: FakeKernel) -> None:
    old = lan_plan("rcp")
    agentless.journal = experiment("rcp").journal
    assert lifecycle.reconcile(old, kernel=agentless).action == "up"
    (port,) = old.port_shaping
    switch = agentless.namespaces[port.netns]
    links_before = dict(switch.links)
    new = lan_plan("rcp", "5Mbit", old)
    done = lifecycle.reconcile(new, kernel=agentless)
    assert done.action == "changed"
    assert done.diff.summary() == ["lan0: ingress of b: bandwidth 10Mbit → 5Mbit"]
    assert switch.links == links_before and switch.qdiscs == {port.ifindex}
    # and unshaped again: the qdisc goes, its journal entry is tombstoned
    text = LAN.format(name="rcp", b_in="1Mbit").replace("{node: b, ingress: {bandwidth: 1Mbit}}", "b")
    bare = compile_plan(load_topology_text(text, "t.yaml"), pins=pins_of(new))
    done = lifecycle.reconcile(bare, kernel=agentless)
    assert done.diff.summary() == ["lan0: ingress of b: bandwidth 5Mbit → none"]
    assert switch.qdiscs == set()
    assert not any(e["t"] == "qdisc" and e["netns"] == port.netns for e in experiment("rcp").journal.entries())


# -- linktest, ltmap, link set ---------------------------------------------------------------------------------------

def test_linktest_expects_the_first_pairs_composed_values() -> None:
    plan = compile_plan(load_topology_text(
        "name: lt\nnodes: {a: {}, b: {}}\nlans: {l: {bandwidth: 100Mbit, delay: 4ms, members: "
        "[{node: a, egress: {delay: 2ms}}, {node: b, ingress: {bandwidth: 10Mbit, loss: 0.19}}]}}\n", "lt.yaml"))
    seg = plan.segments[0]
    trip = pathshaping.round_trip(plan, seg, "a", "b")
    assert trip is not None and trip.bandwidth == 10_000_000           # a → b crosses b's port
    assert trip.delay == pytest.approx(0.005)                          # (6 ms there + 4 ms back) / 2
    assert trip.loss == pytest.approx(0.1)                             # 1 − √(1 − 0.19): the same round trip


def test_ltmap_gives_each_pair_its_own_values() -> None:
    plan = lan_plan("lm")
    ltmap = IdentityBuilder(plan).ltmap
    assert "l a b 10000000 0 0.1 lan0 droptail" in ltmap
    assert "l a c 100000000 0 0.1 lan0 droptail" in ltmap
    assert "l c b 10000000 0 0.55 lan0 droptail" in ltmap


def test_link_set_refuses_a_segment_with_per_member_shaping(tmp_path) -> None:
    plan = lan_plan("ls")
    state = ExperimentState("ls", tmp_path)
    with pytest.raises(ExperimentError) as caught:
        links.change(state, plan, "lan0", "set", bandwidth="5Mbit")
    assert str(caught.value) == ("lan lan0 has per-member shaping (egress/ingress); set cannot change it at run "
                                 "time: edit the topology file and run `nestbed up` again")
    assert not (tmp_path / "links.json").exists()


# -- VMs, the fast reader, convert ------------------------------------------------------------------------------------

VMS = """\
name: vmm
nodes: {a: {}, b: {}, vm1: {kind: qemu, memory: 256M}}
lans:
  lan0:
    members: [a, {node: b, ingress: {bandwidth: 3Mbit}}, {node: vm1, ingress: {bandwidth: 4Mbit},
              egress: {bandwidth: 5Mbit}}]
"""


def test_a_qemu_members_ingress_is_on_its_tap_and_its_egress_in_the_guest() -> None:
    plan = compile_plan(load_topology_text(VMS, "v.yaml"))
    (tap,) = plan.vm("vm1").taps
    tap_port = next(p for p in plan.port_shaping if p.node == "vm1")
    assert (tap_port.netns, tap_port.name, tap_port.ifindex) == (tap.netns, tap.name, None)
    assert tap_port.shaping == ShapingPlan(bandwidth=4_000_000)
    assert plan.vm("vm1").guest.nodes[0].interfaces[0].shaping == ShapingPlan(bandwidth=5_000_000)


def test_processes_in_a_vhost_have_their_ingress_on_the_guests_bridge_port() -> None:
    plan = compile_plan(load_topology_text(VMS + "embed: {processes_in: qemu}\n", "v.yaml"))
    vhost = next(vm for vm in plan.vms if vm.kind == "vhost")
    (inside,) = [p for p in vhost.guest.port_shaping]
    assert inside.node == "b" and inside.shaping == ShapingPlan(bandwidth=3_000_000)
    assert {p.node for p in plan.port_shaping} == {"vm1"}          # the host shapes only the qemu node's TAP


def test_the_fast_reader_reads_member_shaping_as_pyyaml_does() -> None:
    text = LAN.format(name="fr", b_in="10Mbit")
    fast, slow = load_topology_text(text, "f.yaml", fast=True), load_topology_text(text, "f.yaml", fast=False)
    assert fast.segments["lan0"].members == slow.segments["lan0"].members


@pytest.mark.needs("tclsh")
def test_convert_writes_member_shaping_that_loads_back_the_same(tmp_path) -> None:
    from pathlib import Path

    from nestbed.model import load_topology
    from nestbed.model.nsfile.convert import to_yaml
    source = Path(__file__).parent.parent / "data" / "ns" / "es-simplex.ns"
    converted = tmp_path / "simplex.yaml"
    converted.write_text(to_yaml(source))
    again, direct = load_topology(converted), load_topology(source)
    for name in ("lan1", "link1"):
        assert [(e.node, e.egress, e.ingress) for e in again.segments[name].endpoints] == \
            [(e.node, e.egress, e.ingress) for e in direct.segments[name].endpoints]


def test_a_taps_qdisc_is_journaled_before_it_is_made(tmp_path) -> None:
    from fake_kernel import Link, Namespace

    from nestbed.realize import portshaping
    from nestbed.realize.journal import Journal
    plan = compile_plan(load_topology_text(VMS, "v.yaml"))
    (tap,) = plan.vm("vm1").taps
    kernel = FakeKernel()
    kernel.journal = Journal(tmp_path / "journal.jsonl")
    kernel.namespaces[tap.netns] = Namespace()
    kernel.namespaces[tap.netns].links[17] = Link(tap.name, "tun")      # qemu opened it: the kernel chose 17
    portshaping.shape_tap(plan.port_shaping, tap.netns, tap.name, 17, kernel.journal, kernel)
    portshaping.shape_tap(plan.port_shaping, tap.netns, "tap9", 18, kernel.journal, kernel)    # not shaped: nothing
    assert kernel.namespaces[tap.netns].qdiscs == {17}
    ((key, journaled_then),) = [(k, then) for k, then in kernel.log if k[0] == "qdisc"]
    assert key == ("qdisc", tap.netns, tap.name) and journaled_then == 1
    assert kernel.journal.entries() == [{"t": "qdisc", "netns": tap.netns, "dev": tap.name}]
