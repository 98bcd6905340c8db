"""Identity files (/var/emulab/boot) against ../shared/reference/testbed-files.md, and writing/removing them."""
from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import pytest

from nestbed.model import load_topology_text
from nestbed.plan import HostPlan, compile_plan
from nestbed.plan import identity as pid
from nestbed.plan.identity import (
    ControlInfo,
    IdentityBuilder,
    hosts_with_control,
    identity_files,
)
from nestbed.realize import identity as rid
from nestbed.realize.journal import Journal

LAN3_FILE = Path(__file__).resolve().parents[2] / "examples" / "lan3.yaml"


def plan_of(text: str) -> HostPlan:
    return compile_plan(load_topology_text(text, "t.yaml"))


@pytest.fixture(scope="module")
def lan3() -> HostPlan:
    return plan_of(LAN3_FILE.read_text())


CONTROL = ControlInfo("ctl0", {"r1": "172.16.0.3/16", "c": "172.16.0.4"}, "172.16.0.0/16")


def test_nickname_and_controlif(lan3):
    files = identity_files(lan3, "a")
    assert files["nickname"] == "a.lan3.nestbed\n"
    assert files["controlif"] == "lo\n"                       # no control address: loopback, not an ethN
    assert identity_files(lan3, "a", project="deter")["nickname"] == "a.lan3.deter\n"
    assert identity_files(lan3, "r1", control=CONTROL)["controlif"] == "ctl0\n"
    assert identity_files(lan3, "a", control=CONTROL)["controlif"] == "lo\n"


def test_topomap_lists_every_node_and_segment(lan3):
    text = identity_files(lan3, "a")["topomap"]
    lines = text.splitlines()
    assert lines[0] == "# nodes: vname,links"
    split = lines.index("# lans: vname,mask,cost")
    nodes = dict(line.split(",", 1) for line in lines[1:split])
    assert set(nodes) == {"a", "b", "r1", "c"}
    for node in lan3.nodes:
        pairs = dict(item.split(":") for item in nodes[node.name].split())
        assert pairs == {i.segment: i.address.split("/")[0] for i in node.interfaces}
    lans = [line.split(",") for line in lines[split + 1:]]
    assert sorted(lans) == [["lan0", "255.255.255.0", "1"], ["link0", "255.255.255.0", "1"]]


def ltmap_links(text: str) -> dict[tuple[str, str, str], list[str]]:
    links = {}
    for line in text.splitlines():
        fields = line.split()
        if fields[0] == "l":
            assert len(fields) == 8 and fields[7] == "droptail", line
            key = (fields[1], fields[2], fields[6])
            assert key not in links, line
            links[key] = fields[3:6]
    return links


def test_ltmap_has_both_directions_of_every_pair(lan3):
    text = identity_files(lan3, "c")["ltmap"]
    hosts = [line.split()[1] for line in text.splitlines() if line.startswith("h ")]
    assert hosts == ["a", "b", "r1", "c"]
    links = ltmap_links(text)
    expected = {}
    for seg in lan3.segments:
        for (x, _, _), (y, _, _) in itertools.permutations(seg.members, 2):
            expected[(x, y, seg.name)] = (["10000000", "0", "0.005"] if seg.name == "link0"
                                          else ["100000000", "0", "0"])
    assert links == expected
    assert len(links) == 2 + 6


def test_ltmap_units_and_unshaped_defaults():
    plan = plan_of("name: u\nnodes: {a: {}, b: {}, c: {}}\n"
                   "links: [{ends: [a, b], delay: 20ms, loss: 1%, bandwidth: 1.5Mbit}, {ends: [b, c]}]\n")
    links = ltmap_links(IdentityBuilder(plan).ltmap)
    assert links[("a", "b", "link0")] == ["1500000", "0.02", "0.01"]
    assert links[("b", "c", "link1")] == [str(pid.UNSHAPED_BANDWIDTH), "0", "0"]
    assert links[("c", "b", "link1")] == [str(pid.UNSHAPED_BANDWIDTH), "0", "0"]


def test_ltmap_star_for_huge_lans(monkeypatch):
    plan = plan_of("name: big\nnodes: {h: {count: 6}}\nlans: {lan0: {members: [h]}}\n")
    assert len(ltmap_links(IdentityBuilder(plan).ltmap)) == 30
    monkeypatch.setattr(pid, "LTMAP_FULL_MESH", 4)
    links = ltmap_links(IdentityBuilder(plan).ltmap)
    assert set(links) == {(x, y, "lan0") for k in range(1, 6) for x, y in
                          [("h-0", f"h-{k}"), (f"h-{k}", "h-0")]}


