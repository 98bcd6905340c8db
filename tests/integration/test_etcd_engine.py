"""The etcd engine on 3 emulated hosts with a real etcd (started by the test; the hosts' agents reach it over a
unix socket, so no traffic leaves the namespaces the tests make): `up` through etcd makes what `up` over SSH makes
and pings cross hosts; a controller killed mid-up and run again finishes without re-creating anything; an agent
killed mid-up is reported lost and every host is rolled back; `down` leaves no namespace, process or key."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NESTBED, nestbed, state_dir
from etcd_server import EtcdServer, keys_under
from nestbed.cluster.emulated import cluster_dir, hosts_root

pytestmark = pytest.mark.needs("root", "sshd", "etcd")

TOPOLOGY = """
name: {name}
nodes:
  a: {{host: emu0}}
  b: {{host: emu1}}
  c: {{host: emu2}}
  d: {{host: emu0}}
  r: {{router: true, host: emu1}}
lans:
  lan0: {{members: [a, b, c, r], bandwidth: 100Mbit}}
links:
  - {{name: l1, ends: [r, d], bandwidth: 50Mbit}}
  - {{name: l2, ends: [a, d]}}
"""
HOSTS = ["emu0", "emu1", "emu2"]
TTL = 5


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server
    assert not server.running(), "etcd left running"


def files(tmp_path: Path, name: str, etcd: EtcdServer | None) -> tuple[Path, Path]:
    topology, cluster = tmp_path / f"{name}.yaml", tmp_path / f"lab-{name}.yaml"
    topology.write_text(TOPOLOGY.format(name=name))
    engine = f"engine: {{etcd: ['{etcd.unix_url}']}}\n" if etcd is not None else ""
    cluster.write_text("emulate: 3\nunderlay_mtu: 1500\n" + engine)
    return topology, cluster


def namespaces_of(name: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if f"-{name}." in n)
    except FileNotFoundError:
        return []


def processes_of(directory: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                line = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as handle:
                env = handle.read().decode(errors="replace")
        except OSError:
            continue
        if str(directory) in line or str(directory) in env:
            found.append(int(pid))
    return found


def etcd_keys(etcd: EtcdServer, name: str) -> list[bytes]:
    """The experiment's keys, and its emulated hosts' (manifests, alive keys: named <exp>.<host> in etcd)."""
    return keys_under(etcd.url, f"/nestbed/exp/{name}/".encode()) + [
        k for h in HOSTS for k in keys_under(etcd.url, f"/nestbed/host/{name}.{h}/".encode())]


def assert_nothing_left(name: str, etcd: EtcdServer) -> None:
    assert namespaces_of(name) == [], "namespaces left"
    assert not state_dir(name).exists(), f"left {state_dir(name)}"
    assert processes_of(state_dir(name)) == [], "processes left (agents, sshd, host agents)"
    assert etcd_keys(etcd, name) == [], "keys left in etcd"


def host_view(name: str, placeholder: str = "EXP") -> dict[str, object]:
    """What each host made: its plan as applied there (plan.json), with the experiment's name neutral."""
    view: dict[str, object] = {}
    for host in HOSTS:
        plan = json.loads((hosts_root(name) / host / name / "plan.json").read_text().replace(name, placeholder))
        view[host] = plan
    view["namespaces"] = [n.replace(name, placeholder) for n in namespaces_of(name)]
    status = json.loads(nestbed("status", name, "--json").stdout.replace(name, placeholder))
    view["status"] = {k: status[k] for k in ("nodes", "links")}
    return view


def wait_for(what: str, check, seconds: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"{what}: not after {seconds} s")


def statuses(etcd: EtcdServer, name: str) -> dict[str, dict]:
    import asyncio

    from nestbed.cluster.etcd import publish
    from nestbed.cluster.etcd.client import Etcd

    async def read() -> dict[str, dict]:
        async with Etcd([etcd.url]) as client:
            found, _ = await publish.statuses(client, name)
            return {h: {"observed": s.observed, "phase": s.phase} for h, s in found.items()}
    return asyncio.run(read())


def ready_everywhere(name: str, generation: int) -> dict[str, dict]:
    return {f"{name}.{h}": {"observed": generation, "phase": "ready"} for h in HOSTS}


