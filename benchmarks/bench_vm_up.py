"""VM benchmark (issue 4): `nestbed up` of qemu nodes until every guest agent is ready, one VM and ten together.

    sudo .venv/bin/python benchmarks/bench_vm_up.py            # 1 VM, then 10 VMs on one LAN
    sudo .venv/bin/python benchmarks/bench_vm_up.py --vms 4    # another size for the second run

Wall clock of the whole command (Python start, preflight, control network, TAPs, qemu, guest kernel boot, the
guest agent configuring its NICs and answering over the control network with the credential), then a ping
across the LAN, then `nestbed down`. Also printed: the accelerator qemu used (KVM when it really works, else TCG),
each guest's memory as its agent reports it, and the qemu processes' resident and proportional memory.
Goals on a 2-core machine under TCG: 1 VM ready in ≤ 6 s, 10 VMs in ≤ 25 s (containerlab's VMs take about a
minute; no peer runs here: its VM images need a registry this machine cannot reach).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NESTBED = [sys.executable, "-m", "nestbed.cli.main"]
GOALS = {1: 6.0, 10: 25.0}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(NESTBED + list(args), capture_output=True, text=True)


def memory_of(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of one process."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Rss":
                rss = int(value.split()[0]) * 1024
            elif key == "Pss":
                pss = int(value.split()[0]) * 1024
    except OSError:
        pass
    return rss, pss


def bench(vms: int, workdir: Path) -> bool:
    name = f"benchvm{vms}"
    run("down", name)
    members = ", ".join(f"v{i}" for i in range(vms))
    topology = workdir / f"{name}.yaml"
    topology.write_text(f"name: {name}\nnodes:\n" + "".join(f"  v{i}: {{kind: qemu, memory: 256M}}\n"
                                                          for i in range(vms))
                        + f"lans:\n  lan0: {{members: [{members}]}}\n")
    started = time.perf_counter()
    result = run("up", str(topology))
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        print(f"  {vms} VM(s): up failed: {result.stderr.strip()}")
        return False
    ok = True
    try:
        state = Path(f"/var/lib/nestbed/{name}")
        status = json.loads((state / "status.json").read_text())
        ping = run("exec", name, "v0", "--", "ping", "-c1", "-W3", f"v{vms - 1}") if vms > 1 else None
        ok = ping is None or ping.returncode == 0
        pids = [int((state / "vms" / f"v{i}" / "qemu.pid").read_text()) for i in range(vms)]
        rss, pss = map(sum, zip(*[memory_of(pid) for pid in pids]))
        from nestbed.plan.hostplan import HostPlan
        from nestbed.realize import vms as vm_driver
        from nestbed.realize.state import experiment
        plan = HostPlan.from_json((state / "plan.json").read_text())
        answer = vm_driver.client(experiment(name), plan, plan.vm("v0")).request("ping")
        guest = answer.get("memory", {})
        used = guest.get("MemTotal", 0) - guest.get("MemAvailable", 0)
        says = result.stdout.split(" in ")[-1].split()[0]
        print(f"  {vms:2d} VM(s): ready in {seconds:5.2f} s (nestbed says {says} s)"
              f" · accelerator {status.get('accelerator')} · ping across the LAN "
              f"{'ok' if ok else 'FAILED'}")
        print(f"          qemu memory: {rss / 2**20 / vms:.0f} MiB RSS, {pss / 2**20 / vms:.0f} MiB PSS per VM; "
              f"the guest reports {guest.get('MemTotal', 0) / 2**20:.0f} MiB total, {used / 2**20:.0f} MiB used")
    finally:
        started = time.perf_counter()
        down = run("down", name)
        print(f"          down in {time.perf_counter() - started:.2f} s"
              + ("" if down.returncode == 0 else f" (FAILED: {down.stderr.strip()})"))
    goal = GOALS.get(vms)
    if goal is not None:
        print(f"          goal ≤ {goal:.0f} s: {'met' if seconds <= goal else 'MISSED'}")
    return ok and down.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=10, help="VMs in the second run (default 10)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: VMs need TAP devices and namespaces", file=sys.stderr)
        return 2
    print(f"nestbed VMs on {os.cpu_count()} cores (load before: {os.getloadavg()[0]:.2f})")
    with tempfile.TemporaryDirectory(prefix="nestbed-bench-vm-") as workdir:
        results = [bench(1, Path(workdir)), bench(args.vms, Path(workdir))]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
