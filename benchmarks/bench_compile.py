"""Compile of a multi-host experiment (issue 14): `deploy.plan_for` (embed + compile_plans) at 1k … 20k nodes, this
tree against a peer tree (main's, before compile was made near-linear), in the same run. Printed, not asserted.

    .venv/bin/python benchmarks/bench_compile.py                              # 10, 50, 100, 200 hosts
    .venv/bin/python benchmarks/bench_compile.py --hosts 10 50 --repeat 1     # quick try
    .venv/bin/python benchmarks/bench_compile.py --peer-src /work/main/src

The topology (etcd-design.md §3): H emulated hosts (cluster file `emulate: H`) × 100 nodes, each host 5 LANs of 20
of its nodes, and a link from each host to the next; static routing. Every figure comes from a fresh
`python -c` process per tree and size, with PYTHONPATH set to that tree's src (the best of --repeat compiles).
No root, nothing is made: only plans. Each worker also prints digests of its host plans' JSON (the segments'
VNIs and the pins that number them left out: issue 14 numbers only crossing segments now), so the run says
whether both trees compiled the same plans: every host's up to 5k nodes, emu0's and the last host's above.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OWN_SRC = HERE.parent / "src"
EVERY_HOST_UP_TO = 50     # hosts: above, only emu0's and the last host's plans are digested (JSON of 8 MB each)

WORKER = r"""
import hashlib, json, sys, time
import nestbed.embed  # noqa: F401  (imported by plan_for on first use: not part of the figure)
from nestbed.cluster import deploy
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
hosts, repeat, every = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lines = ["name: benchcomp", "nodes:"]
lines += [f"  n{h}-{i}: {{host: emu{h}}}" for h in range(hosts) for i in range(100)]
lines.append("lans:")
for h in range(hosts):
    for k in range(5):
        lines.append(f"  l{h}-{k}: {{members: [{', '.join(f'n{h}-{i}' for i in range(k * 20, k * 20 + 20))}]}}")
lines.append("links:")
lines += [f"  - {{name: x{h}, ends: [n{h}-0, n{(h + 1) % hosts}-1]}}" for h in range(hosts)]
exp = load_topology_text("\n".join(lines) + "\n", "bench.yaml")
cluster = load_cluster_text(f"emulate: {hosts}\n", "lab.yaml")
times = []
for _ in range(repeat):
    started = time.perf_counter()
    planned = deploy.plan_for(exp, cluster)
    times.append(time.perf_counter() - started)
def digest(plan):
    data = json.loads(plan.to_json())
    for v in data["vxlans"]:
        v["vni"] = None
    for key in ("vnis", "next_vni"):
        data["pins"].pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
names = list(planned.plans)
chosen = names if hosts <= every else [names[0], names[-1]]
print(json.dumps({"seconds": min(times), "all": times, "digests": {h: digest(planned.plans[h]) for h in chosen},
                  "whole": digest(planned.whole)}))
"""


def run(src: Path, hosts: int, repeat: int, scratch: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "NESTBED_PREFIX": "c",      # 1 letter: up to 1,296 hosts
           "NESTBED_STATE_DIR": f"{scratch}/state"}
    done = subprocess.run([sys.executable, "-c", WORKER, str(hosts), str(repeat), str(EVERY_HOST_UP_TO)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"bench_compile: {src} at {hosts} hosts failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 50, 100, 200], help="× 100 nodes each")
    parser.add_argument("--repeat", type=int, default=3, help="compiles per tree and size (the best is shown)")
    parser.add_argument("--peer-src", type=Path, default=Path("/work/main/src"), help="the peer tree's src")
    args = parser.parse_args()
    if not (args.peer_src / "nestbed").is_dir():
        print(f"bench_compile: no nestbed package under {args.peer_src} (--peer-src)", file=sys.stderr)
        return 2
    print(f"plan_for seconds (best of {args.repeat}); this tree {OWN_SRC}, peer {args.peer_src}")
    print(f"{'nodes':>7} {'hosts':>5} {'this':>8} {'peer':>8} {'peer/this':>9}  same plans")
    same_everywhere = True
    with tempfile.TemporaryDirectory(prefix="bench-compile.") as scratch:
        for hosts in args.hosts:
            own = run(OWN_SRC, hosts, args.repeat, scratch)
            peer = run(args.peer_src, hosts, args.repeat, scratch)
            same = own["digests"] == peer["digests"] and own["whole"] == peer["whole"]
            same_everywhere &= same
            checked = "every host" if hosts <= EVERY_HOST_UP_TO else "emu0 + last"
            print(f"{hosts * 100:>7} {hosts:>5} {own['seconds']:>8.3f} {peer['seconds']:>8.3f} "
                  f"{peer['seconds'] / own['seconds']:>8.1f}x  {'yes' if same else 'NO'} ({checked}, VNIs aside)",
                  flush=True)
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
