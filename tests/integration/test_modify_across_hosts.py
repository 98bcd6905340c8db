"""A running experiment on 3 emulated hosts (real sshd each) changed in place by `nestbed up` of the edited file:
a node added on emu2 with a new cross-host link to a node on emu1, a member on emu1 removed from a LAN spanning all
three hosts, a cross-host link's bandwidth changed. Nodes that ran stay on their hosts (the edited file no longer
pins them), the new node pings across, the removed member cannot reach the LAN, tc shows the new rate, a program in
an untouched node on emu0 keeps its pid; a change that leaves a host's plan alone never asks that host (its journal
and plan file untouched); the same file again changes nothing; down leaves nothing."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_etcd_engine import etcd_keys
from test_multihost import flat, namespaces_of, processes_of

from conftest import exec_in, nestbed, state_dir
from etcd_server import EtcdServer

pytestmark = pytest.mark.needs("root", "sshd")

NAME = "mod3"
BEFORE = """\
name: mod3
nodes:
  a0: {host: emu0, commands: ["sleep 3600"]}
  a1: {host: emu0}
  b0: {host: emu1}
  b1: {host: emu1}
  c0: {host: emu2}
lans:
  lan0: {members: [a0, b0, b1, c0]}
links:
  - {name: l1, ends: [a1, b1], bandwidth: 10Mbit}
"""
# the running nodes without their host pins (the controller keeps them where they run); c1 new, on emu2
AFTER = """\
name: mod3
nodes:
  a0: {commands: ["sleep 3600"]}
  a1: {}
  b0: {}
  b1: {}
  c0: {}
  c1: {host: emu2}
lans:
  lan0: {members: [a0, b0, c0]}
links:
  - {name: l1, ends: [a1, b1], bandwidth: 20Mbit}
  - {name: l2, ends: [c1, b0]}
