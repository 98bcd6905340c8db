"""The controller's side of a modify across hosts (cluster/modify.py through deploy.up), its hosts faked: only the
hosts whose plan changed are asked, and a host that fails is one line naming each host's state, with nothing torn
down and the others' new plans kept."""
from __future__ import annotations

import json

import pytest
from test_modify_multihost import BASE

from nestbed.cluster import deploy, emulated, hostcopies, ssh
from nestbed.errors import ExperimentError
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
from nestbed.realize.state import experiment


class FakeHost:
    def __init__(self, name: str, asked: list[str], failing: set[str]) -> None:
        self.name, self.asked, self.failing = name, asked, failing

    def apply(self, plan, progress=None) -> float:
        self.asked.append(f"up {self.name}")
        return 0.1

    def reconcile(self, plan, progress=None) -> dict:
        self.asked.append(f"apply {self.name}")
        if self.name in self.failing:
            raise ExperimentError("fake failure\nsecond line")
        return {"seconds": 0.1, "action": "changed", "summary": []}

    def remove(self, name: str) -> None:
        self.asked.append(f"remove {self.name}")

    def close(self) -> None:
        pass


class FakeCluster:
    def __init__(self, asked: list[str], failing: set[str]) -> None:
        self.hosts = [FakeHost(h, asked, failing) for h in ("emu0", "emu1", "emu2")]

    def transports(self) -> list[FakeHost]:
        return self.hosts


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    asked: list[str] = []
    failing: set[str] = set()
    fake = FakeCluster(asked, failing)
    monkeypatch.setattr(deploy, "_emulated_hosts", lambda name, cluster, resuming: fake)
    monkeypatch.setattr(emulated, "load", lambda name: fake)
    monkeypatch.setattr(emulated, "down", lambda name: None)
    monkeypatch.setattr(deploy, "connect_all", lambda hosts: None)
    monkeypatch.setattr(ssh, "connect_all", lambda hosts: None)
    return asked, failing


def up(text: str):
    return deploy.up(load_topology_text(text, "mh.yaml"), load_cluster_text("emulate: 3\n", "lab.yaml"))


def test_only_changed_hosts_are_asked_and_a_failing_host_is_one_line_with_nothing_torn_down(lab) -> None:
    asked, failing = lab
    up(BASE)
    assert sorted(asked) == ["up emu0", "up emu1", "up emu2"]
    state = experiment("mh")
    held = {h: hostcopies.held(state, h) for h in ("emu0", "emu1", "emu2")}
    assert all(held.values())

    asked.clear()
    up(BASE)                                         # the same file: nobody asked
    assert asked == []
    up(BASE.replace("  a1: {host: emu0}", "  a1: {host: emu0, commands: [\"true\"]}"))
    assert asked == ["apply emu0"]                   # commands are emu0's only (others list none)

    asked.clear()
    failing.add("emu1")
    edited = BASE.replace("10Mbit", "20Mbit").replace("  a1: {host: emu0}", "  a1: {host: emu0, commands: [\"true\"]}")
    with pytest.raises(ExperimentError) as error:
        up(edited)
    line = str(error.value)
    assert "\n" not in line and "host emu1: fake failure" in line and "emu1 kept the running plan" in line
    assert "emu0" in line and "still up" in line
    assert sorted(asked) == ["apply emu0", "apply emu1", "apply emu2"]     # l1's hosts; emu2: its nodes' ltmap
    assert not any(a.startswith("remove") for a in asked)
    assert state.status()["state"] == "up"
    assert hostcopies.held(state, "emu1").to_json() == held["emu1"].to_json()    # what emu1 still holds
    assert '"bandwidth": 20000000' in json.dumps(json.loads(hostcopies.held(state, "emu0").to_json()))
    asked.clear()
    failing.clear()
    up(edited)                                       # again: only the host that failed
    assert asked == ["apply emu1"]
    deploy.down("mh")
    assert not state.directory.exists()
