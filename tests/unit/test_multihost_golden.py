"""compile_plans made near-linear (issue 14) gives every host plan exactly as main's did: the JSON of every host's
plan and of the whole plan, for each case of multihost_cases.py, equals the golden main produced (only the VNIs of
segments and their pins are left out: cross-host segments alone are numbered now, test_vni.py)."""
from __future__ import annotations

import json
from dataclasses import replace

import multihost_cases
import pytest


@pytest.fixture(autouse=True)
def _prefix(monkeypatch) -> None:
    monkeypatch.setenv("NESTBED_PREFIX", multihost_cases.PREFIX)


GOLDEN = multihost_cases.load()


def test_the_goldens_cover_every_case():
    assert sorted(GOLDEN) == sorted(multihost_cases.CASES)


@pytest.mark.parametrize("name", sorted(multihost_cases.CASES))
def test_every_host_plan_is_the_one_main_compiled(name: str) -> None:
    run, whole = multihost_cases.CASES[name]
    got = multihost_cases.normalized(run())
    golden = GOLDEN[name]
    if not whole:
        assert multihost_cases.digest(got) == golden
        return
    assert sorted(got) == sorted(golden)
    for host in golden:                 # one host at a time: a failure names the host and the first key differing
        for key in golden[host] if isinstance(golden[host], dict) else ():
            assert json.dumps(got[host][key], sort_keys=True) == json.dumps(golden[host][key], sort_keys=True), \
                f"{name}: {host}: {key}"
        assert got[host] == golden[host]


def test_the_comparison_sees_a_change_of_content_but_not_of_a_vni() -> None:
    """The normalization leaves out the segments' VNIs, nothing else: a route less or another MTU is a difference."""
    run, _ = multihost_cases.CASES["ring"]
    planned = run()
    before = multihost_cases.digest(multihost_cases.normalized(planned))
    emu1, emu2 = planned.plans["emu1"], planned.plans["emu2"]
    emu1.vxlans[0] = replace(emu1.vxlans[0], vni=1)
    assert multihost_cases.digest(multihost_cases.normalized(planned)) == before
    emu2.others[0] = replace(emu2.others[0], interfaces=[replace(emu2.others[0].interfaces[0], mtu=1400)])
    changed_mtu = multihost_cases.digest(multihost_cases.normalized(planned))
    assert changed_mtu != before
    emu1.nodes[0].routes = emu1.nodes[0].routes[1:]
    assert multihost_cases.digest(multihost_cases.normalized(planned)) != changed_mtu
