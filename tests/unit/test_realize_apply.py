"""realize.apply against a fake kernel: what the plan says is made, each object journaled before it exists, and
a failure at any point rolls back to nothing (no root needed)."""
from __future__ import annotations

import os
import textwrap

import pytest
from fake_kernel import FakeFailure, FakeKernel

from nestbed.agent import lifecycle
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize.apply import realize
from nestbed.realize.state import experiment
from nestbed.realize.teardown import teardown

TOPOLOGY = """\
name: {name}
nodes:
  a: {{}}
  b: {{}}
  r1: {{router: true}}
  c: {{}}
links:
  - {{ends: [r1, c], bandwidth: 10Mbit, delay: 5ms}}
lans:
  lan0: {{members: [a, b, r1], bandwidth: 100Mbit}}
"""


def plan_of(name: str = "fk"):
    return compile_plan(load_topology_text(textwrap.dedent(TOPOLOGY.format(name=name)), "t.yaml"))


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    return tmp_path


def realized(kernel: FakeKernel, plan):
    state = experiment(plan.experiment)
    state.directory.mkdir(parents=True)
    kernel.journal = state.journal
    realize(plan, state, kernel.features(plan), kernel=kernel)
    return state


def journal_keys(entry: dict) -> list[tuple]:
    """The fake's object keys a journal entry names."""
    t = entry["t"]
    if t == "netns":
        return [("netns", entry["name"])]
    if t == "bridge":
        return [("link", entry["netns"], entry["name"])]
    if t == "veth":
        return [("link", entry["netns"], entry["name"]), ("link", entry["peer_netns"], entry["peer"])]
    if t == "qdisc":
        return [("qdisc", entry["netns"], entry["dev"])]
    if t in ("identity", "mailbox"):
        return [(t, entry["root"])]
    return []


def test_apply_makes_what_the_plan_says(root):
    kernel = FakeKernel()
    plan = plan_of()
    state = realized(kernel, plan)
    assert set(kernel.namespaces) - {""} == set(plan.netns_names)
    for node in plan.local_nodes:
        ns = kernel.namespaces[node.netns]
        assert {i: link.name for i, link in ns.links.items() if i != 1} == {i.ifindex: i.name for i in node.interfaces}
        assert {a for _, a in ns.addresses} == {i.address for i in node.interfaces}
        assert all(link.up for link in ns.links.values())
        assert len(ns.routes) == len(node.routes)
        assert ns.qdiscs == {i.ifindex for i in node.interfaces if i.shaping}
    assert kernel.namespaces["nb-fk.r1"].sysctls["net/ipv4/ip_forward"] == "1"
    assert "net/ipv4/ip_forward" not in kernel.namespaces["nb-fk.a"].sysctls
    switch = kernel.namespaces[plan.bridges[0].netns]
    assert switch.sysctls["net/ipv6/conf/all/disable_ipv6"] == "1"
    (bridge,) = [link for link in switch.links.values() if link.kind == "bridge"]
    ports = [link for link in switch.links.values() if link.kind == "veth"]
    assert bridge.up and len(ports) == 3 and all(p.master == plan.bridges[0].ifindex and p.up for p in ports)
    for veth in plan.veths:               # each pair's ends are each other's peers, in their namespaces
        a = kernel.namespaces[veth.a.netns].links[veth.a.ifindex]
        assert (a.name, a.peer) == (veth.a.name, (veth.b.netns, veth.b.ifindex))
    assert {kind for kind, _ in kernel.files} == {"identity", "mailbox"}
    assert state.hosts_path.read_text() == plan.hosts_file


def test_every_object_is_journaled_before_it_is_created(root):
    kernel = FakeKernel()
    state = realized(kernel, plan_of())
    first_named: dict[tuple, int] = {}
    for index, entry in enumerate(state.journal.entries()):
        for key in journal_keys(entry):
            first_named.setdefault(key, index)
    checked = 0
    for key, journaled_then in kernel.log:
        if key[0] == "address":
            continue                 # addresses and routes live in their namespace: journaled as it
        assert key in first_named, f"{key} was never journaled"
        assert first_named[key] < journaled_then, f"{key} created before its journal entry"
        checked += 1
    assert checked == len(kernel.log) - sum(1 for key, _ in kernel.log if key[0] == "address") > 20


def count_operations() -> int:
    kernel = FakeKernel()
    realized(kernel, plan_of("count"))
    return kernel.operations


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
def test_a_failure_anywhere_rolls_back_to_nothing(root, fraction):
    total = count_operations()
    for leftover in os.listdir(root):
        os.rename(root / leftover, root.parent / f"{root.name}-{leftover}")     # the counting run's state
    kernel = FakeKernel(fail_at=max(1, round(total * fraction)))
    foreign = kernel.spawn(None)
    with pytest.raises(FakeFailure):
        lifecycle.up(plan_of(), kernel=kernel)
    assert kernel.objects() == {("process", foreign)}
    assert os.listdir(root) == []


def test_a_failure_in_realize_then_teardown_leaves_nothing(root):
    kernel = FakeKernel(fail_at=12)
    plan = plan_of()
    state = experiment(plan.experiment)
    state.directory.mkdir(parents=True)
    with pytest.raises(OSError, match="fake failure at operation 12"):
        realize(plan, state, kernel.features(plan), kernel=kernel)
    assert kernel.objects()
    teardown(state, kernel)
    assert kernel.objects() == set()
    assert os.listdir(root) == []
