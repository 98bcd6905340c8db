"""Boot time of qemu guests: launch to "python ran inside the guest", for 1 VM and for N VMs launched together.

    python benchmarks/bench_vm_boot.py [--vms 10] [--memory 256] [--machine q35] [--accel tcg|kvm] [--repeat 1]

Goals (issue 4, TCG on a 2-core machine): 1 VM <= 6 s, 10 VMs <= 25 s. Also prints the memory footprint:
qemu's RSS on the host and MemTotal/MemAvailable as the guest sees them. Needs root (nothing networked: the
guests have no NIC). Every VM is stopped at the end, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nestbed.realize import guestkit
from nestbed.realize.qemu import accelprobe, cmdline, vmprocess

GOAL_ONE, GOAL_TEN = 6.0, 25.0
TAG = "NESTBED-BENCH" + "-READY"        # split so the handoff echo of the argv does not contain it
PAYLOAD = (
    "import sys, time\n"
    "m = dict(l.split(':', 1) for l in open('/proc/meminfo'))\n"
    "up = open('/proc/uptime').read().split()[0]\n"
    "print('NESTBED-BENCH' + '-READY uptime=%s memtotal=%s memavailable=%s' % (up, m['MemTotal'].split()[0],"
    " m['MemAvailable'].split()[0]), flush=True)\n"
    "time.sleep(600)\n")


def rss_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; PSS shares pages common to several VMs (the kernel image) among them."""
    values = {"Rss:": 0, "Pss:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] in values:
                values[parts[0]] = int(parts[1])
    except OSError:
        pass
    return values["Rss:"], values["Pss:"]


def field(line: str, key: str) -> str:
    for word in line.split():
        if word.startswith(key + "="):
            return word.split("=", 1)[1]
    return "?"


def boot_many(count: int, kit: guestkit.Kit, args: argparse.Namespace, work: Path) -> dict:
    specs = []
    for k in range(count):
        d = work / f"vm{k}"
        d.mkdir(parents=True, exist_ok=True)
        specs.append(cmdline.VmSpec(name=f"bench{k}", memory=args.memory, cpus=1, kernel=kit.kernel,
                                    initrd=kit.initrd, argv=[sys.executable, "-c", PAYLOAD], nics=[],
                                    qmp=d / "qmp.sock", console=d / "console.log", pidfile=d / "qemu.pid",
                                    machine=args.machine, tb_size=args.tb_size))
    start = time.monotonic()
    procs = [vmprocess.launch(spec, args.accel) for spec in specs]
    times: list[float] = [0.0] * count
    lines: list[str] = [""] * count
    rss: list[tuple[int, int]] = [(0, 0)] * count
    errors: list[str] = []

    def watch(k: int) -> None:
        try:
            lines[k] = vmprocess.wait_console(specs[k].console, TAG, args.timeout, procs[k], specs[k].name)
            times[k] = time.monotonic() - start
            rss[k] = rss_kib(procs[k].pid)
        except vmprocess.GuestBootError as err:
            errors.append(str(err))

    try:
        threads = [threading.Thread(target=watch, args=(k,)) for k in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = time.monotonic() - start
    finally:
        with ThreadPoolExecutor(max(1, count)) as pool:
            list(pool.map(lambda kp: vmprocess.stop(kp[0].qmp, kp[1].pid, timeout=5.0, powerdown_wait=0.0),
                          zip(specs, procs)))
        for proc in procs:
            proc.wait()
    if errors:
        raise SystemExit("boot failed: " + "; ".join(errors))
    return {"total": total, "times": times, "rss": rss, "lines": lines}


def report(label: str, result: dict, goal: float) -> None:
    times, lines = result["times"], result["lines"]
    rss = [r for r, _ in result["rss"]]
    pss = [p for _, p in result["rss"]]
    uptimes = [float(field(line, "uptime")) for line in lines if field(line, "uptime") != "?"]
    total_kib = [int(field(line, "memtotal")) for line in lines if field(line, "memtotal") != "?"]
    avail_kib = [int(field(line, "memavailable")) for line in lines if field(line, "memavailable") != "?"]
    verdict = "meets" if result["total"] <= goal else "MISSES"
    print(f"{label}: all ready in {result['total']:.2f} s ({verdict} the goal of {goal:.0f} s); per VM "
          f"min {min(times):.2f} / median {statistics.median(times):.2f} / max {max(times):.2f} s; "
          f"guest uptime at the marker median {statistics.median(uptimes):.2f} s")
    used = [t - a for t, a in zip(total_kib, avail_kib)]
    print(f"  memory: qemu RSS median {statistics.median(rss) / 1024:.0f} MiB (sum {sum(rss) / 1024:.0f} MiB, "
          f"PSS sum {sum(pss) / 1024:.0f} MiB); "
          f"guest MemTotal {statistics.median(total_kib) / 1024:.0f} MiB, MemAvailable "
          f"{statistics.median(avail_kib) / 1024:.0f} MiB, used {statistics.median(used) / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--memory", type=int, default=256, help="MiB per guest")
    parser.add_argument("--machine", default=cmdline.MACHINE)
    parser.add_argument("--accel", choices=("kvm", "tcg"), default=None, help="default: probe")
    parser.add_argument("--tb-size", type=int, default=None, help="TCG translation cache, MiB")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the single-VM boot (median reported)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (qemu reads the host root for the guest; the kit cache is in /var/cache)")
    started = time.monotonic()
    kit = guestkit.ensure_kit()
    print(f"kit: kernel {kit.version} ({kit.source}) {kit.kernel}, initrd {kit.initrd} "
          f"({kit.initrd.stat().st_size // 1024} KiB), ready in {time.monotonic() - started:.2f} s")
    accel, why = accelprobe.accelerator()
    if args.accel is None:
        args.accel = accel
    print(f"accelerator: {args.accel} ({why}); machine {args.machine}, {args.memory} MiB, "
          f"{os.cpu_count()} host cores")
    with tempfile.TemporaryDirectory(prefix="nestbed-bench-vm.") as tmp:
        work = Path(tmp)
        singles = [boot_many(1, kit, args, work / f"one{r}") for r in range(args.repeat)]
        singles.sort(key=lambda r: r["total"])
        report("1 VM", singles[len(singles) // 2], GOAL_ONE)
        if args.vms > 1:
            report(f"{args.vms} VMs launched together", boot_many(args.vms, kit, args, work / "many"),
                   GOAL_TEN if args.vms == 10 else GOAL_TEN * args.vms / 10)


if __name__ == "__main__":
    main()
