"""lifecycle.reconcile on the fake kernel: absent → up, the same plan → not one kernel call, an edit → only its
calls (journal first, tombstones for what went), the empty plan → down (no root; the host agent is faked)."""
from __future__ import annotations

import textwrap

import pytest
from fake_kernel import FakeKernel

from nestbed.agent import lifecycle, supervision
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan
from nestbed.plan.pins import pins_of
from nestbed.realize.state import experiment

BASE = """\
name: rc
nodes: {a: {}, b: {}, c: {}, r: {router: true}}
links:
  - {name: l1, ends: [r, a], bandwidth: 10Mbit}
lans:
  lan0: {members: [a, b, c]}
"""
EDITED = BASE.replace("bandwidth: 10Mbit", "bandwidth: 20Mbit").replace("[a, b, c]", "[a, b]") \
    .replace("r: {router: true}}", "r: {router: true}, x: {}}") + "  lan1: {members: [x, b]}\n"


class Recording:
    """The fake kernel, every call counted by method name."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel, self.calls = kernel, []

    def __getattr__(self, name):
        target = getattr(self.kernel, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            self.calls.append(name)
            return target(*args, **kwargs)
        return call


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> FakeKernel:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    spawned: list[str] = []
    monkeypatch.setattr(supervision, "spawn_agent", lambda state: FakeAgent(lambda: spawned.append(state.name)))
    monkeypatch.setattr(supervision, "stop_agent", lambda entries: 0)
    reloaded: list[str] = []
    monkeypatch.setattr(lifecycle, "reload_agent", lambda state: reloaded.append(state.name) or {"ok": True})
    fake = FakeKernel()
    fake.spawned = spawned              # type: ignore[attr-defined]
    fake.reloaded = reloaded            # type: ignore[attr-defined]
    return fake


class FakeAgent:
    def __init__(self, on_start) -> None:
        self.on_start = on_start

    def start(self) -> int:
        self.on_start()
        return 4242


def plan_of(text: str, previous: HostPlan | None = None) -> HostPlan:
    return compile_plan(load_topology_text(textwrap.dedent(text), "t.yaml"), pins=pins_of(previous))


def up(kernel: FakeKernel, text: str = BASE) -> HostPlan:
    plan = plan_of(text)
    kernel.journal = experiment(plan.experiment).journal
    assert lifecycle.reconcile(plan, kernel=kernel).action == "up"
    return plan


def test_absent_is_up_and_the_same_plan_is_no_kernel_call(kernel: FakeKernel) -> None:
    plan = up(kernel)
    journal = experiment("rc").journal.path.read_text()
    recording = Recording(kernel)
    done = lifecycle.reconcile(plan_of(BASE, plan), kernel=recording)       # type: ignore[arg-type]
    assert done.action == "unchanged" and recording.calls == []
    assert experiment("rc").journal.path.read_text() == journal


def test_an_edit_makes_only_its_difference(kernel: FakeKernel) -> None:
    old = up(kernel)
    a_eth, c_ns = "eth0", "nb-rc.c"
    a_links_before = dict(kernel.namespaces["nb-rc.a"].links)
    creations = len(kernel.log)
    recording = Recording(kernel)
    new = plan_of(EDITED, old)
    done = lifecycle.reconcile(new, kernel=recording)                       # type: ignore[arg-type]
    assert done.action == "changed" and done.agent_reloaded and not done.agent_restarted
    assert kernel.reloaded == ["rc"] and kernel.spawned == ["rc"]       # reloaded in place: no agent spawned anew
    made = [key for key, _ in kernel.log[creations:]]
    assert ("netns", "nb-rc.x") in made and ("netns", "nb-rc.lan1.sw") in made
    assert not any(key[0] == "netns" and key[1] not in ("nb-rc.x", "nb-rc.lan1.sw") for key in made)
    # untouched node a: the same links (eth0 on lan0, eth1 on l1) with the same ifindexes
    assert {i: link.name for i, link in kernel.namespaces["nb-rc.a"].links.items()} == \
        {i: link.name for i, link in a_links_before.items()}
    assert a_eth in {link.name for link in kernel.namespaces["nb-rc.a"].links.values()}
    # c left lan0: its interface is gone (and the bridge's port with it), its namespace stays
    assert c_ns in kernel.namespaces
    assert {link.name for link in kernel.namespaces[c_ns].links.values()} == {"lo"}
    lan0 = kernel.namespaces["nb-rc.lan0.sw"]
    assert len([link for link in lan0.links.values() if link.kind == "veth"]) == 2
    # no namespace was recreated: none was removed
    assert "remove_namespace" not in recording.calls
    # the journal names exactly what exists now: c's veth is folded away by its tombstone
    entries = experiment("rc").journal.entries()
    veths = {(e["netns"], e["name"]) for e in entries if e["t"] == "veth"}
    assert (c_ns, "eth0") not in veths and ("nb-rc.x", "eth0") in veths
    assert any(e["t"] == "gone" for e in experiment("rc").journal.raw_entries())
    assert experiment("rc").load_plan().to_json() == new.to_json()          # type: ignore[union-attr]
    # applied twice: nothing
    recording.calls.clear()
    assert lifecycle.reconcile(plan_of(EDITED, new), kernel=recording).action == "unchanged"   # type: ignore[arg-type]
    assert recording.calls == []


def test_a_bandwidth_change_is_one_batch_per_member(kernel: FakeKernel) -> None:
    old = up(kernel)
    recording = Recording(kernel)
    new = plan_of(BASE.replace("10Mbit", "20Mbit"), old)
    done = lifecycle.reconcile(new, kernel=recording)                       # type: ignore[arg-type]
    assert done.action == "changed" and not done.agent_restarted and not done.agent_reloaded
    assert done.diff.summary() == ["l1: bandwidth 10Mbit → 20Mbit"]
    assert sorted(c for c in recording.calls if c != "features") == ["send"] * 4     # quiet + strict, r and a


def test_removing_a_node_removes_its_namespace_and_processes(kernel: FakeKernel) -> None:
    old = up(kernel)
    pid = kernel.spawn("nb-rc.c")
    kept = kernel.spawn("nb-rc.a")
    text = BASE.replace("c: {}, ", "").replace("[a, b, c]", "[a, b]")
    lifecycle.reconcile(plan_of(text, old), kernel=kernel)
    assert "nb-rc.c" not in kernel.namespaces and pid not in kernel.processes and kept in kernel.processes
    assert not any(e["t"] == "netns" and e["name"] == "nb-rc.c" for e in experiment("rc").journal.entries())


def test_the_empty_plan_is_down(kernel: FakeKernel) -> None:
    up(kernel)
    empty = HostPlan(experiment="rc", host="local")
    assert lifecycle.reconcile(empty, kernel=kernel).action == "down"
    assert set(kernel.namespaces) == {""} and not experiment("rc").directory.exists()


def test_a_journal_of_mostly_tombstones_is_compacted(tmp_path) -> None:
    from nestbed.realize.journal import Journal
    journal = Journal(tmp_path / "journal.jsonl")
    entries = [{"t": "netns", "name": f"n{i}"} for i in range(4)]
    journal.record(entries)
    journal.bury(entries[:3])
    assert journal.entries() == entries[3:]
    assert journal.compact() and journal.raw_entries() == entries[3:]
    journal.record([entries[0]])
    assert journal.entries() == [entries[3], entries[0]]


def test_a_failed_modify_undoes_its_additions_and_can_be_applied_again(kernel: FakeKernel, tmp_path,
                                                                       monkeypatch) -> None:
    old = up(kernel)
    new = plan_of(EDITED, old)
    clean = FakeKernel()                       # the same edit, without a failure, in a second state root
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "clean"))
    clean_old = plan_of(BASE)
    clean.journal = experiment("rc").journal
    lifecycle.reconcile(clean_old, kernel=clean)
    lifecycle.reconcile(plan_of(EDITED, clean_old), kernel=clean)
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    kernel.journal = experiment("rc").journal
    for step in (3, 8, 14):                    # a namespace, a link, a node's batch
        kernel.fail_at = kernel.operations + step
        with pytest.raises(OSError):
            lifecycle.reconcile(new, kernel=kernel)
        assert "nb-rc.x" not in kernel.namespaces and "nb-rc.lan1.sw" not in kernel.namespaces
        assert experiment("rc").load_plan().to_json() == old.to_json()          # type: ignore[union-attr]
    kernel.fail_at = None
    assert lifecycle.reconcile(new, kernel=kernel).action == "changed"
    assert {k: sorted(link.name for link in ns.links.values()) for k, ns in kernel.namespaces.items()} == \
        {k: sorted(link.name for link in ns.links.values()) for k, ns in clean.namespaces.items()}
    netns = {e["name"] for e in experiment("rc").journal.entries() if e["t"] == "netns"}
    assert netns == set(new.netns_names)


def test_an_agent_that_cannot_be_asked_to_reload_is_restarted(kernel: FakeKernel, monkeypatch) -> None:
    from nestbed.errors import ExperimentError

    def refuse(state):
        raise ExperimentError("unknown request 'reload'")        # an agent of an older nestbed
    old = up(kernel)
    monkeypatch.setattr(lifecycle, "reload_agent", refuse)
    done = lifecycle.reconcile(plan_of(EDITED, old), kernel=kernel)
    assert done.agent_restarted and not done.agent_reloaded and kernel.spawned == ["rc", "rc"]
