"""The programs linktest runs in nodes, and running them: a pinger per node (all its targets at once, its
result one JSON line) and a TCP transfer (a receiver that says "ready", then the bits per second it got, and a
sender). Tiny Python scripts run with the controller's interpreter (-S): every node and VM guest has it.

They run through the experiment's control (cluster/control.py ExperimentControl): on one host its host agent
(process nodes through its launcher, VM nodes through their guest agents), on a cluster ClusterControl, which
sends each node's program to its host over that host's one SSH channel. The code is the same for both."""
from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nestbed.cluster.control import ExperimentControl

BANDWIDTH_SECONDS = 2.0         # each transfer
ACCEPT_SECONDS = 15.0           # the receiver waits this long for its sender
RECEIVER_SECONDS = ACCEPT_SECONDS + BANDWIDTH_SECONDS + 30    # then it is killed
PING_SECONDS = 120.0            # every pinger
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


def run_all(control: ExperimentControl, items: list[tuple[str, list[str]]],
            timeout: float) -> list[tuple[int, str, str]]:
    """Every (node, argv) at once, through the experiment's control: one run_many (split per host on a cluster,
    one launcher batch per host), or a thread per program where the control has no batches."""
    many = getattr(control, "run_many", None)
    if many is not None:
        return [(int(r["rc"]) if isinstance(r.get("rc"), int) else -1, str(r.get("out") or ""),
                 str(r.get("err") or "") + ("(timed out)" if r.get("timeout") else ""))
                for r in many(items, timeout)]
    with ThreadPoolExecutor(max(1, min(len(items), 64))) as pool:
        return list(pool.map(lambda item: control.run(item[0], item[1], timeout), items))


def ping_all(control: ExperimentControl,
             jobs: dict[str, dict[str, tuple[int, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every source's pinger at once: source → target → {sent, received, rtts, ttls, error}."""
    sources = list(jobs)
    items = [(source, [PYTHON, "-S", "-c", PINGER,
                       json.dumps([[target, count, interval] for target, (count, interval) in jobs[source].items()])])
             for source in sources]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for source, (rc, out, err) in zip(sources, run_all(control, items, PING_SECONDS)):
        try:
            results[source] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            problem = (err or out).strip().splitlines()
            results[source] = {t: {"sent": 0, "received": 0, "rtts": [], "ttls": [],
                                   "error": problem[-1] if problem else f"exit {rc}"} for t in jobs[source]}
    return results


class _Receiver:
    """The transfer's receiver, run through control.exec in a thread: its stdout as it comes, "ready" awaited."""

    def __init__(self, control: ExperimentControl, node: str, argv: list[str]):
        self.out, self.err = bytearray(), bytearray()
        self.rc: int | None = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._work, args=(control, node, argv), daemon=True)
        self.thread.start()

    def _work(self, control: ExperimentControl, node: str, argv: list[str]) -> None:
        try:
            rc = control.exec(node, argv, on_out=self._add, on_err=self.err.extend, timeout=RECEIVER_SECONDS)
        except Exception as error:       # noqa: BLE001 — could not run: its failure, said by the check
            self.err.extend(f"{error}\n".encode())
            rc = -1
        with self.changed:
            self.rc = rc
            self.changed.notify_all()

    def _add(self, data: bytes) -> None:
        with self.changed:
            self.out.extend(data)
            self.changed.notify_all()

    def ready(self, seconds: float) -> bool:
        with self.changed:
            self.changed.wait_for(lambda: b"\n" in self.out or self.rc is not None, seconds)
            return bytes(self.out).split(b"\n", 1)[0].strip() == b"ready"

    def finish(self, seconds: float) -> tuple[str, str]:
        self.thread.join(seconds)
        with self.changed:
            return self.out.decode(errors="replace"), self.err.decode(errors="replace")


def transfer(control: ExperimentControl, sender: str, receiver: str, address: str, port: int) -> tuple[float, str]:
    """Bits per second from sender to receiver's address, or (0, what went wrong)."""
    python = [PYTHON, "-S", "-c", TRANSFER]
    rx = _Receiver(control, receiver, python + ["receive", str(port), str(ACCEPT_SECONDS)])
    if not rx.ready(ACCEPT_SECONDS):
        out, err = rx.finish(5.0)
        return 0.0, f"receiver did not start: {(err or out).strip()[-200:]}"
    rc, out, err = control.run(sender, python + ["send", str(port), address, str(BANDWIDTH_SECONDS)],
                               timeout=BANDWIDTH_SECONDS + 30)
    if rc != 0:
        rx.finish(20.0)
        return 0.0, f"sender failed: {(err or out).strip()[-200:]}"
    out, err = rx.finish(30.0)
    try:
        return float(out.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return 0.0, f"receiver failed: {(err or out).strip()[-200:]}"
