"""Modify in place (issue 14): a running 1,000-node experiment changed by `nestbed up` of an edited file, against
the same change done by down + up, in the same run. Printed, not asserted.

    sudo flock /work/root.lock .venv/bin/python benchmarks/bench_modify.py            # 50 LANs of 20
    sudo .venv/bin/python benchmarks/bench_modify.py --lans 5                          # smaller

The topology: LAN k holds n{20k} … n{20k+19}; LAN heads are chained by links l{k} at 10Mbit (static routes).
Timed as the CLI does it, in process: load the file, compile with the running plan's pins, diff, apply
(lifecycle.reconcile). 1) l0's bandwidth 10Mbit → 20Mbit (goal ≤ 0.5 s); 2) 10 nodes added to lan0 (goal ≤ 1 s;
the host agent restarts for the new node set). Then down + up of the final file, and the ratio.
Uses its own state directory and object prefix (NESTBED_STATE_DIR, NESTBED_PREFIX=mb) and removes what it made.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

NAME = "benchmod"


def topology(lans: int, per_lan: int, bandwidth: str = "10Mbit", extra: int = 0) -> str:
    """`bandwidth`: l0's (the other links stay at 10Mbit); `extra` nodes x0 … join lan0."""
    lines = [f"name: {NAME}", "nodes:"]
    lines += [f"  n{i}: {{}}" for i in range(lans * per_lan)]
    lines += [f"  x{i}: {{}}" for i in range(extra)]
    lines.append("links:" if lans > 1 else "links: []")
    lines += [f"  - {{name: l{k}, ends: [n{k * per_lan}, n{(k + 1) * per_lan}], "
              f"bandwidth: {bandwidth if k == 0 else '10Mbit'}}}" for k in range(lans - 1)]
    lines.append("lans:")
    for k in range(lans):
        members = [f"n{i}" for i in range(k * per_lan, (k + 1) * per_lan)] + \
            ([f"x{i}" for i in range(extra)] if k == 0 else [])
        lines.append(f"  lan{k}: {{members: [{', '.join(members)}]}}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lans", type=int, default=50)
    parser.add_argument("--per-lan", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_modify needs root (namespaces)", file=sys.stderr)
        return 2
    scratch = tempfile.mkdtemp(prefix="bench-modify.")
    os.environ.setdefault("NESTBED_STATE_DIR", f"{scratch}/state")
    os.environ.setdefault("NESTBED_PREFIX", "mb")
    from nestbed.agent import lifecycle
    from nestbed.model import load_topology_text
    from nestbed.plan import compile_plan
    from nestbed.plan.pins import pins_of
    from nestbed.realize.state import experiment

    def apply(text: str) -> tuple[float, float, lifecycle.Reconciled]:
        started = time.monotonic()
        running = experiment(NAME).load_plan()
        plan = compile_plan(load_topology_text(text, "bench.yaml"), pins=pins_of(running))
        compiled = time.monotonic() - started
        done = lifecycle.reconcile(plan)
        return compiled, time.monotonic() - started, done

    nodes = args.lans * args.per_lan
    base, faster = topology(args.lans, args.per_lan), topology(args.lans, args.per_lan, "20Mbit")
    grown = topology(args.lans, args.per_lan, "20Mbit", extra=10)
    try:
        _, seconds, done = apply(base)
        print(f"up {nodes} nodes, {args.lans} LANs, {args.lans - 1} links: {seconds:.2f} s ({done.action})")
        _, seconds, done = apply(base)
        print(f"same file again: {seconds:.3f} s ({done.action})")
        compiled, bandwidth, done = apply(faster)
        print(f"modify l0 bandwidth 10Mbit → 20Mbit: {bandwidth:.3f} s (compile {compiled:.3f} s; "
              f"{'; '.join(done.diff.summary())}) goal ≤ 0.5 s")
        compiled, added, done = apply(grown)
        print(f"modify +10 nodes in lan0: {added:.3f} s (compile {compiled:.3f} s; agent restarted: "
              f"{done.agent_restarted}) goal ≤ 1 s")
        started = time.monotonic()
        lifecycle.down(NAME)
        down = time.monotonic() - started
        _, up, _ = apply(grown)
        again = down + up
        print(f"the same change by down + up: {again:.2f} s (down {down:.2f} + up {up:.2f}); "
              f"ratio bandwidth {again / bandwidth:.0f}x, +10 nodes {again / added:.0f}x")
    finally:
        lifecycle.down(NAME)
        try:
            os.rmdir(os.environ["NESTBED_STATE_DIR"])
            os.rmdir(scratch)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
