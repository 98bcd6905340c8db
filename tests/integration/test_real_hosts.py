"""An experiment on "real" hosts: hosts a cluster file lists by `ssh:` (not `emulate: N`), reached with the user's
own key and known_hosts, where nestbed brings itself (its bundle, run by the host's python3 with -S: none of this
machine's site packages) and a physical node is the host's own namespace.

The hosts are made for the test as emulated hosts are (a namespace with a real sshd each), under a lab name of
the test's own; the controller runs inside their underlay namespace, as a controller on the hosts' network would,
and treats them exactly as real hosts: its plan, bring, teardown and cleanup never use the lab's bookkeeping."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NESTBED, state_dir
from nestbed.cluster import emulated

pytestmark = pytest.mark.needs("root", "sshd")

HOSTS = ["r0", "r1", "r2"]
TOPOLOGY = """
name: {name}
nodes:
  a: {{host: r0}}
  b: {{host: r1}}
  p: {{kind: physical, host: r2}}
lans:
  lan0: {{members: [a, b, p]}}
links:
  - {{name: lossy, ends: [b, p], loss: 0.2}}
"""


class Lab:
    """Three hosts with sshd, and the files a user of them has: a key, known_hosts, a cluster file."""

    def __init__(self, tmp: Path):
        from nestbed import paths
        self.cache = paths.state_root() / "bundles"     # where the controller (the CLI) builds its tarballs
        self.had_cache = self.cache.exists()
        self.cached = set(self.cache.iterdir()) if self.had_cache else set()
        self.name = f"rl{uuid.uuid4().hex[:6]}"
        self.hosts = emulated.up(self.name, len(HOSTS))
        self.home = tmp / "home"
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        shutil.copy(self.hosts.client_key, self.home / ".ssh" / "id_ed25519")
        os.chmod(self.home / ".ssh" / "id_ed25519", 0o600)
        shutil.copy(self.hosts.known_hosts, self.home / ".ssh" / "known_hosts")
        self.roots = {name: tmp / f"{name}-state" for name in HOSTS}
        self.prefixes = {name: f"nu{i}" for i, name in enumerate(HOSTS)}
        lines = ["hosts:"] + [f"  {name}: {{ssh: root@{h.address}, state_dir: {self.roots[name]}, "
                              f"prefix: {self.prefixes[name]}}}" for name, h in zip(HOSTS, self.hosts.hosts)]
        self.cluster = tmp / "real.yaml"
        self.cluster.write_text("\n".join(lines) + "\n")

    def close(self) -> None:
        """The hosts go, and the bundle tarballs the controller built for them (its cache: the test's own)."""
        emulated.down(self.name)
        for built in (set(self.cache.iterdir()) if self.cache.exists() else set()) - self.cached:
            built.unlink()
        if not self.had_cache and self.cache.exists():
            self.cache.rmdir()

    def netns_of(self, host: str) -> str:
        return self.hosts.hosts[HOSTS.index(host)].netns

    def nestbed(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """The CLI as a user on the hosts' network runs it (their underlay namespace), with the user's HOME."""
        result = subprocess.run(["ip", "netns", "exec", self.hosts.underlay_netns, *NESTBED, *args],
                                capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "HOME": str(self.home)})
        if check and result.returncode != 0:
            raise AssertionError(f"nestbed {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def in_host(self, host: str, *argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.netns_of(host), *argv], capture_output=True, text=True,
                              check=True).stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = Lab(tmp_path_factory.mktemp("real"))
    try:
        yield made
    finally:
        made.close()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_up_brings_nestbed_and_a_physical_node_is_the_hosts_own_namespace(lab: Lab, tmp_path: Path) -> None:
    name = f"rh{uuid.uuid4().hex[:5]}"
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(name=name))
    lab.nestbed("up", str(topology), "--cluster", str(lab.cluster))
    try:
        # nestbed was brought to every host, complete, and its agent runs from there with -S
        for host in HOSTS:
            bundles = list((lab.roots[host] / "bundles").iterdir())
            assert len(bundles) == 1 and (bundles[0] / ".complete").is_file(), bundles
            assert (bundles[0] / "nestbed" / "agent" / "remote.py").is_file()
        bundle = str(next((lab.roots["r0"] / "bundles").iterdir()))
        agents = [line for line, env in _processes() if "nestbed.agent" in line and f"PYTHONPATH={bundle}" in env]
        assert agents, "no agent of host r0 runs from its bundle"
        status = json.loads((state_dir(name) / "status.json").read_text())
        assert set(status["cluster"]["real"]) == set(HOSTS) and status["state"] == "up"

        # pings across the hosts, by name, also from and to the physical node
        for source, target in [("a", "b"), ("a", "p"), ("p", "a"), ("b", "p")]:
            lab.nestbed("exec", name, source, "--", "ping", "-c", "1", "-W", "3", target)
        # p is r2's own namespace: its interfaces are there, beside the host's own underlay
        links = lab.in_host("r2", "ip", "-o", "link", "show")
        assert "ul0" in links
        p_ifaces = json.loads(lab.nestbed("status", name, "--json").stdout)
        p_node = next(n for n in p_ifaces["nodes"] if n["name"] == "p")
        for iface in p_node["interfaces"]:
            assert f" {iface['name']}@" in links or f" {iface['name']}:" in links, (iface, links)
        identity = lab.nestbed("exec", name, "p", "--", "cat", "/var/emulab/boot/nickname").stdout
        assert identity.strip().startswith("p.")
        # the lossy link's rule (no netem here: iptables) carries the experiment's mark in the host's table
        from nestbed.realize import preflight
        rules = lab.in_host("r2", "iptables-save")
        marked = [line for line in rules.splitlines() if f"nestbed:{name}:" in line]
        assert bool(marked) == (not preflight.has_qdisc("netem")), rules

        # counters and plots come from the hosts' stores, copied over their channels
        import time
        time.sleep(2.5)                        # a few of the agents' samples (one a second)
        counters = lab.nestbed("counters", name, "--json")
        sampled = {row["node"] for row in json.loads(counters.stdout)["interfaces"]}
        assert {"a", "b", "p"} <= sampled, counters.stdout
        plots = lab.nestbed("plot", name, "-o", str(tmp_path / "plots"))
        assert (tmp_path / "plots" / "lan-lan0.png").is_file() and (tmp_path / "plots" / "link-lossy.png").is_file(), \
            plots.stdout
        assert not (state_dir(name) / "host-stores" / "r0.sqlite.part").exists()

        # a second `up` of another experiment finds the bundle there: nothing is installed again
        before = {h: (next((lab.roots[h] / "bundles").iterdir()) / ".complete").stat().st_mtime_ns for h in HOSTS}
        other = tmp_path / "o.yaml"
        other.write_text(f"name: {name}o\nnodes:\n  x: {{host: r0}}\n  y: {{host: r1}}\nlinks:\n  - {{ends: [x, y]}}\n")
        lab.nestbed("up", str(other), "--cluster", str(lab.cluster))
        lab.nestbed("exec", f"{name}o", "x", "--", "ping", "-c", "1", "-W", "3", "y")
        lab.nestbed("down", f"{name}o")
        after = {h: (next((lab.roots[h] / "bundles").iterdir()) / ".complete").stat().st_mtime_ns for h in HOSTS}
        assert before == after
    finally:
        lab.nestbed("down", name, check=False)
    # nothing of it is left, and the hosts' own namespaces, links and processes are untouched
    assert not [n for n in os.listdir("/run/netns") if f"-{name}." in n]
    assert not state_dir(name).exists()
    for host in HOSTS:
        assert "ul0" in lab.in_host(host, "ip", "-o", "link", "show")
    assert f"nestbed:{name}:" not in lab.in_host("r2", "iptables-save")
    assert _sshds_alive(lab), "a host's sshd died with the experiment"
    for host in HOSTS:
        left = [p for p in (lab.roots[host]).iterdir() if p.name != "bundles"]
        assert not left, left


