"""One experiment on 3 emulated hosts (each a namespace with a real sshd, reached over SSH) against the same
topology on this host: the same addresses, routes and identity files; pings across hosts by name; a LAN across 3
hosts on a 1500-byte underlay runs at MTU 1450 with no silent drop; `down` leaves nothing."""
from __future__ import annotations

import json
import os
import re
import subprocess
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


def namespaces_of(name: str) -> list[str]:
    """Every namespace on this machine whose name carries the experiment (its hosts', its nodes', its switches')."""
    try:
        return [n for n in os.listdir("/run/netns") if f"-{name}." in n]
    except FileNotFoundError:
        return []


def processes_of(directory: Path) -> list[str]:
    """Processes whose command line names the experiment's state directory (sshd, agents, launchers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                line = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in line:
            found.append(f"{pid}: {line[:120]}")
    return found


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
        up = nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
        assert "is up on 3 hosts" in up.stdout and "segments cross hosts" in up.stdout
        yield name, up.stdout
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
    real = tmp_path / "real.yaml"
    real.write_text("hosts:\n  h1: {ssh: root@192.0.2.10}\n")
    result = nestbed("up", str(topology), "--cluster", str(real), check=False)
    assert result.returncode != 0 and "emulated hosts" in result.stderr and "Traceback" not in result.stderr
    assert not state_dir("span-bad").exists()


def test_underlay_traffic_stays_off_this_hosts_namespace(on_three_hosts):
    """Nothing of the experiment is in the machine's own namespace: no ul0, no vx device, no 10.250 address."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    addresses = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert not re.search(r"\b(ul0|vx\d+)\b", links) and "10.250." not in addresses
