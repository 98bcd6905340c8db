"""A running experiment across hosts modified in place, each host on its own fake kernel (no root): compiled with
the running plan's pins and its nodes pinned to their hosts, an unchanged host plan makes no kernel call at all, a
member added on one host adds on the others only the FDB entry of its MAC, a member removed deletes only that
entry, a bandwidth changed on a cross-host link rebuilds only that qdisc, and a new cross-host link makes its
bridge and VXLAN only on the two hosts it joins."""
from __future__ import annotations

import json
import textwrap

import pytest
from fake_kernel import HOST, FakeKernel, Link
from test_reconcile import FakeAgent, Recording

from nestbed.agent import lifecycle, supervision
from nestbed.embed import embed
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
from nestbed.plan.diff import diff
from nestbed.plan.hostplan import HostPlan
from nestbed.plan.multihost import ClusterPlan, HostSite, compile_plans
from nestbed.plan.pins import pins_of
from nestbed.realize.state import experiment

UNDERLAY_INDEX = 7
HOSTS = ["emu0", "emu1", "emu2"]
BASE = """\
name: mh
nodes:
  a0: {host: emu0}
  a1: {host: emu0}
  b0: {host: emu1}
  b1: {host: emu1}
  c0: {host: emu2}
lans:
  lan0: {members: [a0, b0, c0]}
links:
  - {name: l1, ends: [a1, b1], bandwidth: 10Mbit}
"""


def sites() -> dict[str, HostSite]:
    return {h: HostSite(prefix=f"nb{i}", address=f"10.250.0.{i + 1}", underlay="ul0") for i, h in enumerate(HOSTS)}


def compiled(text: str, running: HostPlan | None = None, host_of: dict[str, str] | None = None) -> ClusterPlan:
    """As the controller does: nodes that run stay on their hosts, numbering from the running whole plan."""
    exp = load_topology_text(textwrap.dedent(text).replace("{host: emu0}", "{}") if host_of else text, "mh.yaml")
    return compile_plans(exp, embed(exp, load_cluster_text("emulate: 3\n", "lab.yaml"), placed=host_of),
                         sites(), pins_of(running))