def test_ifmap_matches_interfaces(lan3):
    for node in lan3.nodes:
        lines = identity_files(lan3, node.name, control=CONTROL)["ifmap"].splitlines()
        assert lines == [f"{i.name} {i.address.split('/')[0]} {i.mac}" for i in node.interfaces]
    assert len(identity_files(lan3, "r1")["ifmap"].splitlines()) == 2


def hosts_names(text: str) -> dict[str, str]:
    names = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            address, *aliases = line.split()
            if ":" in address:
                continue                                    # ::1 localhost
            for alias in aliases:
                assert alias not in names, alias
                names[alias] = address
    return names


def test_hosts_has_every_node_and_nickname(lan3):
    names = hosts_names(identity_files(lan3, "a")["hosts"])
    for node in lan3.nodes:
        first = node.interfaces[0].address.split("/")[0]
        assert names[node.name] == first
        assert names[f"{node.name}.lan3.nestbed"] == first          # no control network: first address
        for iface in node.interfaces:
            assert names[f"{node.name}-{iface.segment}"] == iface.address.split("/")[0]
    assert names["localhost"] == "127.0.0.1"

    with_control = hosts_names(hosts_with_control(lan3, CONTROL))
    assert with_control["r1.lan3.nestbed"] == "172.16.0.3"
    assert with_control["c.lan3.nestbed"] == "172.16.0.4"
    assert with_control["a.lan3.nestbed"] == "10.0.1.1"
    assert with_control["r1"] == "10.0.0.1"                         # plain names stay experiment addresses
    assert hosts_with_control(lan3, CONTROL) == identity_files(lan3, "b", control=CONTROL)["hosts"]


def test_node_without_interfaces():
    plan = plan_of("name: lone\nnodes: {a: {}, b: {}, c: {}}\nlinks: [{ends: [a, b]}]\n")
    files = identity_files(plan, "c")
    assert files["ifmap"] == ""
    assert "c,\n" in files["topomap"]
    assert hosts_names(files["hosts"])["c.lone.nestbed"] == "127.0.0.1"
    assert json.loads(files["node.json"])["interfaces"] == []


def test_node_json(lan3):
    data = json.loads(identity_files(lan3, "r1", control=CONTROL)["node.json"])
    assert data["node"] == "r1" and data["kind"] == "process" and data["experiment"] == "lan3"
    assert data["nickname"] == "r1.lan3.nestbed" and data["router"] is True
    assert data["control"] == {"interface": "ctl0", "address": "172.16.0.3", "subnet": "172.16.0.0/16"}
    eth0, eth1 = data["interfaces"]
    assert eth0 == {"name": "eth0", "segment": "link0", "segment_kind": "link", "address": "10.0.0.1",
                    "prefix": 24, "netmask": "255.255.255.0", "subnet": "10.0.0.0/24",
                    "mac": lan3.node("r1").interfaces[0].mac,
                    "shaping": {"bandwidth": 10000000, "delay": None, "jitter": None, "loss": 0.005, "queue": None}}
    assert eth1["segment_kind"] == "lan" and eth1["shaping"]["bandwidth"] == 100000000
    a = json.loads(identity_files(lan3, "a")["node.json"])
    assert a["control"] is None
    assert a["routes"] == [{"destination": r.destination, "gateway": r.gateway, "device": r.device}
                           for r in lan3.node("a").routes]
    assert json.loads(identity_files(lan3, "b")["node.json"])["commands"] == ["python3 -m http.server 80"]


def test_plan_round_trip_gives_same_files(lan3):
    again = HostPlan.from_json(lan3.to_json())
    for node in ("a", "r1"):
        assert identity_files(again, node, control=CONTROL) == identity_files(lan3, node, control=CONTROL)