def test_cluster_check_reaches_the_real_hosts_as_up_does(lab: Lab) -> None:
    result = lab.nestbed("cluster", "check", "--cluster", str(lab.cluster), "--json", check=False)
    report = json.loads(result.stdout)
    assert [h["name"] for h in report["hosts"]] == HOSTS, result.stdout
    assert all(h.get("version") for h in report["hosts"]), result.stdout
    mtus = {tuple(p["hosts"]): p["mtu"] for p in report["pairs"]}
    assert len(mtus) == 3 and set(mtus.values()) == {1500}, report["pairs"]


def test_down_with_a_host_unreachable_then_cleanup(lab: Lab, tmp_path: Path) -> None:
    name = f"rd{uuid.uuid4().hex[:5]}"
    topology = tmp_path / "t.yaml"
    topology.write_text(f"name: {name}\nnodes:\n  a: {{host: r0}}\n  b: {{host: r1}}\nlinks:\n  - {{ends: [a, b]}}\n")
    lab.nestbed("up", str(topology), "--cluster", str(lab.cluster))
    lab.in_host("r1", "ip", "link", "set", "ul0", "down")
    try:
        down = lab.nestbed("down", name, check=False)
        said = flat(down.stdout + down.stderr)
        assert "host r1" in said and "nestbed cleanup" in said, said
        assert state_dir(name).exists()                  # the controller keeps what it needs to finish later
        status = json.loads((state_dir(name) / "status.json").read_text())
        assert status["cluster"]["pending"] == ["r1"]
        assert not [n for n in os.listdir("/run/netns") if n.startswith(f"nu0-{name}.")]     # r0's part is gone
        assert [n for n in os.listdir("/run/netns") if n.startswith(f"nu1-{name}.")]         # r1's is there
    finally:
        lab.in_host("r1", "ip", "link", "set", "ul0", "up")
    lab.nestbed("cleanup")
    assert not [n for n in os.listdir("/run/netns") if f"-{name}." in n]
    assert not state_dir(name).exists()


def test_bad_cluster_files_say_one_line_and_make_nothing(lab: Lab, tmp_path: Path) -> None:
    name = f"rb{uuid.uuid4().hex[:5]}"
    topology = tmp_path / "t.yaml"
    topology.write_text(f"name: {name}\nnodes:\n  a: {{host: r0}}\n  b: {{host: r1}}\nlinks:\n  - {{ends: [a, b]}}\n")
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(lab.cluster.read_text() + "emulate: 1\n")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(lab.cluster.read_text().replace("prefix: nu1}", "prefix: nu1, address: 10.250.9.9}"))
    for cluster, expected in [(mixed, "mixes emulated hosts"), (wrong, "has no interface with address 10.250.9.9")]:
        result = lab.nestbed("up", str(topology), "--cluster", str(cluster), check=False)
        assert result.returncode != 0
        said = result.stderr.strip()
        assert expected in flat(said) and "Traceback" not in said, said
        assert not state_dir(name).exists()
        assert not [n for n in os.listdir("/run/netns") if f"-{name}." in n]


def _processes() -> list[tuple[str, list[str]]]:
    """Every process's command line and environment."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        found.append((line, env))
    return found


def _sshds_alive(lab: Lab) -> bool:
    """Every host's sshd still runs (by its pid file)."""
    pids = [int((lab.hosts.directory / h.name / "sshd.pid").read_text().split()[0]) for h in lab.hosts.hosts]
    return all(os.path.exists(f"/proc/{pid}") for pid in pids)
