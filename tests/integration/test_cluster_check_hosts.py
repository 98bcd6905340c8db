"""`nestbed cluster check` on emulated hosts (each a namespace with a real sshd, reached over SSH): the path MTU of
every pair measured with DF probes over the underlay (1500: the warning that crossing segments run at 1450;
9000: none), a smaller MTU further on that drops silently found exactly, every host's nestbed the controller's
(another version refused naming both), and nothing left afterwards: no namespace, process or file."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import PREFIX, nestbed
from nestbed import __version__, paths
from nestbed.cluster import check, emulated, underlay
from nestbed.realize import namespaces, preflight

pytestmark = pytest.mark.needs("root", "sshd")


def leftovers(experiment_prefix: str) -> list[str]:
    """Namespaces, state directories and processes of checks (or of one experiment) still on this machine."""
    found = []
    try:
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(f"{PREFIX}-{experiment_prefix}")]
    except FileNotFoundError:
        pass
    root = paths.state_root()
    if root.is_dir():
        found += [f"dir {d}" for d in root.iterdir() if d.name.startswith(experiment_prefix)]
    marker = f"{root}/{experiment_prefix}"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in line:
            found.append(f"process {pid}: {line[:100]}")
    return found


def run_check(tmp_path: Path, text: str, *flags: str) -> subprocess.CompletedProcess:
    (tmp_path / "lab.yaml").write_text(text)
    started = time.monotonic()
    result = nestbed("cluster", "check", "--cluster", str(tmp_path / "lab.yaml"), *flags, check=False, timeout=180)
    print(f"nestbed cluster check {' '.join(flags)}: {time.monotonic() - started:.2f} s")
    assert leftovers("check-") == [], "the check left something"
    return result


def test_three_hosts_on_a_1500_underlay_measure_1500_everywhere_and_warn_of_1450(tmp_path: Path):
    result = run_check(tmp_path, "emulate: 3\nunderlay_mtu: 1500\n", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [h["name"] for h in report["hosts"]] == ["emu0", "emu1", "emu2"]
    for host in report["hosts"]:
        assert host["reached"] and host["emulated"] and host["error"] is None
        assert host["version"] == __version__
        assert host["ssh_address"] == host["where"] and f"{host['where']}/16" in host["addresses"]
        assert set(host["features"]) == {"netem", "htb", "vxlan", "nftables", "kvm"}
        assert host["features"]["vxlan"]["ok"] is True          # this kernel makes them: `up --cluster` needs it
        assert abs(host["clock"]["offset"]) < 0.05              # one machine, one clock
    assert [(tuple(p["hosts"]), p["mtu"], p["exact"]) for p in report["pairs"]] == [
        (("emu0", "emu1"), 1500, True), (("emu0", "emu2"), 1500, True), (("emu1", "emu2"), 1500, True)]
    assert all(set(p["directions"].values()) == {1500} and len(p["directions"]) == 2 for p in report["pairs"])
    assert {"level": "warning", "text": "underlay path MTU 1500 between emu0–emu1, emu0–emu2, emu1–emu2 (< 1550): "
                                        "cross-host segments there run at MTU 1450"} in report["findings"]
    assert report["verdict"] == "warnings"


def test_a_9000_underlay_has_no_mtu_warning_and_the_verdict_follows_this_kernel(tmp_path: Path):
    result = run_check(tmp_path, "emulate: 3\nunderlay_mtu: 9000\n")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for host in ("emu0", "emu1", "emu2"):
        row = next(line for line in lines if line.strip().startswith(host))
        assert "9000 to all 2" in row and __version__ in row, row
    assert not any("MTU" in line for line in lines if line.startswith(("warning", "unusable"))), result.stdout
    # the hosts are namespaces of this machine: their kernel is this one, probed here the same way
    missing = [name for name, works in (("netem", preflight.has_qdisc("netem")), ("htb", preflight.has_qdisc("htb")),
                                        ("nftables", preflight.nftables_problem() is None)) if not works]
    warnings = [line for line in lines if line.startswith("warning:")]
    assert [w.split()[1] for w in warnings] == missing, result.stdout
    assert lines[-1].startswith("verdict: warnings" if missing else "verdict: ok"), result.stdout


@pytest.fixture
def hosts():
    name = f"ck{uuid.uuid4().hex[:6]}"
    cluster = emulated.up(name, 3, underlay_mtu=9000)
    try:
        yield cluster
    finally:
        emulated.down(name)
        assert leftovers(name) == []


def test_a_smaller_mtu_further_on_that_drops_silently_is_found_exactly(hosts):
    # emu1's port of the underlay bridge carries 1400: the hosts' routes still say 9000, and the bridge drops
    # what is larger without a word (no ICMP): only the probes' answers tell
    subprocess.run(["ip", "-n", hosts.underlay_netns, "link", "set", underlay.port_name(1), "mtu", "1400"],
                   check=True)
    started = time.monotonic()
    report = check.check_targets(check.emulated_targets(hosts), underlay_mtu=9000)
    print(f"check of 3 hosts, one behind a 1400 port: {time.monotonic() - started:.2f} s")
    assert {p.hosts: (p.mtu, p.exact) for p in report.pairs} == {
        ("emu0", "emu1"): (1400, True), ("emu0", "emu2"): (9000, True), ("emu1", "emu2"): (1400, True)}
    texts = [f.text for f in report.findings]
    assert "underlay path MTU 1400 between emu0–emu1, emu1–emu2 (< 1550): cross-host segments there run at MTU " \
           "1350" in texts
    assert any("underlay_mtu 9000 is more than the path carries between emu0–emu1, emu1–emu2" in t for t in texts)


def test_a_host_running_another_nestbed_is_refused_naming_both_and_the_others_are_checked(hosts, tmp_path: Path):
    other = tmp_path / "python-other"         # the host's agent believes it is another version
    other.write_text("#!/bin/sh\nexec " + hosts.python + " -c 'import runpy, nestbed; nestbed.__version__ = "
                     "\"0.0.0+other\"; runpy.run_module(\"nestbed.agent.remote\", run_name=\"__main__\")' --stdio\n")
    other.chmod(0o755)
    targets = check.emulated_targets(hosts)
    emu1 = targets[1].transport
    assert emu1 is not None
    targets[1] = replace(targets[1], transport=type(emu1)(emu1.name, replace(emu1.info, python=str(other))))
    report = check.check_targets(targets)
    assert report.verdict == "unusable" and report.exit_code == 1
    assert report.findings[0].level == "unusable"
    assert report.findings[0].text == (f"host emu1 (10.250.0.2): runs nestbed 0.0.0+other, this controller runs "
                                       f"nestbed {__version__}: install nestbed {__version__} there")
    assert [h.name for h in report.hosts if h.reached] == ["emu0", "emu2"]
    assert [p.hosts for p in report.pairs] == [("emu0", "emu2")] and report.pairs[0].mtu == 9000
    for host in hosts.hosts:         # no agent of the check left running on any host
        nsid = namespaces.namespace_id(host.netns)
        assert nsid is not None
        agents = [pid for pid in namespaces.processes_in({nsid})
                  if b"nestbed.agent.remote" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        deadline = time.monotonic() + 5
        while agents and time.monotonic() < deadline:
            time.sleep(0.05)
            agents = [pid for pid in agents if os.path.exists(f"/proc/{pid}")]
        assert agents == [], host.name
