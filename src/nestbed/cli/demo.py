"""`nestbed demo`: a small routed experiment built with the Python API, exercised, and removed.

(The CATCH demo of IRC bots in processes inside qemu VMs replaces this once VM nodes exist.)
"""
from __future__ import annotations

import subprocess
import sys
import time

from rich.console import Console

from nestbed.cluster.local import LocalHost
from nestbed.model import Experiment
from nestbed.plan import compile_plan

DEMO_NAME = "demo"


def demo_topology() -> Experiment:
    exp = Experiment(DEMO_NAME)
    web = exp.process("web", commands=["python3 -m http.server 80"])
    clients = [exp.process(f"client-{i}") for i in range(3)]
    r1, r2 = exp.process("r1", router=True), exp.process("r2", router=True)
    exp.lan("office", [*clients, r1], bandwidth="100Mbit")
    exp.link(r1, r2, name="wan", bandwidth="10Mbit", loss="0.1%")
    exp.lan("dmz", [web, r2], bandwidth="1Gbit")
    return exp


def _run_in(node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nestbed.cli.main", "exec", DEMO_NAME, node, "--", *argv],
                          capture_output=True, text=True, timeout=60)


def run_demo(console: Console, keep: bool) -> int:
    host = LocalHost()
    if host.remove(DEMO_NAME) is not None:
        console.print("removed an earlier demo experiment")
    from nestbed.realize.control import busy_control_subnets
    plan = compile_plan(demo_topology(), busy_control_subnets=busy_control_subnets())
    seconds = host.apply(plan)
    console.print(f"[green]demo is up[/] in {seconds:.2f} s: 3 clients on LAN office — r1 —(wan 10Mbit)— r2 — "
                  f"web on LAN dmz")
    failures = 0
    try:
        for node in ("client-0", "client-2"):
            result = _run_in(node, "ping", "-c2", "-i0.2", "-W2", "web")
            ok = result.returncode == 0
            failures += not ok
            console.print(f"  {node} ping web (3 hops): {'ok' if ok else 'FAILED'}"
                          f" {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr}")
        fetch = ("import time,urllib.request\n"
                 "for _ in range(50):\n"
                 "  try: print(len(urllib.request.urlopen('http://web/', timeout=2).read())); break\n"
                 "  except Exception: time.sleep(0.1)\n")
        result = _run_in("client-1", "python3", "-c", fetch)
        ok = result.returncode == 0 and result.stdout.strip().isdigit()
        failures += not ok
        outcome = f"ok, {result.stdout.strip()} bytes" if ok else "FAILED"
        console.print(f"  client-1 fetches http://web/: {outcome}")
    finally:
        if keep:
            console.print("kept: try 'nestbed status demo', 'nestbed shell demo client-0', then 'nestbed down demo'")
        else:
            started = time.monotonic()
            host.remove(DEMO_NAME)
            console.print(f"demo removed in {time.monotonic() - started:.2f} s (use --keep to explore it)")
    return 1 if failures else 0