def test_up_through_etcd_makes_what_ssh_makes_pings_cross_and_down_leaves_nothing(tmp_path, etcd):
    from nestbed.cluster.etcd import engine
    over_ssh = over_etcd = "eboth"          # one name, one after the other: the same VNIs, MACs and subnets
    topology, cluster = files(tmp_path, over_ssh, None)
    try:
        nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
        expected = host_view(over_ssh)
    finally:
        nestbed("down", over_ssh, check=False, timeout=180)
    assert namespaces_of(over_ssh) == []
    topology, cluster = files(tmp_path, over_etcd, etcd)
    try:
        shown = nestbed("up", str(topology), "--cluster", str(cluster), timeout=180).stdout
        assert "is up on 3 hosts" in " ".join(shown.split())
        assert host_view(over_etcd) == expected
        for src, dst in [("a", "b"), ("a", "c"), ("c", "b"), ("d", "b")]:
            result = nestbed("exec", over_etcd, src, "--", "ping", "-c1", "-W2", dst, check=False)
            assert result.returncode == 0, f"{src} → {dst}: {result.stdout}{result.stderr}"
        status = " ".join(nestbed("status", over_etcd).stdout.split())
        assert "etcd: generation 1, 3 hosts: 3 ready" in status
        assert statuses(etcd, over_etcd) == ready_everywhere(over_etcd, 1)
        assert len(engine.agent_pids(cluster_dir(over_etcd))) == 3        # one agent per host
    finally:
        nestbed("down", over_etcd, check=False, timeout=180)
    assert_nothing_left(over_etcd, etcd)        # (the agents among the processes: their environment names it)