"""
CLUSTER = "emulate: 3\nunderlay_mtu: 1500\n"


def whole_plan() -> dict:
    return json.loads((state_dir(NAME) / "plan.json").read_text())


def node_of(node: str) -> dict:
    return next(n for n in whole_plan()["nodes"] if n["name"] == node)


def dev_on(node: str, segment: str) -> str:
    return next(i["name"] for i in node_of(node)["interfaces"] if i["segment"] == segment)


def address_on(node: str, segment: str) -> str:
    return next(i["address"] for i in node_of(node)["interfaces"] if i["segment"] == segment).split("/")[0]


def sleep_pid(netns: str) -> int:
    inode = os.stat(f"/run/netns/{netns}").st_ino
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode and Path(f"/proc/{pid}/comm").read_text().strip() \
                    == "sleep":
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no sleep in {netns}")


def host_files(host: str) -> tuple[str, float]:
    """The host's journal of the experiment and its plan file's mtime (an apply there would change either)."""
    from nestbed.cluster import emulated
    hosts = emulated.load(NAME)
    assert hosts is not None
    directory = Path(next(h.state_dir for h in hosts.hosts if h.name == host)) / NAME
    return (directory / "journal.jsonl").read_text(), (directory / "plan.json").stat().st_mtime


def kinds_added(before: str, after: str) -> set[str]:
    assert after.startswith(before)
    return {json.loads(line)["t"] for line in after[len(before):].splitlines()}


def rate(node: str, dev: str) -> str:
    return exec_in(NAME, node, "tc", "class", "show", "dev", dev).stdout.split(" rate ")[1].split()[0]


def test_a_modify_across_hosts_changes_only_the_difference_where_it_is(tmp_path: Path) -> None:
    modify_across_hosts(tmp_path, CLUSTER)


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server
    assert not server.running(), "etcd left running"


@pytest.mark.needs("etcd")
def test_the_same_modify_through_etcd(tmp_path: Path, etcd: EtcdServer) -> None:
    """The agents reconcile (lifecycle.reconcile) what the controller publishes: the same in place, no down."""
    modify_across_hosts(tmp_path, CLUSTER + f"engine: {{etcd: ['{etcd.unix_url}']}}\n")
    assert etcd_keys(etcd, NAME) == [], "keys left in etcd"


def modify_across_hosts(tmp_path: Path, cluster_text: str) -> None:
    topology, cluster = tmp_path / "mod3.yaml", tmp_path / "lab.yaml"
    topology.write_text(BEFORE)
    cluster.write_text(cluster_text)
    try:
        nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
        a0_netns = node_of("a0")["netns"]
        pid = sleep_pid(a0_netns)
        assert exec_in(NAME, "b1", "ping", "-c1", "-W2", address_on("a0", "lan0"), check=False).returncode == 0
        assert rate("a1", dev_on("a1", "l1")) == "10Mbit"

        topology.write_text(AFTER)
        dry = flat(nestbed("up", str(topology), "--cluster", str(cluster), "--dry-run").stdout)
        assert "--dry-run, nothing changed" in dry and "c1" not in whole_plan()["node_order"]
        shown = flat(nestbed("up", str(topology), "--cluster", str(cluster), timeout=180).stdout)
        for line in ("emu2: node c1 added", "emu1: lan0: member b1 removed", "emu0: l1: bandwidth 10Mbit → 20Mbit",
                     "emu0: node c1 added on emu2", "changed in place"):
            assert line in shown, shown
        hosts = {n["name"]: n["host"] for n in whole_plan()["nodes"]}
        assert hosts == {"a0": "emu0", "a1": "emu0", "b0": "emu1", "b1": "emu1", "c0": "emu2", "c1": "emu2"}
        result = exec_in(NAME, "c1", "ping", "-c1", "-W2", "b0", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert exec_in(NAME, "b0", "ping", "-c1", "-W2", address_on("c0", "lan0"), check=False).returncode == 0
        assert exec_in(NAME, "b1", "ping", "-c1", "-W1", address_on("a0", "lan0"), check=False).returncode != 0
        assert rate("a1", dev_on("a1", "l1")) == "20Mbit" and rate("b1", dev_on("b1", "l1")) == "20Mbit"
        assert sleep_pid(a0_netns) == pid

        # l1 joins emu0 and emu1: emu2's kernel is not touched (only every node's ltmap there says 30Mbit)
        emu2 = host_files("emu2")
        topology.write_text(AFTER.replace("20Mbit", "30Mbit"))
        shown = flat(nestbed("up", str(topology), "--cluster", str(cluster), timeout=180).stdout)
        assert "emu0: l1: bandwidth 20Mbit → 30Mbit" in shown and "emu2: hosts and identity files changed" in shown
        assert kinds_added(emu2[0], host_files("emu2")[0]) <= {"file", "identity"}, shown
        assert rate("b1", dev_on("b1", "l1")) == "30Mbit"
        # a0's commands are emu0's business only (other hosts' plans list no commands): emu1, emu2 not asked
        before = {h: host_files(h) for h in ("emu1", "emu2")}
        topology.write_text(AFTER.replace("20Mbit", "30Mbit").replace("  a1: {}", "  a1: {commands: [\"true\"]}"))
        shown = flat(nestbed("up", str(topology), "--cluster", str(cluster), timeout=180).stdout)
        assert "emu0: node a1: commands changed" in shown and "(emu1, emu2: no change)" in shown, shown
        assert {h: host_files(h) for h in before} == before
        journals = {h: host_files(h) for h in ("emu0", "emu1", "emu2")}
        again = flat(nestbed("up", str(topology), "--cluster", str(cluster), timeout=180).stdout)
        assert "mod3: nothing to change" in again
        assert {h: host_files(h) for h in journals} == journals
        assert sleep_pid(a0_netns) == pid
    finally:
        nestbed("down", NAME, check=False, timeout=180)
    assert namespaces_of(NAME) == [], "namespaces left"
    assert not state_dir(NAME).exists(), f"left {state_dir(NAME)}"
    assert processes_of(state_dir(NAME)) == [], "processes left"
