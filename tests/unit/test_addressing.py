"""Subnets per link and LAN from 10.0.0.0/8: readable, never overlapping, honouring what users fixed."""
from __future__ import annotations

import ipaddress
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestbed.errors import TopologyError
from nestbed.model import Endpoint, Experiment
from nestbed.plan import compile_plan
from nestbed.plan.addressing import POOL, allocate

Net = ipaddress.IPv4Network
Iface = ipaddress.IPv4Interface


def members(prefix: str, count: int, fixed: dict[int, str] | None = None) -> list[Endpoint]:
    fixed = fixed or {}
    return [Endpoint(f"{prefix}{i}", Iface(fixed[i]) if i in fixed else None) for i in range(count)]


def check_allocation(segments, result) -> None:
    """The invariants every allocation keeps."""
    assert list(result) == [name for name, _kind, _members in segments]
    for (a, sa), (b, sb) in combinations(result.items(), 2):
        assert not sa.subnet.overlaps(sb.subnet), f"{a} {sa.subnet} overlaps {b} {sb.subnet}"
    for name, _kind, seg_members in segments:
        alloc = result[name]
        assert list(alloc.addresses) == [m.node for m in seg_members]       # member order kept
        ips = [address.ip for address in alloc.addresses.values()]
        assert len(set(ips)) == len(ips)
        for member in seg_members:
            address = alloc.addresses[member.node]
            assert address.network == alloc.subnet
            assert address.ip not in (alloc.subnet.network_address, alloc.subnet.broadcast_address)
            if member.ip is not None:
                assert address == member.ip
        if all(m.ip is None for m in seg_members):
            assert alloc.subnet.subnet_of(POOL)


def test_a_readable_slash24_per_segment_in_declaration_order():
    segments = [("link0", "link", members("a", 2)), ("lan0", "lan", members("b", 5)),
                ("link1", "link", members("c", 2))]
    result = allocate(segments)
    check_allocation(segments, result)
    assert [str(r.subnet) for r in result.values()] == ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]
    assert [str(a) for a in result["lan0"].addresses.values()] == [f"10.0.1.{i}/24" for i in range(1, 6)]


def test_a_lan_of_254_fits_a_slash24_and_255_does_not():
    assert allocate([("lan0", "lan", members("n", 254))])["lan0"].subnet.prefixlen == 24
    assert allocate([("lan0", "lan", members("n", 255))])["lan0"].subnet.prefixlen == 23


def test_a_1100_member_lan_gets_a_slash21_and_following_subnets_do_not_overlap():
    segments = [("link0", "link", members("a", 2)), ("big", "lan", members("n", 1100)),
                ("link1", "link", members("c", 2))]
    result = allocate(segments)
    check_allocation(segments, result)
    big = result["big"].subnet
    assert big.prefixlen <= 21 and big.num_addresses - 2 >= 1100
    assert int(big.network_address) % big.num_addresses == 0


def test_fixed_subnets_are_honoured_and_skipped_by_the_automatic_ones():
    segments = [("lan0", "lan", members("a", 3)),
                ("lan1", "lan", members("b", 3, {1: "10.0.0.7/24"})),
                ("lan2", "lan", members("c", 3)),
                ("wide", "lan", members("d", 2, {0: "10.0.2.9/23"}))]
    result = allocate(segments)
    check_allocation(segments, result)
    assert str(result["lan1"].subnet) == "10.0.0.0/24"
    assert str(result["wide"].subnet) == "10.0.2.0/23"
    assert str(result["lan0"].subnet) == "10.0.1.0/24"
    assert str(result["lan2"].subnet) == "10.0.4.0/24"      # 10.0.2.0/23 is taken
    # Members without an address share the fixed subnet and avoid the fixed address.
    assert [str(a) for a in result["lan1"].addresses.values()] == ["10.0.0.1/24", "10.0.0.7/24", "10.0.0.2/24"]


def test_a_fixed_slash16_pushes_automatic_subnets_past_it():
    segments = [("lan0", "lan", members("a", 2, {0: "10.0.200.1/16"})), ("link0", "link", members("b", 2))]
    result = allocate(segments)
    check_allocation(segments, result)
    assert str(result["link0"].subnet) == "10.1.0.0/24"


