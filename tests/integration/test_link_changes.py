"""Runtime link changes and linktest, for real: down stops pings within 100 ms and up restores them, `set`
changes the measured throughput, delay is refused in one line where the host has no netem, linktest passes and
then FAILs with a link down, `status --json` shows each link's state; one VM test (the guest agent's link op)."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from conftest import NESTBED, exec_in, nestbed

LAN3 = """\
nodes:
  a: {}
  b: {}
  r1: {router: true}
  c: {}
links:
  - {ends: [r1, c], bandwidth: 10Mbit, loss: 0.5%}
lans:
  lan0: {members: [a, b, r1], bandwidth: 100Mbit}
"""
RECEIVER = """
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5001)); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept(); total = 0; first = last = None
while True:
    data = conn.recv(65536)
    if not data: break
    last = time.monotonic(); total += len(data)
    if first is None: first = last; total = 0
print(total * 8 / (last - first))
"""
SENDER = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5001)); chunk = b"x" * 65536; end = time.monotonic() + 2
while time.monotonic() < end: s.sendall(chunk)
s.close()
"""
EFFECT_SECONDS = 0.1


def _transfer(name: str, sender: str, receiver: str) -> float:
    server = subprocess.Popen(NESTBED + ["exec", name, receiver, "--", "python3", "-c", RECEIVER],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    exec_in(name, sender, "python3", "-c", SENDER, receiver)
    out, _ = server.communicate(timeout=30)
    return float(out.strip())


def _replies(lines: list[str]) -> list[float]:
    """Reception times of echo replies in `ping -D` output."""
    return [float(m.group(1)) for line in lines if (m := re.match(r"\[(\d+\.\d+)\] \d+ bytes from", line))]


def test_link_down_stops_pings_within_100ms_and_up_restores_them(experiments):
    name = experiments.up("nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n")
    ping = subprocess.Popen(NESTBED + ["exec", name, "a", "--", "ping", "-D", "-n", "-i", "0.005", "-W", "0.05", "b"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        before_down = time.time()
        out = nestbed("link", name, "link0", "down").stdout
        down_returned = time.time()
        assert f"{name} link0: down on 2 members" in out
        time.sleep(0.6)
        before_up = time.time()
        nestbed("link", name, "link0", "up")
        up_returned = time.time()
        time.sleep(0.6)
    finally:
        ping.terminate()
    lines = ping.communicate(timeout=10)[0].splitlines()
    replies = _replies(lines)
    assert any(t < before_down for t in replies), lines[:5]
    late = [t for t in replies if down_returned + EFFECT_SECONDS < t < before_up]
    assert not late, f"{len(late)} replies came more than 100 ms after link down returned"
    back = [t for t in replies if t > before_up]
    assert back, "no replies after link up"
    assert back[0] - up_returned < EFFECT_SECONDS, f"first reply {back[0] - up_returned:.3f} s after up returned"
    # while down, a's pings had no route; up put the connected route back, and exec still works both ways
    assert "1 received" in exec_in(name, "b", "ping", "-c1", "-W1", "a").stdout


def test_up_restores_static_routes_across_a_router(experiments):
    name = experiments.up(LAN3)
    nestbed("link", name, "lan0", "down")
    assert exec_in(name, "a", "ping", "-c1", "-W1", "c", check=False).returncode != 0
    nestbed("link", name, "lan0", "up")
    assert "1 received" in exec_in(name, "a", "ping", "-c1", "-W2", "c").stdout      # a's route via r1 is back
    routes = exec_in(name, "a", "ip", "route").stdout
    assert "via" in routes, routes


def test_set_bandwidth_changes_the_measured_throughput(experiments):
    name = experiments.up("nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b], bandwidth: 10Mbit}]\n")
    nestbed("link", name, "link0", "set", "bandwidth=2Mbit")
    slow = _transfer(name, "a", "b")
    nestbed("link", name, "link0", "set", "bandwidth=20Mbit")
    fast = _transfer(name, "a", "b")
    assert 1.7e6 < slow < 2.3e6, f"{slow / 1e6:.2f} Mbit/s after set bandwidth=2Mbit"
    assert 17e6 < fast < 23e6, f"{fast / 1e6:.2f} Mbit/s after set bandwidth=20Mbit"
    qdiscs = exec_in(name, "b", "tc", "class", "show", "dev", "eth0").stdout
    assert "20Mbit" in qdiscs, qdiscs


def test_set_loss_and_clearing_it(experiments):
    name = experiments.up("nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n")
    nestbed("link", name, "link0", "set", "loss=40%")
    out = exec_in(name, "a", "ping", "-q", "-c", "200", "-i", "0.005", "-W", "1", "b", check=False).stdout
    received = int(out.split(" received")[0].rsplit(" ", 1)[1])
    assert 40 < received < 110, out           # 0.6 × 0.6 of the round trips come back
    nestbed("link", name, "link0", "set", "loss=none")
    out = exec_in(name, "a", "ping", "-q", "-c", "100", "-i", "0.005", "-W", "1", "b").stdout
    assert " 100 received" in out, out


def test_delay_on_a_host_link_is_refused_in_one_line(experiments):
    from nestbed.realize.preflight import has_qdisc
    if has_qdisc("netem"):      # not a missing prerequisite: this kernel cannot show the refusal
        pytest.skip("this kernel has netem")
    name = experiments.up("nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b], bandwidth: 10Mbit}]\n")
    result = nestbed("link", name, "link0", "set", "delay=10ms", check=False)
    assert result.returncode == 1 and not result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "delay needs netem, which this kernel lacks; members a, b are processes on this " \
                               "host" in lines[0], result.stderr
    status = json.loads(nestbed("status", name, "--json").stdout)
    assert status["links"][0]["shaping"]["delay"] is None       # nothing changed


def test_unknown_segment_is_one_line_with_a_suggestion(experiments):
    name = experiments.up("nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n")
    result = nestbed("link", name, "lnk0", "down", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"nestbed: experiment '{name}' has no link or LAN 'lnk0'; did you mean 'link0'?"


def test_status_json_shows_links_with_state_and_shaping(experiments):
    name = experiments.up(LAN3)
    nestbed("link", name, "link0", "down")
    nestbed("link", name, "lan0", "set", "bandwidth=50Mbit", "queue=80")
    status = json.loads(nestbed("status", name, "--json").stdout)
    by_name = {entry["name"]: entry for entry in status["links"]}
    link0, lan0 = by_name["link0"], by_name["lan0"]
    assert link0["kind"] == "link" and link0["state"] == "down" and link0["subnet"] == "10.0.0.0/24"
    assert [e["node"] for e in link0["ends"]] == ["r1", "c"] and link0["ends"][0]["interface"] == "eth0"
    assert link0["shaping"]["bandwidth"] == 10_000_000 and link0["shaping"]["loss"] == 0.005
    assert lan0["kind"] == "lan" and lan0["state"] == "up" and [m["node"] for m in lan0["members"]] == ["a", "b", "r1"]
    assert lan0["shaping"]["bandwidth"] == 50_000_000 and lan0["shaping"]["queue"] == 80
    assert "down" in nestbed("status", name).stdout
    nestbed("link", name, "link0", "up")
    status = json.loads(nestbed("status", name, "--json").stdout)
    assert {e["name"]: e["state"] for e in status["links"]} == {"link0": "up", "lan0": "up"}


def test_linktest_passes_on_lan3_and_fails_with_a_link_down(experiments):
    name = experiments.up(LAN3)
    result = nestbed("linktest", name, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("reach", "route", "bandwidth", "loss"):
        assert re.search(rf"│ {check}\s.*│ ok", result.stdout), (check, result.stdout)
    assert "FAIL" not in result.stdout and "all checks passed" in result.stdout
    assert "delay" in result.stdout      # says what it cannot check (no netem) or checks it
    report = json.loads(nestbed("linktest", name, "--json", "--no-bandwidth", timeout=120).stdout)
    assert report["ok"] and {c["kind"] for c in report["checks"]} == {"reach", "route", "loss"}
    assert any("bandwidth not checked" in note for note in report["not_checked"])

    nestbed("link", name, "link0", "down")
    result = nestbed("linktest", name, "--no-bandwidth", check=False, timeout=120)
    assert result.returncode == 1, result.stdout
    assert re.search(r"│ reach\s+│ link0 .*FAIL", result.stdout), result.stdout
    assert re.search(r"│ reach\s+│ lan0 .*│ ok", result.stdout), result.stdout
    assert re.search(r"│ route .*FAIL", result.stdout) and "checks FAILED" in result.stdout


@pytest.mark.needs("qemu")
def test_link_changes_reach_a_vm_through_its_agent(experiments):
    name = experiments.up("nodes: {a: {}, vm1: {kind: qemu, memory: 256M}}\n"
                          "links: [{ends: [a, vm1], bandwidth: 20Mbit}]\n")
    assert "1 received" in exec_in(name, "a", "ping", "-c1", "-W5", "vm1").stdout
    nestbed("link", name, "link0", "down")
    assert "state DOWN" in exec_in(name, "vm1", "ip", "link", "show", "eth0").stdout
    assert exec_in(name, "vm1", "ping", "-c1", "-W1", "a", check=False).returncode != 0
    nestbed("link", name, "link0", "up")
    assert "1 received" in exec_in(name, "vm1", "ping", "-c1", "-W5", "a").stdout
    nestbed("link", name, "link0", "set", "bandwidth=5Mbit")
    assert "5Mbit" in exec_in(name, "vm1", "tc", "class", "show", "dev", "eth0").stdout
    result = nestbed("linktest", name, check=False, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
