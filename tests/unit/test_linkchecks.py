"""linktest's arithmetic without root (control/linkchecks.py): which pairs ping, how many pings, the tolerances
of loss, delay and bandwidth, and the farthest pair."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed.control import linkchecks
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan

LAN3 = (Path(__file__).parents[2] / "examples" / "lan3.yaml").read_text()


@pytest.fixture
def plan():
    return compile_plan(load_topology_text(LAN3, "lan3.yaml"))


def test_pairs_are_all_ordered_pairs_or_a_ring_for_big_lans(plan):
    lan0 = next(s for s in plan.segments if s.name == "lan0")
    chosen, ring = linkchecks.pairs(lan0)
    assert len(chosen) == 6 and not ring and (0, 1) in chosen and (1, 0) in chosen
    big = compile_plan(load_topology_text("name: big\nnodes: {m: {count: 20}}\nlans: {l: {members: [m]}}\n", "b"))
    chosen, ring = linkchecks.pairs(big.segments[0])
    assert ring and len(chosen) == 40 and len(set(chosen)) == 40


def test_reach_count_grows_with_loss():
    assert linkchecks.reach_count(None) == 3
    assert linkchecks.reach_count(0.005) == 3
    many = linkchecks.reach_count(0.4)
    assert many > 10 and (1 - 0.6 * 0.6) ** many < 1e-4


def test_loss_tolerance_is_binomial_on_round_trips():
    assert linkchecks.loss_within(36 * 3, 300, 0.2)[0]        # 1 − 0.8² = 36%
    assert not linkchecks.loss_within(0, 300, 0.2)[0]
    assert not linkchecks.loss_within(300 // 2, 300, 0.02)[0]
    assert linkchecks.loss_within(0, 300, 0.005)[0]


def test_delay_and_bandwidth_tolerances():
    assert linkchecks.delay_within(0.0205, 0.01, None)[0]
    assert not linkchecks.delay_within(0.005, 0.01, None)[0]
    assert not linkchecks.delay_within(0.04, 0.01, None)[0]
    assert linkchecks.bandwidth_within(9.2e6, 10_000_000, None)[0]
    assert not linkchecks.bandwidth_within(7e6, 10_000_000, None)[0]
    assert not linkchecks.bandwidth_within(12e6, 10_000_000, None)[0]
    assert linkchecks.bandwidth_within(7e6, 10_000_000, 0.01)[0]        # lossy: lower bound relaxed


def test_farthest_pair_crosses_the_router(plan):
    a, b, hops, address = linkchecks.farthest_pair(plan, plan.segments)
    assert hops == 2 and {a, b} & {"c"} and address in ("10.0.0.2", "10.0.1.1", "10.0.1.2")
    back = linkchecks.farthest_pair_back(plan, plan.segments, b, a)
    assert back == next(i.address.split("/")[0] for i in plan.node(a).interfaces)
