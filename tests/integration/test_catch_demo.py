"""The CATCH demo end to end, 5 bots (CI's version of `./run demo`): `nestbed demo` exits 0 with every check of
issue 12 holding, the report is complete, and nothing of the experiment is left after it."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import nestbed, our_namespaces, state_dir

CHECKS_EXPECTED = ("joined", "ping", "round trip", "attack", "legit", "recovery", "forged", "outside", "total time",
                   "down leaves nothing")


@pytest.mark.needs("qemu", "ngircd")
def test_the_catch_demo_with_five_bots_passes_its_checks_and_leaves_nothing(tmp_path):
    report = tmp_path / "report"
    result = nestbed("demo", "--bots", "5", "-o", str(report), check=False, timeout=600)
    output = result.stdout + result.stderr
    summary = json.loads((report / "summary.json").read_text())
    failed = [c for c in summary["checks"] if not c["ok"]]
    assert result.returncode == 0 and not failed, f"{failed}\n{output[-4000:]}"
    for key in ("bots", "bots_joined", "legit_mbps", "attack_mbps_at_target", "command_rtt_ms", "refused",
                "seconds"):
        assert key in summary, key
    assert summary["bots"] == 5 and summary["bots_joined"] == 5
    assert summary["command_rtt_ms"]["p50"] <= 200
    assert 5 <= summary["attack_mbps_at_target"]["during"] <= 10.5
    assert summary["attack_mbps_at_target"]["before"] < 0.1 and summary["attack_mbps_at_target"]["after"] < 0.1
    assert summary["legit_mbps"]["during"] <= 0.5 * summary["legit_mbps"]["before"]
    names = " ".join(c["name"] for c in summary["checks"]).lower()
    for word in CHECKS_EXPECTED:
        assert word in names, (word, names)
    for png in ("joined.png", "target_traffic.png", "legit.png", "propagation.png"):
        data = (report / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    assert "PASS" in (report / "summary.txt").read_text()
    assert "PASS" in output and "FAIL" not in output
    # nothing of it left: the demo's own check above compared processes and namespaces before and after down
    assert our_namespaces("catch") == [] and not state_dir("catch").exists()


@pytest.mark.needs("qemu", "ngircd", "sshd")
def test_the_catch_demo_on_three_emulated_hosts_with_a_physical_target_passes_its_checks(tmp_path):
    """Issue 13's: the same demo over 3 emulated hosts (SSH, VXLAN), the target a physical node, a host of its own."""
    report = tmp_path / "report"
    lab = Path(__file__).resolve().parents[2] / "examples" / "catch" / "lab3.yaml"
    result = nestbed("demo", "--bots", "5", "--cluster", str(lab), "--target", "physical", "-o", str(report),
                     check=False, timeout=600)
    output = result.stdout + result.stderr
    summary = json.loads((report / "summary.json").read_text())
    failed = [c for c in summary["checks"] if not c["ok"]]
    assert result.returncode == 0 and not failed, f"{failed}\n{output[-4000:]}"
    assert "on 3 hosts" in " ".join(output.split()) and "Traceback" not in output
    assert summary["bots_joined"] == 5 and 5 <= summary["attack_mbps_at_target"]["during"] <= 10.5
    merged = sqlite3.connect(report / "catch.sqlite")
    try:                                   # the report's store holds every host's records, with their host
        hosts = {row[0] for row in merged.execute("SELECT DISTINCT host FROM records")}
    finally:
        merged.close()
    assert len(hosts - {"local", ""}) >= 2, hosts
    assert not state_dir("catch").exists()
    assert not [n for n in os.listdir("/run/netns") if "-catch." in n]
