"""--keep-going's re-embedding (cluster/relocate.py): only a lost host's nodes move, everything else stays where
it runs with its numbering; a pin to a lost host is freed with a note; no host left, or no room, is one line."""
from __future__ import annotations

import pytest

from nestbed.cluster import relocate
from nestbed.embed import embed
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.model.cluster import load_cluster_text
from nestbed.plan.multihost import ClusterPlan, HostSite, compile_plans

HOSTS = ["emu0", "emu1", "emu2"]
TOPOLOGY = """
name: mv
nodes:
  a: {host: emu0}
  b: {host: emu1}
  r: {router: true}
  bot: {count: 9}
lans:
  lan0: {members: [a, b, r, bot], bandwidth: 100Mbit}
links:
  - {name: l1, ends: [r, b], bandwidth: 50Mbit}
"""


def sites() -> dict[str, HostSite]:
    return {h: HostSite(prefix=f"nb{i}", address=f"10.250.0.{i + 1}", underlay="ul0") for i, h in enumerate(HOSTS)}


def running(text: str = TOPOLOGY, cluster: str = "emulate: 3\n") -> tuple[ClusterPlan, dict[str, str]]:
    exp = load_topology_text(text, "mv.yaml")
    planned = compile_plans(exp, embed(exp, load_cluster_text(cluster, "lab.yaml")), sites())
    return planned, {n.name: h for h, plan in planned.plans.items() for n in plan.nodes}


def interfaces(planned: ClusterPlan) -> dict[str, list[tuple[str, str, str | None]]]:
    """node → its (name, MAC, address) per interface, wherever it runs."""
    return {n.name: [(i.name, i.mac, i.address) for i in n.interfaces]
            for plan in planned.plans.values() for n in plan.nodes}


def test_only_the_lost_hosts_nodes_move_and_every_other_keeps_host_and_numbering():
    before, host_of = running()
    assert "emu1" in host_of.values() and len(set(host_of.values())) == 3
    done = relocate.relocate(load_topology_text(TOPOLOGY, "mv.yaml"), load_cluster_text("emulate: 3\n", "lab.yaml"),
                             sites(), before.whole, host_of, {"emu1"})
    after = {n.name: h for h, plan in done.planned.plans.items() for n in plan.nodes}
    assert sorted(done.planned.plans) == ["emu0", "emu2"]
    assert sorted(after) == sorted(host_of), "every node still runs"
    assert all(after[n] == h for n, h in host_of.items() if h != "emu1"), "a node on a live host moved"
    on_lost = sorted(n for n, h in host_of.items() if h == "emu1")
    assert sorted(done.moved) == on_lost and all(h in ("emu0", "emu2") for h in done.moved.values())
    assert interfaces(done.planned) == interfaces(before), "names, MACs or addresses changed"
    assert done.notes == ["node b was pinned to emu1, which is lost: placed afresh"]


def test_a_second_loss_moves_the_nodes_again_and_keeps_the_first_move():
    before, host_of = running()
    cluster = load_cluster_text("emulate: 3\n", "lab.yaml")
    exp = load_topology_text(TOPOLOGY, "mv.yaml")
    first = relocate.relocate(exp, cluster, sites(), before.whole, host_of, {"emu1"})
    placed = {n.name: h for h, plan in first.planned.plans.items() for n in plan.nodes}
    second = relocate.relocate(exp, cluster, sites(), first.planned.whole, placed, {"emu1", "emu2"})
    assert sorted(second.planned.plans) == ["emu0"]
    assert {n.name for n in second.planned.plans["emu0"].nodes} == set(host_of)
    assert sorted(second.moved) == sorted(n for n, h in placed.items() if h == "emu2")


def test_no_host_left_or_no_room_left_is_one_line():
    before, host_of = running()
    exp = load_topology_text(TOPOLOGY, "mv.yaml")
    with pytest.raises(ExperimentError, match=r"every host is lost \(emu0, emu1, emu2\)"):
        relocate.relocate(exp, load_cluster_text("emulate: 3\n", "lab.yaml"), sites(), before.whole, host_of,
                          set(HOSTS))
    small = "emulate: 3\nhosts:\n  emu0: {max_containers: 5}\n  emu2: {max_containers: 5}\n"
    before, host_of = running(cluster=small)
    with pytest.raises(ExperimentError) as caught:
        relocate.relocate(exp, load_cluster_text(small, "lab.yaml"), sites(), before.whole, host_of, {"emu1"})
    message = str(caught.value)
    assert message.startswith("the nodes of lost host(s) emu1 do not fit on the others: ") and "\n" not in message


def test_placed_keeps_group_members_on_their_hosts():
    """A group's members each stay where they run (the declared `host:` pins only name whole nodes)."""
    exp = load_topology_text(TOPOLOGY, "mv.yaml")
    cluster = load_cluster_text("emulate: 3\n", "lab.yaml")
    members = [f"bot-{i}" for i in range(9)]
    wanted = {m: HOSTS[(i * 2) % 3] for i, m in enumerate(members)}        # not what the embedder would pick
    placement = embed(exp, cluster, placed=wanted).placement
    assert {m: placement[m].host for m in members} == wanted
    assert placement["a"].host == "emu0"                        # the topology's own pin wins
    assert embed(exp, cluster, placed={"a": "emu2"}).placement["a"].host == "emu0"


def test_vhost_pins_name_their_host():
    assert relocate.pinned_host("vh-emu1-0") == "emu1"
    assert relocate.pinned_host("emu1") == "emu1"
    assert relocate.pinned_host(None) is None
