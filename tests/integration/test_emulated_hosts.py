"""Emulated hosts with real sshd (cluster/emulated.py), the SSH transport (cluster/ssh.py) and the remote agent
(agent/remote.py): 3 hosts answer hello and status over SSH; a plan of two process nodes on a link is applied on
emu1 through SSH and pinged across; one SSH connection and one session channel per host; a wrong pinned key and
an absent host are one line; teardown (also after a "crash" that left an experiment on a host) leaves no
namespace, process or file."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import our_namespaces
from nestbed import __version__
from nestbed.cluster import emulated, underlay
from nestbed.cluster.ssh import SshHost, connect_all
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize import namespaces
from nestbed.realize.journal import Journal

pytestmark = pytest.mark.needs("root", "sshd")


def _pair_plan(experiment: str, host: str):
    """Two process nodes on a link, compiled by nestbed itself, for `host`."""
    exp = load_topology_text(f"name: {experiment}\nnodes:\n  a: {{}}\n  b: {{}}\nlinks:\n  - {{ends: [a, b]}}\n")
    return dataclasses.replace(compile_plan(exp), host=host)


def _processes_in(netns: str) -> list[tuple[int, str]]:
    nsid = namespaces.namespace_id(netns)
    assert nsid is not None
    found = []
    for pid in namespaces.processes_in({nsid}):
        try:
            found.append((pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            pass
    return found


def _established_ssh(netns: str) -> list[str]:
    out = subprocess.run(["nsenter", f"--net={namespaces.netns_path(netns)}", "ss", "-Htn", "state", "established",
                          "( sport = :22 )"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def _journaled(name: str) -> list[dict]:
    return Journal(emulated.cluster_dir(name) / emulated.JOURNAL).entries()


def _assert_nothing_left(entries: list[dict]) -> None:
    for entry in entries:
        if entry["t"] == "netns":
            assert not os.path.exists(namespaces.netns_path(entry["name"])), entry
        elif entry["t"] in ("file", "dir"):
            assert not os.path.exists(entry["path"]), entry
        elif entry["t"] == "pid":
            assert not os.path.exists(f"/proc/{entry['pid']}") or \
                Path(f"/proc/{entry['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", entry
        elif entry["t"] == "hoststate":
            assert not os.path.exists(entry["dir"]), entry


@pytest.fixture(scope="module")
def three():
    name = f"eh{uuid.uuid4().hex[:6]}"
    cluster = emulated.up(name, 3, underlay_mtu=9000)
    hosts = cluster.transports()
    try:
        yield name, cluster, hosts
    finally:
        for host in hosts:
            host.close()
        emulated.down(name)


def test_three_hosts_answer_hello_and_status_over_ssh_with_one_connection_and_channel_each(three):
    name, cluster, hosts = three
    assert [h.address for h in cluster.hosts] == ["10.250.0.1", "10.250.0.2", "10.250.0.3"]
    assert [h.prefix for h in cluster.hosts] == ["nt0", "nt1", "nt2"]
    connect_all(hosts)
    for host, emu in zip(hosts, cluster.hosts):
        assert host.hello is not None and host.hello["version"] == __version__
        assert host.status("nosuchexperiment") == {"state": "absent", "agent": None}
        assert host.sessions() == 1
        assert len(_established_ssh(emu.netns)) == 1
        agents = [cmd for _, cmd in _processes_in(emu.netns) if "nestbed.agent.remote" in cmd]
        assert len(agents) == 1, agents
    # the underlay: ul0 at the cluster's MTU in each host, nothing in this machine's namespace
    def ip(netns: str, *args: str) -> str:
        return subprocess.run(["nsenter", f"--net={namespaces.netns_path(netns)}", "ip", "-o", *args],
                              capture_output=True, text=True, check=True).stdout
    for emu in cluster.hosts:
        assert f"inet {emu.address}/16" in ip(emu.netns, "addr", "show", "ul0")
        assert " mtu 9000 " in ip(emu.netns, "link", "show", "ul0")
    bridge = ip(cluster.underlay_netns, "link", "show", "ul0")
    assert " mtu 9000 " in bridge and "state UP" in bridge
    assert len(ip(cluster.underlay_netns, "link", "show", "master", "ul0").splitlines()) == 3
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "ul0" not in links


def test_a_plan_applied_through_ssh_runs_pings_and_is_removed(three):
    name, cluster, hosts = three
    emu1 = hosts[1]
    experiment = f"ep{uuid.uuid4().hex[:6]}"
    plan = _pair_plan(experiment, "emu1")
    phases: list[str] = []

    class Progress:
        def phase(self, description: str, total: int) -> None:
            phases.append(description)

        def advance(self, amount: int = 1) -> None:
            pass
    try:
        seconds = emu1.apply(plan, Progress())
        assert seconds > 0 and phases
        status = emu1.status(experiment)
        assert status["state"] == "up" and status["agent"]["alive"] is True
        assert (Path(cluster.hosts[1].state_dir) / experiment / "journal.jsonl").exists()   # the host's own state
        control = emu1.control(experiment)
        assert sorted(control.nodes()) == ["a", "b"]
        peer = control.addresses("b")[0]
        rc, out, err = control.run("a", ["ping", "-c1", "-W2", peer])
        assert rc == 0, (out, err)
        results = control.run_many([("a", ["true"]), ("b", ["sh", "-c", "exit 4"])])
        assert [r["rc"] for r in results] == [0, 4]
        control.record("probe", "a", {"ok": 1})
        assert [r["data"] for r in control.records("probe")] == [{"ok": 1}]
        with pytest.raises(ExperimentError, match="no node"):
            control.run("nosuchnode", ["true"])
        events = control.subscribe()
        control.event("probed", {"by": "test"})
        event = next(events)
        assert (event["name"], event["data"]) == ("probed", {"by": "test"})
        assert emu1.sessions() == 1                         # the subscription streams on the one channel too
        events.close()
        assert emu1.sessions() == 1                         # all of it on the one channel
        assert len(_established_ssh(cluster.hosts[1].netns)) == 1
        assert hosts[0].status(experiment)["state"] == "absent"     # emu0 has its own state root
    finally:
        report = emu1.remove(experiment)
    assert report is not None and report.namespaces == 2 and not report.left
    assert not our_namespaces(experiment)
    assert emu1.status(experiment)["state"] == "absent"
    assert emu1.remove(experiment) is None


def test_a_wrong_pinned_key_a_missing_agent_and_an_absent_host_are_one_line(three, tmp_path):
    name, cluster, hosts = three
    real = cluster.connect_info("emu0")
    other_key = Path(cluster.known_hosts).read_text().splitlines()[1].split(" ", 1)[1]   # emu1's key
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{real.address} {other_key}\n")
    with pytest.raises(ExperimentError) as caught:
        SshHost("emu0", dataclasses.replace(real, known_hosts=str(wrong))).connect()
    assert str(caught.value) == f"host emu0 (10.250.0.1): its host key is not the one pinned in {wrong}"
    with pytest.raises(ExperimentError) as caught:
        SshHost("emu0", dataclasses.replace(real, python="/nonexistent/python3")).connect()
    assert str(caught.value) == ("host emu0 (10.250.0.1): the agent did not start: "
                                 "env: '/nonexistent/python3': No such file or directory")
    ghost = dataclasses.replace(real, address=underlay.host_address(99), connect_seconds=1.0)
    with pytest.raises(ExperimentError) as caught:
        SshHost("ghost", ghost).connect()
    assert str(caught.value).startswith("host ghost (10.250.0.100) is unreachable: ")
    assert "\n" not in str(caught.value)


def test_a_second_up_of_the_same_experiment_is_refused_in_one_line(three):
    name, *_ = three
    with pytest.raises(ExperimentError, match=f"experiment '{name}' has emulated hosts already"):
        emulated.up(name, 1)


def test_teardown_leaves_nothing_and_is_idempotent(three):
    name, cluster, hosts = three
    entries = _journaled(name)
    assert {e["t"] for e in entries} >= {"netns", "pid", "file", "dir", "hoststate"}
    for host in hosts:
        host.close()
    report = emulated.down(name)
    assert report is not None and not report.left, report
    assert report.namespaces == 4 and report.processes >= 3
    _assert_nothing_left(entries)
    assert not our_namespaces(name)                     # nothing of it in /run/netns
    assert not os.path.exists(emulated.cluster_dir(name).parent)
    assert emulated.down(name) is None


def test_teardown_after_a_crash_removes_what_a_host_still_runs():
    """The controller "crashes": its connection stays open and an experiment stays up on emu0. Teardown from the
    journal kills the hosts' processes, runs emu0's own cleanup (its journals) and removes everything."""
    name = f"ec{uuid.uuid4().hex[:6]}"
    cluster = emulated.up(name, 2)
    experiment = f"ex{uuid.uuid4().hex[:6]}"
    host = cluster.transports()[0]
    try:
        host.apply(_pair_plan(experiment, "emu0"))
        assert len(our_namespaces(experiment)) == 2
        entries = _journaled(name)
    finally:
        report = emulated.down(name)
    assert report is not None and not report.left, report
    assert report.host_experiments == 1
    assert not our_namespaces(experiment)
    _assert_nothing_left(entries)
    with pytest.raises(ExperimentError, match="lost the connection|unreachable"):
        host.status(experiment)


def test_an_sshd_that_cannot_start_is_one_line_and_up_leaves_nothing(monkeypatch):
    from nestbed.cluster import sshd
    from nestbed.errors import PreflightError
    monkeypatch.setattr(sshd, "config", lambda *args: "NoSuchOption yes\n")
    name = f"ef{uuid.uuid4().hex[:6]}"
    with pytest.raises(PreflightError) as caught:
        emulated.up(name, 2)
    message = str(caught.value)
    assert message.startswith("sshd of emulated host emu0 exited at start (255): ") and "NoSuchOption" in message
    assert "\n" not in message
    assert not our_namespaces(name)
    assert not os.path.exists(emulated.cluster_dir(name).parent)
