"""The programs linktest runs in nodes, and running them: a pinger per node (all its targets at once, its
result one JSON line) and a TCP transfer (a receiver that says "ready", then the bits per second it got, and a
sender). Tiny Python scripts run with the controller's interpreter (-S): every node and VM guest has it."""
from __future__ import annotations

import json
import sys
from typing import Any

from nestbed.agent.runners import Runners
from nestbed.plan.hostplan import NodePlan

BANDWIDTH_SECONDS = 2.0         # each transfer
PORT = 5201
PYTHON = sys.executable

PINGER = r"""
import json, re, subprocess, sys
jobs = json.loads(sys.argv[1]); procs = {}
for target, count, interval in jobs:
    procs[target] = subprocess.Popen(["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", target],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
result = {}
for target, proc in procs.items():
    out = proc.communicate()[0]
    seqs, rtts, ttls = set(), [], []
    for line in out.splitlines():
        m = re.search(r"icmp_seq=(\d+) ttl=(\d+) time=([\d.]+)", line)
        if m and "DUP" not in line and m.group(1) not in seqs:
            seqs.add(m.group(1)); ttls.append(int(m.group(2))); rtts.append(float(m.group(3)) / 1000)
    sent = re.search(r"(\d+) packets transmitted", out)
    result[target] = {"sent": int(sent.group(1)) if sent else 0, "received": len(seqs), "rtts": rtts,
                      "ttls": ttls, "error": "" if sent else out.strip()[-200:]}
print(json.dumps(result))
"""

TRANSFER = r"""
import socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
if mode == "receive":
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port)); srv.listen(1); srv.settimeout(float(sys.argv[3]))
    print("ready", flush=True)
    conn, _ = srv.accept(); conn.settimeout(10); total = 0; first = last = None
    while True:
        data = conn.recv(262144)
        if not data: break
        last = time.monotonic(); total += len(data)
        if first is None: first = last; total = 0
    print(total * 8 / (last - first) if first and last > first else 0.0, flush=True)
else:
    s = socket.create_connection((sys.argv[3], port), timeout=5); chunk = b"x" * 65536
    end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end: s.sendall(chunk)
    s.close()
"""


def ping_all(runners: Runners, node: dict[str, NodePlan],
             jobs: dict[str, dict[str, tuple[int, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every source's pinger at once: source → target → {sent, received, rtts, ttls, error}."""
    started = {}
    for source, targets in jobs.items():
        argv = [PYTHON, "-S", "-c", PINGER,
                json.dumps([[target, count, interval] for target, (count, interval) in targets.items()])]
        started[source] = runners.of(node[source]).start(source, argv)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for source, running in started.items():
        rc, out, err = running.finish(120.0)
        try:
            results[source] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            problem = (err or out).strip().splitlines()
            results[source] = {t: {"sent": 0, "received": 0, "rtts": [], "ttls": [],
                                   "error": problem[-1] if problem else f"exit {rc}"} for t in jobs[source]}
    return results


def transfer(runners: Runners, sender: NodePlan, receiver: NodePlan, address: str,
             port: int) -> tuple[float, str]:
    """Bits per second from sender to receiver's address, or (0, what went wrong)."""
    python = [PYTHON, "-S", "-c", TRANSFER]
    rx = runners.of(receiver).start(receiver.name, python + ["receive", str(port), "15"])
    if rx.readline().strip() != "ready":
        rc, out, err = rx.finish(5.0)
        return 0.0, f"receiver did not start: {(err or out).strip()[-200:]}"
    rc, out, err = runners.of(sender).run(sender.name, python + ["send", str(port), address,
                                                                  str(BANDWIDTH_SECONDS)],
                                          timeout=BANDWIDTH_SECONDS + 30)
    if rc != 0:
        rx.finish(20.0)
        return 0.0, f"sender failed: {(err or out).strip()[-200:]}"
    rc, out, err = rx.finish(30.0)
    try:
        return float(out.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return 0.0, f"receiver failed: {(err or out).strip()[-200:]}"
