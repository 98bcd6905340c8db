"""The object prefix (paths.object_prefix, $NESTBED_PREFIX): the names nestbed gives in the host's shared kernel
and on shared directories begin with it, so a test suite's experiments and a machine's own are told apart."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nestbed.errors import PreflightError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize import control
from nestbed.realize import identity as rid
from nestbed.realize.journal import Journal

LAB = "name: lab\nnodes: {a: {}, b: {}, c: {}}\nlans: {lan0: {members: [a, b]}}\nlinks: [{ends: [b, c]}]\n"


def test_the_default_prefix_is_nb_and_control0_is_taken_first(monkeypatch):
    monkeypatch.delenv("NESTBED_PREFIX", raising=False)
    plan = compile_plan(load_topology_text(LAB))
    assert sorted(plan.netns_names) == ["nb-lab.a", "nb-lab.b", "nb-lab.c", "nb-lab.lan0.sw"]
    assert control.bridge_name("lab", lambda name: False) == "control0"
    assert control.bridge_name("lab", lambda name: name == "control0") == f"nbctl-{control.tag('lab')}"
    assert control.host_end_name("lab", 7) == f"nbk{control.tag('lab')}.7"
    assert control.vm_tap_name("lab", 2) == f"nbc{control.tag('lab')}.2"
    assert rid.claim_path(Path("/var/emulab"), "lab") == Path("/var/emulab/.nestbed-nb-lab")


def test_another_prefix_names_every_namespace_link_and_claim(monkeypatch):
    monkeypatch.setenv("NESTBED_PREFIX", "nt")
    plan = compile_plan(load_topology_text(LAB))
    assert sorted(plan.netns_names) == ["nt-lab.a", "nt-lab.b", "nt-lab.c", "nt-lab.lan0.sw"]
    assert {v.a.netns for v in plan.veths} | {v.b.netns for v in plan.veths} <= set(plan.netns_names)
    assert control.bridge_name("lab", lambda name: False) == "ntcontrol0"       # never the machine's control0
    assert control.bridge_name("lab", lambda name: True) == f"ntctl-{control.tag('lab')}"
    assert control.host_end_name("lab", 7) == f"ntk{control.tag('lab')}.7"
    assert control.vm_tap_name("lab", 2) == f"ntc{control.tag('lab')}.2"
    assert rid.claim_path(Path("/var/emulab"), "lab") == Path("/var/emulab/.nestbed-nt-lab")


def test_the_longest_prefix_keeps_link_names_within_15_characters(monkeypatch):
    monkeypatch.setenv("NESTBED_PREFIX", "abc")
    names = [control.bridge_name("lab", lambda name: True), control.bridge_name("lab", lambda name: False),
             control.host_end_name("lab", 249), control.vm_tap_name("lab", 249)]
    assert max(len(name) for name in names) <= 15, names


@pytest.mark.parametrize("bad", ["NB", "abcd", "1a", "n-", "a\n", "n b"])
def test_a_bad_prefix_is_refused_in_one_line(monkeypatch, bad):
    monkeypatch.setenv("NESTBED_PREFIX", bad)
    with pytest.raises(PreflightError) as refused:
        compile_plan(load_topology_text(LAB))
    assert str(refused.value).startswith(f"NESTBED_PREFIX={bad!r}: want 1 to 3 lowercase letters or digits")
    assert "\n" not in str(refused.value)


def test_equal_names_under_two_prefixes_hold_claims_of_their_own(monkeypatch, tmp_path):
    """A test suite's `lab` going down never takes the claim of the machine's own `lab` on /var/emulab."""
    emulab = tmp_path / "var-emulab"
    journals = {}
    for prefix in ("nb", "nt"):
        monkeypatch.setenv("NESTBED_PREFIX", prefix)
        state = tmp_path / prefix / "lab"
        state.mkdir(parents=True)
        rid.write_identity(state, compile_plan(load_topology_text(LAB)), emulab=emulab)
        journals[prefix] = Journal(state / "journal.jsonl").entries()
    assert sorted(os.listdir(emulab)) == [".nestbed-nb-lab", ".nestbed-nt-lab"]
    rid.remove_identity(journals["nt"])
    assert os.listdir(emulab) == [".nestbed-nb-lab"]                 # the machine's lab still holds it
    rid.remove_identity(journals["nb"])
    assert not emulab.exists()
