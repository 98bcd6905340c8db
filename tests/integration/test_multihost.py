"""One experiment on 3 emulated hosts (each a namespace with a real sshd, reached over SSH) against the same
topology on this host: the same addresses, routes and identity files; pings across hosts by name; a LAN across 3
hosts on a 1500-byte underlay runs at MTU 1450 with no silent drop; `down` leaves nothing."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import nestbed, state_dir

pytestmark = pytest.mark.needs("root", "sshd")

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
CLUSTER = "emulate: 3\nunderlay_mtu: 1500\n"
EMULATED = ["emu0", "emu1", "emu2"]


def files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    topology, cluster = tmp_path / f"{name}.yaml", tmp_path / "lab.yaml"
    topology.write_text(TOPOLOGY.format(name=name))
    cluster.write_text(CLUSTER)
    return topology, cluster


def flat(text: str) -> str:
    """rich wraps lines at 80 columns when not on a terminal."""
    return " ".join(text.split())


def namespaces_of(name: str) -> list[str]:
    """Every namespace on this machine whose name carries the experiment (its hosts', its nodes', its switches')."""
    try:
        return [n for n in os.listdir("/run/netns") if f"-{name}." in n]
    except FileNotFoundError:
        return []


def command_lines() -> dict[int, str]:
    """Every process's command line, its arguments joined by spaces."""
    lines = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                lines[int(pid)] = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return lines


def processes_of(directory: Path) -> list[str]:
    """Processes whose command line names the experiment's state directory (sshd, agents, launchers)."""
    return [f"{pid}: {line[:120]}" for pid, line in command_lines().items() if str(directory) in line]


def identity(name: str, node: str) -> dict[str, str]:
    out = nestbed("exec", name, node, "--", "sh", "-c",
                  "for f in /var/emulab/boot/*; do echo \"== $f\"; cat $f; done").stdout
    chunks = re.split(r"^== (.*)$", out, flags=re.M)[1:]
    return {Path(chunks[i]).name: chunks[i + 1] for i in range(0, len(chunks), 2)}


@pytest.fixture
def on_three_hosts(tmp_path: Path):
    name = "span3"
    topology, cluster = files(tmp_path, name)
    try:
        up = flat(nestbed("up", str(topology), "--cluster", str(cluster), timeout=180).stdout)
        assert "is up on 3 hosts" in up and "2 segments cross hosts" in up
        yield name, up
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert namespaces_of(name) == [], "namespaces left"
    assert not state_dir(name).exists(), f"left {state_dir(name)}"
    assert processes_of(state_dir(name)) == [], "processes left"


def test_pings_cross_hosts_by_name_and_the_lan_runs_at_the_lowered_mtu(on_three_hosts):
    name, shown = on_three_hosts
    assert "segment lan0: MTU 1450" in shown
    for src, dst in [("a", "b"), ("a", "c"), ("c", "b"), ("d", "b"), ("a", "d"), ("c", "d")]:
        result = nestbed("exec", name, src, "--", "ping", "-c1", "-W2", dst, check=False)
        assert result.returncode == 0, f"{src} → {dst}: {result.stdout}{result.stderr}"
    fits = nestbed("exec", name, "a", "--", "ping", "-c1", "-W2", "-M", "do", "-s", "1422", "c", check=False)
    assert fits.returncode == 0, fits.stdout + fits.stderr
    too_big = nestbed("exec", name, "a", "--", "ping", "-c1", "-W2", "-M", "do", "-s", "1423", "c", check=False)
    assert too_big.returncode != 0 and "message too long" in (too_big.stdout + too_big.stderr).lower()
    status = nestbed("status", name).stdout
    assert "hosts: emu0, emu1, emu2" in status and re.search(r"\bb\b.*emu1", status)
    down = flat(nestbed("link", name, "lan0", "down").stdout)    # a on emu0, b and r on emu1, c on emu2
    assert "lan0: down on 4 members on emu0, emu1, emu2" in down
    assert nestbed("exec", name, "a", "--", "ping", "-c1", "-W1", "b", check=False).returncode != 0
    assert "down" in nestbed("status", name).stdout
    nestbed("link", name, "lan0", "up")
    assert nestbed("exec", name, "a", "--", "ping", "-c1", "-W2", "b", check=False).returncode == 0
    time.sleep(1.5)                                              # every host's agent samples once a second
    counters = json.loads(nestbed("counters", name, "--json").stdout)
    sampled = {entry["node"] for entry in counters["interfaces"]}
    assert {"a", "b", "c", "d", "r"} <= sampled, counters        # the nodes of all three hosts
    assert any(e["node"] == "a" and e["iface"] == "eth0" and e["tx_packets"] > 0 for e in counters["interfaces"])
    phases = json.loads((state_dir(name) / "status.json").read_text())["phases"]   # where up's time went
    assert {"plan", "hosts", "connect", "apply"} <= phases.keys() and sorted(phases["apply_on"]) == EMULATED
    assert all(0 < there <= answered <= phases["apply"] for answered, there in phases["apply_on"].values())


def test_the_same_vtopo_on_one_host_has_the_same_addresses_routes_and_identity(on_three_hosts, tmp_path):
    name, _ = on_three_hosts
    alone = "span1"
    one = tmp_path / "one"
    one.mkdir()
    (one / f"{alone}.yaml").write_text(TOPOLOGY.format(name=alone).replace("{host: emu0}", "{}")
                                       .replace("{host: emu1}", "{}").replace("{host: emu2}", "{}")
                                       .replace(", host: emu1}", "}"))
    try:
        nestbed("up", str(one / f"{alone}.yaml"))
        for node in ("a", "b", "c", "d", "r"):
            for command in (["ip", "-4", "-o", "addr", "show", "scope", "global"], ["ip", "route"]):
                there = nestbed("exec", name, node, "--", *command).stdout
                here = nestbed("exec", alone, node, "--", *command).stdout
                assert _without_mtu(there) == _without_mtu(here), f"{node}: {' '.join(command)}"
            mine, theirs = identity(name, node), identity(alone, node)
            assert mine.keys() == theirs.keys()
            for key in mine:      # the name differs, and so does the experiment's tag in every MAC (02:TAG:…)
                assert _same(mine[key], name) == _same(theirs[key], alone), f"{node}: {key}"
    finally:
        nestbed("down", alone, check=False)


def test_a_scenario_and_collect_work_across_hosts(on_three_hosts, tmp_path):
    """The client (a, emu0) fetches from the server (b, emu1); records come back from a's host; collect reaches c."""
    name, _ = on_three_hosts
    repo = Path(__file__).resolve().parents[2]
    scenario = tmp_path / "client_server.aal"
    scenario.write_text((repo / "examples" / "client_server.aal").read_text().replace("timeout: 5000", "timeout: 2000"))
    result = nestbed("run", name, str(scenario), "--timeout", "60", timeout=90)
    assert "scenario reached exit" in result.stdout, result.stdout + result.stderr
    records = json.loads(nestbed("records", name, "--agent", "http_client", "--json").stdout)
    good = [r for r in records if r["data"].get("status") == 200]
    assert good and all(r["node"] == "a" for r in good), records
    nestbed("exec", name, "c", "--", "sh", "-c", "echo from-c > /tmp/nestbed-multihost-probe")
    collected = nestbed("collect", name, "/tmp/nestbed-multihost-probe", "--node", "c", "-o", str(tmp_path / "got"))
    assert (tmp_path / "got" / "c" / "tmp" / "nestbed-multihost-probe").read_text() == "from-c\n", collected.stdout
    nestbed("exec", name, "c", "--", "rm", "-f", "/tmp/nestbed-multihost-probe")


def _pids_with_env(marker: str) -> list[int]:
    """Processes whose environment holds `marker` (an emulated host's agent: its NESTBED_STATE_DIR)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _sshd_of(name: str, host: str) -> list[int]:
    """The sshd listener of one emulated host (its config lives under the experiment's cluster directory)."""
    marker = str(state_dir(name) / "cluster")
    return [pid for pid, line in command_lines().items() if "sshd" in line and marker in line and f"/{host}/" in line]


def test_a_host_lost_mid_up_rolls_back_every_host_and_leaves_nothing(tmp_path, monkeypatch):
    from nestbed.cluster import deploy, ssh
    from nestbed.errors import ExperimentError
    from nestbed.model import load_topology
    from nestbed.model.cluster import load_cluster
    name = "span-lost"
    topology, cluster = files(tmp_path, name)
    real_apply = ssh.SshHost.apply

    def apply(self, plan, progress=None):
        if self.name == "emu1":      # its agent dies before it is given its plan; the other hosts apply theirs
            self.connect()
            for pid in _pids_with_env(f"NESTBED_STATE_DIR={self.info.state_dir}"):
                os.kill(pid, 9)
        return real_apply(self, plan, progress)
    monkeypatch.setattr(ssh.SshHost, "apply", apply)
    with pytest.raises(ExperimentError, match=r"host emu1: .*every host was rolled back"):
        deploy.up(load_topology(str(topology)), load_cluster(str(cluster)))
    assert namespaces_of(name) == [] and not state_dir(name).exists()
    assert processes_of(state_dir(name)) == []


def test_down_with_a_host_unreachable_removes_it_from_its_journals_and_says_so(tmp_path):
    name = "span-gone"
    topology, cluster = files(tmp_path, name)
    nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
    try:
        listeners = _sshd_of(name, "emu2")
        assert listeners, "the emulated host's sshd"
        for pid in listeners:
            os.kill(pid, 9)
        down = nestbed("down", name, timeout=180)
        assert "host emu2:" in down.stderr and "removed from its journals on this machine" in flat(down.stderr)
    finally:
        nestbed("down", name, check=False, timeout=180)
        nestbed("cleanup", check=False, timeout=180)
    assert namespaces_of(name) == [] and not state_dir(name).exists()
    assert processes_of(state_dir(name)) == []


PHYSICAL = """
name: {name}
nodes:
  a: {{}}
  b: {{}}
  p: {{kind: physical}}
lans:
  lan0: {{members: [a, b, p]}}
"""


def test_a_physical_node_is_its_hosts_namespace_and_pings_by_name(tmp_path):
    name = "span-phy"
    topology, cluster = tmp_path / "phy.yaml", tmp_path / "lab2.yaml"
    topology.write_text(PHYSICAL.format(name=name))
    cluster.write_text("emulate: 2\nunderlay_mtu: 9000\n")
    try:
        nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
        status = nestbed("status", name).stdout
        where = dict(re.findall(r"│ (\w+)\s+│ \w+(?: router)?\s+│ (emu\d)", status))
        assert set(where) == {"a", "b", "p"} and where["p"] not in (where["a"], where["b"]), status   # its own
        for src, dst in [("p", "a"), ("a", "p"), ("b", "p")]:
            result = nestbed("exec", name, src, "--", "ping", "-c1", "-W2", dst, check=False)
            assert result.returncode == 0, f"{src} → {dst}: {result.stdout}{result.stderr}"
        links = nestbed("exec", name, "p", "--", "ip", "-o", "link").stdout
        assert " ul0" in links or "ul0@" in links                          # the host's own namespace: its underlay
        nickname = nestbed("exec", name, "p", "--", "cat", "/var/emulab/boot/nickname").stdout
        assert nickname.strip().startswith(f"p.{name}.")
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert namespaces_of(name) == [] and not state_dir(name).exists()
    assert processes_of(state_dir(name)) == []


VMS = """
name: {name}
embed: {{processes_in: qemu, per_vhost: 2}}
nodes:
  p: {{count: 2, host: emu0}}
  q: {{kind: qemu, host: emu1}}
  s: {{kind: qemu, host: emu0}}
lans:
  lan0: {{members: [p, q, s]}}
"""


@pytest.mark.needs("qemu")
def test_vms_on_two_hosts_a_vhost_and_a_qemu_node_ping_across(tmp_path):
    name = "span-vm"
    topology, cluster = tmp_path / "vm.yaml", tmp_path / "lab2.yaml"
    topology.write_text(VMS.format(name=name))
    cluster.write_text("emulate: 2\nunderlay_mtu: 9000\n")
    try:
        up = flat(nestbed("up", str(topology), "--cluster", str(cluster), timeout=300).stdout)
        assert "is up on 2 hosts" in up and "1 segment crosses hosts" in up
        assert not re.search(r"\b\w+x[0-9a-f]{6}\b", subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                                  text=True).stdout)   # nothing in our namespace
        for src, dst in [("p-0", "q"), ("q", "p-1"), ("p-0", "p-1")]:
            result = nestbed("exec", name, src, "--", "ping", "-c1", "-W5", dst, check=False, timeout=60)
            assert result.returncode == 0, f"{src} → {dst}: {result.stdout}{result.stderr}"
        hostname = nestbed("exec", name, "q", "--", "cat", "/var/emulab/boot/nickname").stdout
        assert hostname.strip().startswith(f"q.{name}.")
        # one control network across the hosts: q (emu1) reaches s (emu0) by its nickname, a control address
        control = nestbed("exec", name, "q", "--", "sh", "-c",
                          "a=$(awk '$2 ~ /^s[.]/ {print $1}' /etc/hosts); ping -c1 -W5 $a && echo at $a",
                          check=False, timeout=60)
        assert control.returncode == 0 and "at 172.30." in control.stdout, control.stdout + control.stderr
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert namespaces_of(name) == [] and not state_dir(name).exists()
    assert processes_of(state_dir(name)) == []


def _same(text: str, name: str) -> str:
    return re.sub(r"\b02:[0-9a-f]{2}:", "02:TAG:", text.replace(name, "EXP"))


def _without_mtu(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_bad_input_is_one_line_and_makes_nothing(tmp_path):
    topology, cluster = files(tmp_path, "span-bad")
    cluster.write_text("emulate: 3\nunderlay_mtu: 100\n")
    result = nestbed("up", str(topology), "--cluster", str(cluster), check=False)
    assert result.returncode != 0 and "underlay_mtu 100" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not state_dir("span-bad").exists() and namespaces_of("span-bad") == []
    real = tmp_path / "real.yaml"          # the nodes are pinned to emu0…: refused before any host is asked
    real.write_text("hosts:\n  h1: {ssh: root@192.0.2.10}\n")
    result = nestbed("up", str(topology), "--cluster", str(real), check=False)
    assert result.returncode != 0 and "pinned to host 'emu0'" in result.stderr and "Traceback" not in result.stderr
    assert not state_dir("span-bad").exists()


def test_underlay_traffic_stays_off_this_hosts_namespace(on_three_hosts):
    """Nothing of the experiment is in the machine's own namespace: no ul0, no vx device, no 10.250 address."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    addresses = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert not re.search(r"\b(ul0|vx\d+)\b", links) and "10.250." not in addresses
