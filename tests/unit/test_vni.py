"""VNIs go to segments crossing hosts only (plan/multihost.py, plan/pins.py): an experiment may have any number of
host-local segments; its crossing segments are numbered in its block in file order, keep their VNI across a
recompile with the running plan's pins, and more of them than the block holds is refused in one line."""
from __future__ import annotations

import pytest

from nestbed.embed import embed
from nestbed.errors import TopologyError
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
from nestbed.plan import multihost
from nestbed.plan.multihost import ClusterPlan, HostSite, compile_plans, vni_base
from nestbed.plan.pins import Pins, pins_of


def sites(hosts: int = 2) -> dict[str, HostSite]:
    return {f"emu{i}": HostSite(prefix=f"v{i}", address=f"10.250.0.{i + 1}", underlay="ul0") for i in range(hosts)}


def compiled(text: str, running: ClusterPlan | None = None, hosts: int = 2) -> ClusterPlan:
    exp = load_topology_text(text, "vni.yaml")
    pins = pins_of(running.whole) if running is not None else None
    return compile_plans(exp, embed(exp, load_cluster_text(f"emulate: {hosts}\n", "lab.yaml")), sites(hosts), pins)


def vnis(planned: ClusterPlan) -> dict[str, int]:
    """segment → its VNI, the same on every host that holds it (asserted)."""
    out: dict[str, int] = {}
    for plan in planned.plans.values():
        for v in plan.vxlans:
            assert out.setdefault(v.segment, v.vni) == v.vni
    return out


def local_links(count: int, nodes: int = 100) -> tuple[list[str], list[str]]:
    """`count` links between distinct pairs of `nodes` nodes on emu0."""
    names = [f"a{i}" for i in range(nodes)]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]][:count]
    return [f"  {n}: {{host: emu0}}" for n in names], [f"  - {{name: h{k}, ends: [{a}, {b}]}}"
                                                       for k, (a, b) in enumerate(pairs)]


def test_thousands_of_host_local_segments_take_no_vni_and_the_crossing_ones_count_from_the_block_start():
    nodes, links = local_links(4200)
    text = "\n".join(["name: many", "routing: none", "nodes:", *nodes, "  b0: {host: emu1}", "  b1: {host: emu1}",
                      "lans:", "  far: {members: [a3, b0, b1]}", "links:", *links,
                      "  - {name: x0, ends: [a0, b0]}", "  - {name: x1, ends: [b1, a1]}"]) + "\n"
    planned = compiled(text)
    base = vni_base("many")
    assert len(planned.whole.segments) == 4203 and vnis(planned) == {"far": base, "x0": base + 1, "x1": base + 2}
    assert len(planned.plans["emu0"].vxlans) == 3 and len(planned.plans["emu1"].vxlans) == 3
    assert planned.whole.pins["vnis"] == {"far": 0, "x0": 1, "x1": 2} and planned.whole.pins["next_vni"] == 3
    names = {v.name for v in planned.plans["emu0"].vxlans}
    assert names == {"vx0", "vx4201", "vx4202"}        # the devices keep their segment-index names


BASE = """\
name: mv
nodes:
  a0: {host: emu0}
  a1: {host: emu0}
  b0: {host: emu1}
  b1: {host: emu1}
lans:
  lan0: {members: [a0, b0, a1]}
  lan1: {members: [a0, a1]}
links:
  - {name: l1, ends: [a1, b1]}
  - {name: l2, ends: [a0, b0]}
"""


def test_a_recompile_with_pins_keeps_every_vni_and_a_new_crossing_segment_takes_one_never_used():
    first = compiled(BASE)
    base = vni_base("mv")
    assert vnis(first) == {"lan0": base, "l1": base + 1, "l2": base + 2}     # lan1 is on emu0 alone
    assert vnis(compiled(BASE, first)) == vnis(first)
    # a crossing link early in the file, l1 gone, lan1 now across hosts: the others keep theirs, nothing reused
    edited = BASE.replace("  lan1: {members: [a0, a1]}", "  lan1: {members: [a0, a1, b1]}\n  lan9: {members: [b0, a0]}")
    edited = edited.replace("  - {name: l1, ends: [a1, b1]}\n", "")
    second = compiled(edited, first)
    assert vnis(second) == {"lan0": base, "lan1": base + 3, "lan9": base + 4, "l2": base + 2}
    back = compiled(BASE, second)                                       # l1 again: a new VNI, lan1 local again
    assert vnis(back) == {"lan0": base, "l1": base + 5, "l2": base + 2}
    assert back.whole.pins["vnis"] == {"lan0": 0, "l1": 5, "l2": 2} and back.whole.pins["next_vni"] == 6


def test_pins_from_before_cross_host_numbering_keep_the_vnis_they_gave():
    """A running experiment compiled when a VNI was the block's first + the segment's index keeps those."""
    first = compiled(BASE)
    old = dict(first.whole.pins)
    del old["vnis"], old["next_vni"]
    assert Pins.from_dict(old).vnis == old["segments"]
    planned = compile_plans(load_topology_text(BASE, "vni.yaml"),
                            embed(load_topology_text(BASE, "vni.yaml"), load_cluster_text("emulate: 2\n")), sites(),
                            Pins.from_dict(old))
    base = vni_base("mv")
    assert vnis(planned) == {s: base + old["segments"][s] for s in ("lan0", "l1", "l2")}
    assert planned.whole.pins["vnis"] == {"lan0": 0, "l1": 2, "l2": 3}      # lan1 (index 1) crosses no host


def test_more_crossing_segments_than_the_block_holds_is_one_line(monkeypatch):
    monkeypatch.setattr(multihost, "CROSSING_VNIS", 3)
    nodes, links = local_links(10, nodes=6)
    crossing = [f"  - {{name: x{k}, ends: [a{k}, b0]}}" for k in range(3)]
    text = "\n".join(["name: full", "nodes:", *nodes, "  b0: {host: emu1}", "links:", *links, *crossing]) + "\n"
    assert len(vnis(compiled(text))) == 3                          # 3 crossing and 10 local links: they fit
    with pytest.raises(TopologyError) as refused:
        compiled(text + "  - {name: x3, ends: [a3, b0]}\n")
    message = refused.value.render()
    assert "\n" not in message and "4 segments cross hosts, but an experiment's VXLAN block holds 3" in message
    assert "vni.yaml" in message


def test_the_real_block_holds_4095_crossing_segments_beside_the_control_network():
    assert multihost.CROSSING_VNIS == multihost.VNI_BLOCK - 1 == multihost.CONTROL_SEGMENT == 4095


def test_once_the_block_is_used_up_a_new_crossing_segment_takes_the_lowest_free_vni():
    pins = Pins(vnis={"a": 0, "b": 2}, next_vni=4)
    assert pins.number_vnis(["b", "c", "a", "d"], 4) == {"a": 0, "b": 2, "c": 1, "d": 3}
    assert pins.next_vni == 4
    later = Pins(vnis={"gone": 1, "kept": 3, "outside": 9}, next_vni=10)     # `outside`: past a smaller block
    assert later.number_vnis(["kept", "outside", "new"], 8) == {"kept": 3, "outside": 0, "new": 1}