def test_a_controller_killed_mid_up_and_run_again_finishes_without_re_creating_anything(tmp_path, etcd):
    name = "ekill"
    topology, cluster = files(tmp_path, name, etcd)
    try:
        controller = subprocess.Popen(NESTBED + ["up", str(topology), "--cluster", str(cluster)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # killed once every host's plan is out (its manifest written), while it waits for the hosts: the agents
        # converge on their own (a kill before that is the rerun's to finish; see the next test's rollback)
        from nestbed.cluster.etcd import keys
        wait_for("every host's plan published", lambda: all(
            keys_under(etcd.url, keys.manifest(f"{name}.{host}", name)) for host in HOSTS))
        assert controller.poll() is None, "up finished before it could be killed"
        controller.send_signal(signal.SIGKILL)
        controller.wait()
        # the agents go on without it
        wait_for("every host ready", lambda: statuses(etcd, name) == ready_everywhere(name, 1))
        inodes = {n: os.stat(f"/run/netns/{n}").st_ino for n in namespaces_of(name)}
        host_agents = {h: json.loads((hosts_root(name) / h / name / "status.json").read_text())["agent"]
                       for h in HOSTS}
        again = nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
        assert "is up on 3 hosts" in " ".join(again.stdout.split())
        assert {n: os.stat(f"/run/netns/{n}").st_ino for n in namespaces_of(name)} == inodes
        assert {h: json.loads((hosts_root(name) / h / name / "status.json").read_text())["agent"]
                for h in HOSTS} == host_agents
        assert statuses(etcd, name) == ready_everywhere(name, 1)    # the same generation: nothing new
        assert json.loads((state_dir(name) / "status.json").read_text())["state"] == "up"
        assert nestbed("exec", name, "a", "--", "ping", "-c1", "-W2", "c", check=False).returncode == 0
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert_nothing_left(name, etcd)


def test_an_agent_killed_mid_up_is_reported_lost_and_every_host_rolled_back(tmp_path, etcd):
    from nestbed.cluster.etcd import engine
    name = "elost"
    topology, cluster = files(tmp_path, name, etcd)
    try:
        controller = subprocess.Popen(NESTBED + ["up", str(topology), "--cluster", str(cluster)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for("emu1's agent alive", lambda: keys_under(etcd.url, f"/nestbed/host/{name}.emu1/alive".encode()))
        pid = engine.agent_pids(cluster_dir(name))["emu1"]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        out, err = controller.communicate(timeout=120)
        took = time.monotonic() - killed
        assert controller.returncode != 0, out
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and f"host {name}.emu1 lost" in lines[0] and "rolled back" in lines[0], err
        assert "Traceback" not in err
        assert took < TTL + 2 + 30, f"{took:.1f} s from the kill to the end of the rollback"
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert_nothing_left(name, etcd)


def cluster_status(name: str) -> dict:
    return json.loads((state_dir(name) / "status.json").read_text())["cluster"]


def pings(name: str, pairs: list[tuple[str, str]]) -> None:
    for src, dst in pairs:
        result = nestbed("exec", name, src, "--", "ping", "-c1", "-W2", dst, check=False)
        assert result.returncode == 0, f"{src} → {dst}: {result.stdout}{result.stderr}"


def test_keep_going_moves_the_nodes_of_an_agent_killed_mid_up_and_the_experiment_comes_up(tmp_path, etcd):
    from nestbed.cluster.etcd import engine
    name = "ekeep"
    topology, cluster = files(tmp_path, name, etcd)
    try:
        controller = subprocess.Popen(NESTBED + ["up", str(topology), "--cluster", str(cluster), "--keep-going"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for("emu1's agent alive", lambda: keys_under(etcd.url, f"/nestbed/host/{name}.emu1/alive".encode()))
        os.kill(engine.agent_pids(cluster_dir(name))["emu1"], signal.SIGKILL)
        out, err = controller.communicate(timeout=180)
        assert controller.returncode == 0, out + err
        shown = " ".join(out.split())
        assert "is up on 2 hosts" in shown and "moved 2 node(s) off lost host(s) emu1: b, r" in shown, shown
        assert "node b was pinned to emu1, which is lost: placed afresh" in shown
        placed = cluster_status(name)
        assert placed["hosts"] == ["emu0", "emu2"] and placed["lost"] == ["emu1"]
        assert placed["host_of"]["a"] == "emu0" and placed["host_of"]["c"] == "emu2"
        assert placed["host_of"]["b"] in ("emu0", "emu2") and placed["host_of"]["r"] in ("emu0", "emu2")
        pings(name, [("a", "b"), ("c", "b"), ("d", "b"), ("d", "c")])          # d → b and c through r
        status = " ".join(nestbed("status", name).stdout.split())
        assert "lost hosts, their nodes moved to the others: emu1" in status, status
        live = {h: s for h, s in statuses(etcd, name).items() if h != f"{name}.emu1"}
        assert {s["phase"] for s in live.values()} == {"ready"} and len(live) == 2
        assert "nothing to change" in nestbed("up", str(topology), "--cluster", str(cluster)).stdout
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert_nothing_left(name, etcd)


def test_a_host_lost_while_up_is_one_line_until_keep_going_moves_its_nodes_in_place(tmp_path, etcd):
    from nestbed.cluster.etcd import engine
    name = "emove"
    topology, cluster = files(tmp_path, name, etcd)
    try:
        nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
        emu0 = json.loads((hosts_root(name) / "emu0" / name / "plan.json").read_text())
        on_emu0 = {n["netns"]: os.stat(f"/run/netns/{n['netns']}").st_ino for n in emu0["nodes"]}
        assert sorted(n["name"] for n in emu0["nodes"]) == ["a", "d"]
        os.kill(engine.agent_pids(cluster_dir(name))["emu2"], signal.SIGKILL)
        wait_for("emu2 reported lost", lambda: "lost" in nestbed("status", name).stdout, TTL + 10)
        refused = nestbed("up", str(topology), "--cluster", str(cluster), check=False)
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "emu2 of emove is lost" in lines[0] and "--keep-going" in lines[0], refused.stderr
        moved = nestbed("up", str(topology), "--cluster", str(cluster), "--keep-going", timeout=180)
        shown = " ".join(moved.stdout.split())
        assert "c: moved to" in shown and "changed in place" in shown, shown
        placed = cluster_status(name)
        assert placed["lost"] == ["emu2"] and placed["hosts"] == ["emu0", "emu1"]
        assert placed["host_of"]["c"] in ("emu0", "emu1")
        pings(name, [("a", "c"), ("b", "c"), ("d", "c")])
        assert {n: os.stat(f"/run/netns/{n}").st_ino for n in on_emu0} == on_emu0, "emu0's nodes were re-made"
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert_nothing_left(name, etcd)
