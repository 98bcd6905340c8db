"""Reading NS files (issue 15): `load_topology(exp.ns)` (tclsh in a safe interp, Emulab's semantics, the YAML
loader's checks) against the peer in the same run, the same topology as the YAML `nestbed convert` writes from it
(`load_topology(exp.yaml)`). Printed, not asserted. No root, nothing is made.

    .venv/bin/python benchmarks/bench_nsfile.py                      # 100, 1,000 and 10,000 nodes
    .venv/bin/python benchmarks/bench_nsfile.py --nodes 1000 --repeat 1

The NS file is DETER's containers example scaled: a centre router and LANs of 20 nodes built in Tcl loops, each
node given a start command and a PartitionPass, one LAN member with its own delay, and an `$ns at` event per LAN.
Also printed: the whole corpus (tests/data/ns, every good file) read once, and the interpreter's start alone
(`tclsh` on an empty file), which is the fixed cost of every NS file.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from nestbed.model import load_topology  # noqa: E402
from nestbed.model.nsfile.convert import to_yaml  # noqa: E402

CORPUS = HERE.parent / "tests" / "data" / "ns"


def ns_text(nodes: int) -> str:
    lans = max(1, nodes // 20)
    return f"""set ns [new Simulator]
source tb_compat.tcl
set center [$ns node]
for {{set i 0}} {{$i < {lans}}} {{incr i}} {{
    set members $center
    for {{set j 0}} {{$j < 20}} {{incr j}} {{
        set idx [expr $i * 20 + $j]
        set n($idx) [$ns node]
        tb-set-node-startcmd $n($idx) "sleep 1000"
        tb-add-node-attribute $n($idx) "containers:PartitionPass" [expr $i + 1]
        lappend members $n($idx)
    }}
    set lan($i) [$ns make-lan [join $members " "] 100Mb 0ms]
    tb-set-node-lan-bandwidth $n([expr $i * 20]) $lan($i) 10Mb
    $ns at [expr 10 + $i] "$lan($i) down"
}}
$ns rtproto Static
$ns run
"""


def best(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        mark = time.perf_counter()
        work()
        times.append(time.perf_counter() - mark)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ns.") as tmp:
        empty = Path(tmp) / "empty.tcl"
        empty.write_text("")
        start = best(args.repeat, lambda: subprocess.run(["tclsh", str(empty)], check=True))
        print(f"tclsh start alone: {start * 1e3:.0f} ms")
        good = sorted(p for p in CORPUS.glob("*.ns") if not p.name.startswith("bad-"))
        corpus = best(args.repeat, lambda: [load_topology(p) for p in good])
        print(f"the corpus ({len(good)} files) read: {corpus:.2f} s, {corpus / len(good) * 1e3:.0f} ms a file")
        print(f"{'nodes':>7} {'NS file':>9} {'its YAML':>9} {'NS/YAML':>8}")
        for nodes in args.nodes:
            ns = Path(tmp) / f"bench{nodes}.ns"
            ns.write_text(ns_text(nodes))
            yaml = Path(tmp) / f"bench{nodes}.yaml"
            yaml.write_text(to_yaml(ns))
            exp_ns, exp_yaml = load_topology(ns), load_topology(yaml)
            assert len(exp_ns.expanded_nodes()) == len(exp_yaml.expanded_nodes()) >= nodes
            assert [s.name for s in exp_ns.segments.values()] == [s.name for s in exp_yaml.segments.values()]
            t_ns = best(args.repeat, lambda ns=ns: load_topology(ns))
            t_yaml = best(args.repeat, lambda yaml=yaml: load_topology(yaml))
            print(f"{len(exp_ns.nodes):>7} {t_ns:>8.2f}s {t_yaml:>8.2f}s {t_ns / t_yaml:>7.1f}x")
    print(f"(best of {args.repeat} each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