def test_ten_thousand_nodes_build():
    lans = "\n".join(f"  lan{k}: {{members: [h{k}, r{k}]}}" for k in range(200))
    nodes = "\n".join(f"  h{k}: {{count: 50}}\n  r{k}: {{}}" for k in range(200))
    core = ", ".join(f"r{k}" for k in range(200))
    plan = plan_of(f"name: big\nnodes:\n{nodes}\nlans:\n{lans}\n  core: {{members: [{core}]}}\n")
    assert len(plan.nodes) == 10200
    started = time.perf_counter()
    builder = IdentityBuilder(plan, control=ControlInfo("ctl0", {"r0": "172.16.0.1"}, "172.16.0.0/16"))
    shared = builder.shared_files()
    nicknames = {builder.node_files(node.name)["nickname"] for node in plan.nodes}
    print(f"identity files of {len(plan.nodes)} nodes: {time.perf_counter() - started:.2f} s")   # speed: benchmarks
    assert len(nicknames) == 10200                          # every node its own
    assert shared["ltmap"].count("\n") == 10200 + 200 * 51 * 50 + 200 * 199


# --- on disk (unprivileged: plain directories instead of the tmpfs) -------------------------------------------

def test_write_and_remove(tmp_path, lan3):
    state, emulab = tmp_path / "lan3", tmp_path / "var-emulab"
    state.mkdir()
    (state / "hosts").write_text(lan3.hosts_file)
    hosts_inode = (state / "hosts").stat().st_ino
    root = rid.write_identity(state, lan3, CONTROL, emulab=emulab)
    assert root == state / "nodes"
    for node in lan3.nodes:
        boot = rid.boot_dir(state, node.name)
        assert sorted(os.listdir(boot)) == sorted(pid.FILES)
        expected = identity_files(lan3, node.name, control=CONTROL)
        for name in pid.FILES:
            assert (boot / name).read_text() == expected[name], (node.name, name)
            assert oct((boot / name).stat().st_mode & 0o777) == "0o644"
    # shared files are one inode each
    assert (rid.boot_dir(state, "a") / "ltmap").stat().st_ino == (rid.boot_dir(state, "c") / "ltmap").stat().st_ino
    # the experiment's /etc/hosts gained the nicknames, in place
    assert (state / "hosts").stat().st_ino == hosts_inode
    assert "172.16.0.3\tr1.lan3.nestbed" in (state / "hosts").read_text()
    assert emulab.is_dir() and (emulab / ".nestbed-nb-lan3").exists()

    rid.write_identity(state, lan3, None, emulab=emulab)          # again, without control: replaced
    assert (rid.boot_dir(state, "r1") / "controlif").read_text() == "lo\n"

    entries = Journal(state / "journal.jsonl").entries()
    assert entries[0] == {"t": "identity", "root": str(root), "emulab": str(emulab),
                          "claim": str(emulab / ".nestbed-nb-lan3")}
    rid.remove_identity(entries)
    assert not root.exists() and not emulab.exists()
    rid.remove_identity(entries)                                     # idempotent


def test_emulab_dir_shared_by_experiments_and_foreign_one_kept(tmp_path, lan3):
    emulab = tmp_path / "var-emulab"
    journals = []
    for name in ("one", "two"):
        state = tmp_path / name
        state.mkdir()
        plan = HostPlan.from_json(lan3.to_json())
        plan.experiment = name
        rid.write_identity(state, plan, emulab=emulab)
        journals.append(Journal(state / "journal.jsonl").entries())
    assert sorted(os.listdir(emulab)) == [".nestbed-nb-one", ".nestbed-nb-two"]
    rid.remove_identity(journals[0])
    assert os.listdir(emulab) == [".nestbed-nb-two"]                    # still in use by "two"
    rid.remove_identity(journals[1])
    assert not emulab.exists()

    emulab.mkdir()                                                   # a /var/emulab nestbed did not make
    state = tmp_path / "three"
    state.mkdir()
    rid.write_identity(state, lan3, emulab=emulab, etc_hosts=False)
    assert os.listdir(emulab) == [] and not (state / "hosts").exists()
    rid.remove_identity(Journal(state / "journal.jsonl").entries())
    assert emulab.is_dir() and not (state / "nodes").exists()


def test_without_mount_privilege_plain_directories(tmp_path, lan3, monkeypatch):
    import errno

    def refuse(*args, **kwargs):
        raise OSError(errno.EPERM, "mount: not permitted")
    monkeypatch.setattr(rid.syscalls, "mount", refuse)
    state = tmp_path / "lan3"
    state.mkdir()
    root = rid.write_identity(state, lan3, emulab=tmp_path / "emulab")
    assert not os.path.ismount(root)
    assert (rid.boot_dir(state, "c") / "nickname").read_text() == "c.lan3.nestbed\n"
    rid.remove_identity(Journal(state / "journal.jsonl").entries())
    assert not root.exists() and not (tmp_path / "emulab").exists()
