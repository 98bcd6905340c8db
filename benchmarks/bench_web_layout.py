"""The web view's layouts (web/layout.py) at 1,000 and 10,000 nodes: sfdp against the grid fallback, the ptopo
packing, a cache miss and a cache hit, and the whole topology JSON as `GET /api/topology` builds it from the cache.
Printed, not asserted. No root, nothing made but a temporary state directory.

    .venv/bin/python benchmarks/bench_web_layout.py                  # 20 and 200 LANs of 50 (1,041 / 10,401 nodes)
    .venv/bin/python benchmarks/bench_web_layout.py --lans 20 --repeat 1

The topology is bench_up_down.py's: LANs of 50 process nodes, a router each, the routers on a core LAN. Same-run
peer: the grid fallback (what the page gets without sfdp). Each figure is the best of --repeat.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench_up_down import topology_yaml  # its 1k/10k shape

from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan
from nestbed.realize.state import experiment
from nestbed.web import describe, layout


def best(repeat: int, work: Callable[[], Any]) -> tuple[float, Any]:
    seconds, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        seconds = min(seconds, time.perf_counter() - started)
    return seconds, result


def bench(lans: int, per_lan: int, repeat: int) -> dict[str, Any]:
    plan: HostPlan = compile_plan(load_topology_text(topology_yaml("bench-layout", lans, per_lan), "bench.yaml"))
    sfdp_s, made = best(repeat, lambda: layout.compute(plan))
    grid_s, _ = best(repeat, lambda: layout.fallback(plan))
    ptopo_s, _ = best(repeat, lambda: layout.ptopo(plan))
    with tempfile.TemporaryDirectory(prefix="bench-layout-") as root:
        os.environ["NESTBED_STATE_DIR"] = root
        state = experiment(plan.experiment)
        state.create()

        def miss() -> layout.Layout:
            (state.directory / layout.CACHE_FILE).unlink(missing_ok=True)
            return layout.cached(state, plan)
        miss_s, _ = best(repeat, miss)
        hit_s, hit = best(repeat, lambda: layout.cached(state, plan))
        topology_s, _ = best(repeat, lambda: describe.topology(plan, {}, layout.cached(state, plan)))
        cache_bytes = (state.directory / layout.CACHE_FILE).stat().st_size
    return {"nodes": len(plan.every_node()), "segments": len(plan.segments), "engine": made.engine,
            "hit_engine": hit.engine, "sfdp": sfdp_s, "grid": grid_s, "ptopo": ptopo_s, "miss": miss_s,
            "hit": hit_s, "topology": topology_s, "bytes": cache_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lans", type=int, nargs="+", default=[20, 200], help="LANs of --per-lan nodes each")
    parser.add_argument("--per-lan", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'nodes':>6} {'segs':>5} {'engine':>6} {'sfdp s':>8} {'grid s':>8} {'sfdp/grid':>9} {'ptopo s':>8} "
          f"{'miss s':>8} {'hit s':>8} {'miss/hit':>8} {'json s':>8} {'cache KiB':>9}")
    ok = True
    for lans in args.lans:
        r = bench(lans, args.per_lan, args.repeat)
        ok = ok and r["engine"] == r["hit_engine"] == "sfdp"
        print(f"{r['nodes']:>6} {r['segments']:>5} {r['engine']:>6} {r['sfdp']:>8.3f} {r['grid']:>8.3f} "
              f"{r['sfdp'] / r['grid']:>8.0f}x {r['ptopo']:>8.3f} {r['miss']:>8.3f} {r['hit']:>8.3f} "
              f"{r['miss'] / r['hit']:>7.0f}x {r['topology']:>8.3f} {r['bytes'] / 1024:>9.0f}")
    print("sfdp: layout.compute (sfdp + ptopo); grid: the fallback (same run); miss: sfdp + cache write; hit: cache "
          "read + ptopo; json: describe.topology from the cache (GET /api/topology's work, link state aside)")
    if not ok:
        print("sfdp was not used (missing or failed): the figures are the grid's", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