class Cluster:
    """Three hosts, each a fake kernel with its own state directory."""

    def __init__(self, root, monkeypatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self.kernels = {}
        for host in HOSTS:
            kernel = FakeKernel()
            kernel.namespaces[HOST].links[UNDERLAY_INDEX] = Link("ul0", "veth")
            self.kernels[host] = kernel

    def on(self, host: str) -> FakeKernel:
        self.monkeypatch.setenv("NESTBED_STATE_DIR", str(self.root / host))
        kernel = self.kernels[host]
        kernel.journal = experiment("mh").journal
        return kernel

    def reconcile(self, planned: ClusterPlan) -> dict[str, Recording]:
        recordings = {}
        for host, plan in planned.plans.items():
            recordings[host] = Recording(self.on(host))
            lifecycle.reconcile(plan, kernel=recordings[host])     # type: ignore[arg-type]
        return recordings

    def journal(self, host: str) -> str:
        self.on(host)
        path = experiment("mh").journal.path
        return path.read_text() if path.exists() else ""


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> Cluster:
    monkeypatch.setattr(supervision, "spawn_agent", lambda state: FakeAgent(lambda: None))
    monkeypatch.setattr(supervision, "stop_agent", lambda entries: 0)
    return Cluster(tmp_path, monkeypatch)


def placed(planned: ClusterPlan) -> dict[str, str]:
    return {n.name: h for h, plan in planned.plans.items() for n in plan.nodes}


def test_recompiled_with_pins_every_host_plan_is_the_same_and_reconciles_without_a_kernel_call(cluster) -> None:
    first = compiled(BASE)
    cluster.reconcile(first)
    again = compiled(BASE, first.whole, placed(first))
    for host in HOSTS:
        assert again.plans[host].to_json() == first.plans[host].to_json()
        assert diff(first.plans[host], again.plans[host]).empty
    recordings = cluster.reconcile(again)
    assert all(r.calls == [] for r in recordings.values())


def test_a_member_added_on_one_host_adds_on_the_others_only_its_fdb_entry(cluster) -> None:
    first = compiled(BASE)
    cluster.reconcile(first)
    before = {h: set(k.objects()) for h, k in cluster.kernels.items()}
    fdb_before = {h: {(n, e) for n, ns in k.namespaces.items() for e in ns.fdb} for h, k in cluster.kernels.items()}
    journals = {h: cluster.journal(h) for h in HOSTS}
    edited = compiled(BASE.replace("[a0, b0, c0]", "[a0, b0, b1, c0]"), first.whole, placed(first))
    changes = diff(first.plans["emu0"], edited.plans["emu0"])
    assert [(v.name, mac) for v, mac, _ in changes.fdb_added] == [("vx0", _mac_of(edited, "b1", "lan0"))]
    assert not (changes.added_vxlans or changes.removed_vxlans or changes.added_veths or changes.removed_veths
                or changes.added_bridges or changes.fdb_removed)
    assert changes.summary()[0] == "lan0: member b1 added"
    cluster.reconcile(edited)
    for host in ("emu0", "emu2"):          # the LAN's other hosts: one FDB entry more, nothing else, no journal
        kernel = cluster.kernels[host]
        assert kernel.objects() == before[host]
        fdb = {(n, e) for n, ns in kernel.namespaces.items() for e in ns.fdb}
        assert [e[1][1:] for e in fdb - fdb_before[host]] == [(_mac_of(edited, "b1", "lan0"), "10.250.0.2")]
        assert fdb_before[host] <= fdb
        assert new_kinds(journals[host], cluster.journal(host)) <= {"file", "identity"}    # rewritten files only
    assert "veth" in new_kinds(journals["emu1"], cluster.journal("emu1"))    # b1's interface and bridge port


def test_a_member_removed_deletes_its_fdb_entry_elsewhere_and_a_reshaped_link_only_its_qdisc(cluster) -> None:
    first = compiled(BASE)
    cluster.reconcile(first)
    fdb_before = {h: {e for ns in k.namespaces.values() for e in ns.fdb} for h, k in cluster.kernels.items()}
    edited = compiled(BASE.replace("[a0, b0, c0]", "[a0, c0]").replace("10Mbit", "20Mbit"), first.whole,
                      placed(first))
    lines = diff(first.plans["emu0"], edited.plans["emu0"]).summary()
    assert "lan0: member b0 removed" in lines and "l1: bandwidth 10Mbit → 20Mbit" in lines
    assert diff(first.plans["emu2"], edited.plans["emu2"]).fdb_removed     # b0's MAC there, the flood to emu1
    recordings = cluster.reconcile(edited)
    mac = _mac_of(first, "b0", "lan0")
    for host in ("emu0", "emu2"):
        fdb = {e for ns in cluster.kernels[host].namespaces.values() for e in ns.fdb}
        assert {(m, d) for _, m, d in fdb_before[host] - fdb} == {(mac, "10.250.0.2"),
                                                                  ("00:00:00:00:00:00", "10.250.0.2")}
        assert not fdb - fdb_before[host]
    assert "remove_namespace" in recordings["emu1"].calls       # emu1 holds no member of lan0 any more
    assert not any(ns.endswith(".lan0.sw") for ns in cluster.kernels["emu1"].namespaces)


def test_a_new_cross_host_link_is_made_only_on_its_two_hosts(cluster) -> None:
    first = compiled(BASE)
    cluster.reconcile(first)
    text = BASE.replace("  c0: {host: emu2}\n", "  c0: {host: emu2}\n  c1: {host: emu2}\n") \
        + "  - {name: l2, ends: [c1, b0]}\n"
    edited = compiled(text, first.whole, placed(first))
    assert placed(edited)["c1"] == "emu2"
    d0 = diff(first.plans["emu0"], edited.plans["emu0"])
    assert d0.others_added and not (d0.added_vxlans or d0.fdb_added or d0.added_namespaces)
    assert d0.summary()[0] == "node c1 added on emu2"      # and routes to l2's subnet, where routing gives some
    before = set(cluster.kernels["emu0"].objects())
    cluster.reconcile(edited)
    assert cluster.kernels["emu0"].objects() == before
    for host in ("emu1", "emu2"):
        assert any(ns.endswith(".l2.sw") and any(link.name.startswith("vx") for link in k.links.values())
                   for ns, k in cluster.kernels[host].namespaces.items())


def new_kinds(before: str, after: str) -> set[str]:
    assert after.startswith(before)
    return {json.loads(line)["t"] for line in after[len(before):].splitlines()}


def _mac_of(planned: ClusterPlan, node: str, segment: str) -> str:
    found = next(n for n in planned.whole.nodes if n.name == node)
    return next(i.mac for i in found.interfaces if i.segment == segment)
