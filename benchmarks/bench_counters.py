#!/usr/bin/env python3
"""Counter sampling benchmark (root only): 1000 process nodes sampled at 1 Hz over netlink, against the naive way.

Brings up N LANs of M process nodes plus a router per LAN (routers on a core LAN; the shape of
bench_up_down.py, 1020 nodes by default), then in one run:
  - opens nestbed's Sampler (one NETLINK_ROUTE + one NETLINK_NETFILTER socket per namespace) and times it;
  - installs the attack (DSCP) counters on every node, standalone and through the sampler, and times both;
  - samples at 1 Hz for --seconds (default 30) with attack counters read too, then 10 s without them; prints
    CPU as % of one core (process_time / wall, this process does nothing else) and per-sample latency;
  - times what a Mininet user does, `ip netns exec NS ip -s -j link` per node, on --naive-subset nodes, and
    prints the CPU it would take for all nodes each second and the ratio against the sampler;
  - writes one sample's rows to a scratch control store (what the host agent adds each second) and times it.
The experiment is removed at the end, also on failure. Goal (issue 5): under 10% of one core at 1000 nodes.

    sudo .venv/bin/python benchmarks/bench_counters.py
    sudo .venv/bin/python benchmarks/bench_counters.py --lans 2 --per-lan 5 --seconds 5    # quick try
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_PERCENT = 10.0
EXPERIMENT = "bench-counters"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def nestbed(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("nestbed")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "nestbed.cli.main"]
    result = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=900)
    if check and result.returncode:
        raise SystemExit(f"nestbed {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def topology_yaml(lans: int, per_lan: int) -> str:
    lines = [f"name: {EXPERIMENT}", "nodes:"]
    lines += [f"  h{k}: {{count: {per_lan}}}" for k in range(lans)]
    lines += [f"  r{k}: {{router: true}}" for k in range(lans)]
    lines.append("lans:")
    lines += [f"  lan{k}: {{members: [h{k}, r{k}]}}" for k in range(lans)]
    lines.append(f"  core: {{members: [{', '.join(f'r{k}' for k in range(lans))}]}}")
    return "\n".join(lines) + "\n"


def sample_for(sampler, seconds: float) -> tuple[float, list[float], int]:
    """Sample at 1 Hz for `seconds`: (CPU % of one core over the window, per-sample latencies, rows per sample)."""
    latencies = []
    rows = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    deadline = wall0
    while True:
        deadline += 1.0
        started = time.perf_counter()
        rows = len(sampler.sample())
        latencies.append(time.perf_counter() - started)
        if deadline - wall0 >= seconds:
            break
        time.sleep(max(0.0, deadline - time.perf_counter()))
    time.sleep(max(0.0, deadline - time.perf_counter()))
    wall = time.perf_counter() - wall0
    return 100.0 * (time.process_time() - cpu0) / wall, latencies, rows


def naive(namespaces: list[str]) -> tuple[float, float]:
    """`ip netns exec NS ip -s -j link` per namespace: (CPU seconds per node incl. children, wall per node)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for netns in namespaces:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "-s", "-j", "link"], capture_output=True, check=True)
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) + (time.process_time() - cpu0)
    return cpu / len(namespaces), wall / len(namespaces)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lans", type=int, default=20)
    parser.add_argument("--per-lan", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--naive-subset", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_counters.py needs root (network namespaces)")
    from nestbed.agent.attack_counters import install_attack_counters, remove_attack_counters
    from nestbed.agent.sampler import Sampler
    from nestbed.agent.store import Store
    from nestbed.realize.state import experiment

    nestbed("down", EXPERIMENT, check=False)
    workdir = Path(tempfile.mkdtemp(prefix="bench-counters-"))
    topology = workdir / f"{EXPERIMENT}.yaml"
    topology.write_text(topology_yaml(args.lans, args.per_lan))
    log(f"up: {args.lans} LANs x {args.per_lan} + {args.lans} routers")
    nestbed("up", str(topology))
    try:
        plan = experiment(EXPERIMENT).load_plan()
        nodes = [(n.name, n.netns) for n in plan.local_nodes]
        interfaces = sum(len(n.interfaces) for n in plan.local_nodes)
        log(f"{len(nodes)} nodes, {interfaces} interfaces")

        started = time.perf_counter()
        standalone = install_attack_counters(nodes)
        install_alone = time.perf_counter() - started
        remove_attack_counters(nodes)

        started = time.perf_counter()
        sampler = Sampler(nodes)
        open_seconds = time.perf_counter() - started
        started = time.perf_counter()
        via_sampler = install_attack_counters(nodes, sampler)
        install_via = time.perf_counter() - started
        assert via_sampler.installed == len(nodes), via_sampler
        first = sampler.sample()
        assert len(first) == interfaces, f"{len(first)} rows for {interfaces} interfaces ({sampler.errors})"
        log(f"sampling {args.seconds:.0f} s at 1 Hz with attack counters ({sampler.attack_state})")
        cpu_attack, lat_attack, rows = sample_for(sampler, args.seconds)
        sampler.close()

        plain = Sampler(nodes, attack=False)
        log("sampling 10 s at 1 Hz without attack counters")
        cpu_plain, lat_plain, _ = sample_for(plain, 10.0)
        plain.close()

        with tempfile.TemporaryDirectory() as scratch:
            store = Store(Path(scratch) / "control.sqlite")
            started = time.perf_counter()
            for _ in range(10):
                store.add_counters(time.time(), first)
            store_write = (time.perf_counter() - started) / 10
            store.close()

        subset = [netns for _node, netns in nodes[:args.naive_subset]]
        log(f"naive: ip netns exec NS ip -s -j link on {len(subset)} nodes")
        naive_cpu, naive_wall = naive(subset)
        naive_percent = 100.0 * naive_cpu * len(nodes)          # CPU seconds per 1 s period, all nodes
        ours_per_node = (cpu_attack / 100.0) / len(nodes)        # CPU seconds per node per sample
        ratio = naive_cpu / ours_per_node

        print(f"\nCounter sampling, {len(nodes)} nodes / {interfaces} interfaces (issue 5 goal: "
              f"< {GOAL_PERCENT:.0f}% of one core at 1 Hz)")
        print(f"  open sockets (2 per namespace):        {ms(open_seconds)}")
        print(f"  install attack counters, standalone:   {ms(install_alone)} ({standalone.installed} namespaces, "
              f"{ms(install_alone / len(nodes))} each)")
        print(f"  install attack counters, via sampler:  {ms(install_via)} ({ms(install_via / len(nodes))} each)")
        print(f"  sampler, with attack counters:         {cpu_attack:.2f}% of one core; per sample median "
              f"{ms(statistics.median(lat_attack))}, max {ms(max(lat_attack))} ({len(lat_attack)} samples, "
              f"{rows} rows)")
        print(f"  sampler, link counters only:           {cpu_plain:.2f}% of one core; per sample median "
              f"{ms(statistics.median(lat_plain))}, max {ms(max(lat_plain))}")
        print(f"  store write of one sample:             {ms(store_write)}")
        print(f"  naive (ip netns exec … ip -s -j link): {ms(naive_cpu)} CPU, {ms(naive_wall)} wall per node "
              f"-> {naive_percent:.0f}% of one core for {len(nodes)} nodes at 1 Hz "
              f"({naive_wall * len(nodes):.1f} s wall per round)")
        print(f"  ratio naive / sampler (CPU per node):  {ratio:.0f}x")
        verdict = "met" if cpu_attack < GOAL_PERCENT else "MISSED"
        print(f"  goal {verdict}: {cpu_attack:.2f}% < {GOAL_PERCENT:.0f}%")
        return 0 if cpu_attack < GOAL_PERCENT else 1
    finally:
        log("down")
        nestbed("down", EXPERIMENT, check=False)


if __name__ == "__main__":
    sys.exit(main())