def test_fixed_subnets_outside_the_pool_are_allowed():
    segments = [("wan", "link", members("a", 2, {0: "192.168.9.1/30", 1: "192.168.9.2/30"})),
                ("link0", "link", members("b", 2))]
    result = allocate(segments)
    check_allocation(segments, result)
    assert str(result["wan"].subnet) == "192.168.9.0/30" and str(result["link0"].subnet) == "10.0.0.0/24"


def test_when_slash24s_run_out_subnets_shrink_to_fit():
    # The pool holds 65536 /24s; fixed subnets take 7/8 of them, so 8500 links need smaller subnets.
    taken = [Net("10.0.0.0/9"), Net("10.128.0.0/10"), Net("10.192.0.0/11")]
    segments = [(f"wide{i}", "lan", members(f"w{i}", 2, {0: f"{net.network_address + 1}/{net.prefixlen}"}))
                for i, net in enumerate(taken)]
    segments += [(f"l{i}", "link", [Endpoint(f"x{i}"), Endpoint(f"y{i}")]) for i in range(8500)]
    result = allocate(segments)
    subnets = [result[f"l{i}"].subnet for i in range(8500)]
    assert {s.prefixlen for s in subnets} == {30}
    assert len(set(subnets)) == 8500 and not any(s.overlaps(net) for s in subnets for net in taken)


def test_running_out_of_addresses_is_one_clear_line():
    segments = [("all", "lan", members("a", 2, {0: "10.0.0.1/8"})), ("link0", "link", members("b", 2))]
    with pytest.raises(TopologyError, match=r"needs more addresses than 10\.0\.0\.0/8"):
        allocate(segments)


@pytest.mark.parametrize("segments, message", [
    ([("lan0", "lan", members("a", 2, {0: "10.1.0.1/24", 1: "10.2.0.1/24"}))], "is not in subnet 10.1.0.0/24"),
    ([("lan0", "lan", members("a", 3, {0: "10.1.0.1/30"}))], "holds 2 hosts but the lan has 3 members"),
    ([("lan0", "lan", members("a", 2, {0: "10.1.0.1/24", 1: "10.1.0.1/24"}))], "10.1.0.1 is given to both a0 and a1"),
    ([("lan0", "lan", members("a", 2, {0: "10.1.0.1/24"})), ("lan1", "lan", members("b", 2, {0: "10.1.0.9/25"}))],
     "lan 'lan1': subnet 10.1.0.0/25 overlaps 10.1.0.0/24 of 'lan0'"),
])
def test_conflicting_fixed_addresses(segments, message):
    with pytest.raises(TopologyError) as caught:
        allocate(segments)
    assert message in str(caught.value)


def test_plan_addresses_follow_the_allocation():
    exp = Experiment("addr")
    a, b, c = (exp.process(n) for n in "abc")
    exp.link((a, "172.16.0.1/30"), (b, "172.16.0.2/30"))
    exp.lan("lan0", [a, b, c])
    plan = compile_plan(exp)
    assert [i.address for i in plan.node("a").interfaces] == ["172.16.0.1/30", "10.0.0.1/24"]
    assert [i.address for i in plan.node("c").interfaces] == ["10.0.0.3/24"]
    assert [s.subnet for s in plan.segments] == ["172.16.0.0/30", "10.0.0.0/24"]


# -- property: any mix of sizes and fixed subnets keeps the invariants ------------------------------------------
@st.composite
def segment_lists(draw):
    segments = []
    fixed_nets: list[Net] = []
    for index in range(draw(st.integers(1, 12))):
        size = draw(st.sampled_from([2, 2, 3, 10, 254, 255, 520]))
        fixed = {}
        if draw(st.booleans()) and size <= 1000:
            prefix = draw(st.integers(max(8, 32 - 14), 32 - (size + 2 - 1).bit_length()))
            block = 2 ** (32 - prefix)
            start = draw(st.integers(0, 2 ** 24 // block - 1)) * block + int(POOL.network_address)
            net = Net((start, prefix))
            if not any(net.overlaps(other) for other in fixed_nets):
                fixed_nets.append(net)
                fixed = {draw(st.integers(0, size - 1)): f"{net.network_address + 1}/{prefix}"}
        segments.append((f"s{index}", "lan" if size > 2 else "link", members(f"s{index}n", size, fixed)))
    return segments


@settings(max_examples=40, deadline=None)
@given(segments=segment_lists())
def test_allocation_invariants_hold_for_any_mix(segments):
    check_allocation(segments, allocate(segments))
