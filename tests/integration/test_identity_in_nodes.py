"""Identity files in real nodes: /var/emulab/boot in `exec` and in start commands, nickname resolution, teardown."""
from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import PREFIX, exec_in, nestbed, state_dir

LAN3 = (Path(__file__).resolve().parents[2] / "examples" / "lan3.yaml").read_text()

def mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def up(experiments, text: str) -> str:
    name, path = experiments.write(text)
    nestbed("up", str(path))
    return name


def down(name: str) -> None:
    nestbed("down", name)


def without_name(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("name:")) + "\n"


def test_lan3_nodes_see_their_identity(experiments):
    emulab_before = os.path.exists("/var/emulab")
    name = up(experiments, without_name(LAN3))
    state = state_dir(name)
    try:
        boot = "/var/emulab/boot"
        assert exec_in(name, "a", "cat", f"{boot}/nickname").stdout == f"a.{name}.nestbed\n"
        if not emulab_before:                  # nestbed made /var/emulab: this experiment holds a claim on it
            assert f".nestbed-{PREFIX}-{name}" in os.listdir("/var/emulab")
        assert exec_in(name, "r1", "cat", f"{boot}/controlif").stdout == "lo\n"

        ifmap = exec_in(name, "r1", "cat", f"{boot}/ifmap").stdout.splitlines()
        links = json.loads(exec_in(name, "r1", "ip", "-j", "addr").stdout)
        actual = {link["ifname"]: (addr["local"], link["address"]) for link in links
                  for addr in link.get("addr_info", []) if addr["family"] == "inet" and link["ifname"] != "lo"}
        assert {line.split()[0]: tuple(line.split()[1:]) for line in ifmap} == actual
        assert len(ifmap) == 2

        topomap = exec_in(name, "c", "cat", f"{boot}/topomap").stdout
        assert {line.split(",")[0] for line in topomap.split("# lans")[0].splitlines()[1:]} == {"a", "b", "r1", "c"}
        assert "lan0,255.255.255.0,1" in topomap and "link0,255.255.255.0,1" in topomap
        ltmap = exec_in(name, "c", "cat", f"{boot}/ltmap").stdout
        assert "l r1 c 10000000 0 0.005 link0 droptail" in ltmap
        assert "l b a 100000000 0 0 lan0 droptail" in ltmap
        assert len([line for line in ltmap.splitlines() if line.startswith("l ")]) == 8

        node = json.loads(exec_in(name, "b", "cat", f"{boot}/node.json").stdout)
        assert node["node"] == "b" and node["experiment"] == name and node["interfaces"][0]["segment"] == "lan0"
        hosts = exec_in(name, "a", "cat", f"{boot}/hosts").stdout
        assert hosts == exec_in(name, "a", "cat", "/etc/hosts").stdout
        for node_name in ("a", "b", "r1", "c"):
            assert f"\t{node_name}.{name}.nestbed" in hosts

        # the nickname resolves (to the first experiment address: lan3 has no control network) and is reachable
        resolved = exec_in(name, "a", "getent", "hosts", f"c.{name}.nestbed").stdout.split()[0]
        assert resolved == "10.0.0.2"
        assert "1 received" in exec_in(name, "a", "ping", "-c1", "-W2", f"c.{name}.nestbed").stdout

        # read-only in the node; nothing at /var/emulab in the host's own mount namespace
        assert exec_in(name, "a", "touch", f"{boot}/x", check=False).returncode != 0
        assert not any(" /var/emulab " in line for line in mounts().splitlines())

        # a start command sees its own files: b's `python3 -m http.server 80` serves / from inside node b
        probe = ("import time,urllib.request\n"
                 "for _ in range(50):\n"
                 "  try: print(urllib.request.urlopen('http://b/var/emulab/boot/nickname', timeout=1).read()"
                 ".decode(), end=''); break\n"
                 "  except Exception: time.sleep(0.1)\n")
        assert exec_in(name, "a", "python3", "-c", probe).stdout == f"b.{name}.nestbed\n"
    finally:
        down(name)
    assert not state.exists()
    assert name not in mounts()
    claims = os.listdir("/var/emulab") if os.path.isdir("/var/emulab") else []
    assert f".nestbed-{PREFIX}-{name}" not in claims
    if not emulab_before and not claims:       # unless another experiment on this host still holds it
        assert not os.path.exists("/var/emulab")


def test_two_experiments_share_the_mountpoint(experiments):
    first = up(experiments, "nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n")
    second = up(experiments, "nodes: {x: {commands: ['sleep 600']}}\n")
    try:
        down(first)
        assert os.path.isdir("/var/emulab")
        assert exec_in(second, "x", "cat", "/var/emulab/boot/nickname").stdout == f"x.{second}.nestbed\n"
        assert exec_in(second, "x", "cat", "/var/emulab/boot/ifmap").stdout == ""
    finally:
        down(first)
        down(second)
    for name in (first, second):
        assert not state_dir(name).exists()
        assert name not in mounts()


def test_exec_in_experiment_without_identity_files_still_works(experiments):
    name = experiments.up("nodes: {a: {}}\n")        # plain `nestbed up`: identity only if integrated
    assert exec_in(name, "a", "hostname").stdout.strip() == "a"
    nestbed("down", name)
