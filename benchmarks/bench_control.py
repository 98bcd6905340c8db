"""Experiment-control benchmark (issue 5): one event fanned out to 1000 nodes, and how fast an event written in a
node reaches a subscriber (what a scenario trigger waits on).

    sudo .venv/bin/python benchmarks/bench_control.py            # 20 LANs of 50 process nodes
    sudo .venv/bin/python benchmarks/bench_control.py --lans 2    # smaller

Fan-out: the host agent's run_many runs `true` in every node at once (what a scenario event on a group of 1000
does); the peer in the same run is the sequential way a Mininet script does it, `ip netns exec NS true` per node,
timed on 100 nodes and scaled. Trigger latency: a program in a node writes an event carrying its own clock
(`nestbed-event`), a subscriber on the host agent receives it; printed: median and worst of 20.
Goals: fan-out < 1 s; event to trigger < 100 ms. (Counter sampling: benchmarks/bench_counters.py.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NESTBED = [sys.executable, "-m", "nestbed.cli.main"]
NAME = "benchctl"


def topology(lans: int, per_lan: int) -> str:
    lines = [f"name: {NAME}", "nodes:"]
    lines += [f"  h{k}: {{count: {per_lan}}}" for k in range(lans)]
    lines += [f"  r{k}: {{router: true}}" for k in range(lans)]
    lines.append("lans:")
    lines += [f"  lan{k}: {{members: [h{k}, r{k}]}}" for k in range(lans)]
    lines.append("  core: {members: [" + ", ".join(f"r{k}" for k in range(lans)) + "]}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lans", type=int, default=20)
    parser.add_argument("--per-lan", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    subprocess.run(NESTBED + ["down", NAME], capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.yaml"
        path.write_text(topology(args.lans, args.per_lan))
        up = subprocess.run(NESTBED + ["up", str(path)], capture_output=True, text=True)
        if up.returncode != 0:
            print(up.stderr)
            return 1
    ok = True
    try:
        from nestbed.agent.hostclient import HostAgentClient
        from nestbed.realize.state import experiment
        client = HostAgentClient(NAME)
        plan = experiment(NAME).load_plan()
        nodes = [n for n in plan.nodes if n.vm is None]
        print(f"{len(nodes)} process nodes on {os.cpu_count()} cores")

        times = []
        for _ in range(3):
            started = time.perf_counter()
            results = client.run_many([{"node": n.name, "argv": ["true"]} for n in nodes], timeout=30)
            times.append(time.perf_counter() - started)
            ok &= all(r["rc"] == 0 for r in results)
        sample = nodes[:100]
        started = time.perf_counter()
        for n in sample:
            subprocess.run(["ip", "netns", "exec", n.netns, "true"], check=True)
        sequential = (time.perf_counter() - started) * len(nodes) / len(sample)
        best = min(times)
        print(f"fan-out to {len(nodes)} nodes (run_many true): best {best:.2f} s, all {', '.join(f'{t:.2f}' for t in times)}"
              f" · sequential ip netns exec (Mininet-style), scaled from 100: {sequential:.2f} s "
              f"({sequential / best:.1f}x) · goal < 1 s: {'met' if best < 1 else 'MISSED'}")

        latencies: list[float] = []
        events = client.subscribe()
        done = threading.Event()

        def listen() -> None:
            for event in events:
                data = event.get("data") or {}
                if event.get("name") == "bench" and "sent" in data:
                    latencies.append(time.time() - float(data["sent"]))
                    if len(latencies) >= 20:
                        done.set()
                        return

        threading.Thread(target=listen, daemon=True).start()
        writer = nodes[0]
        for _ in range(20):
            script = ("import json,os,time; open(os.environ['NESTBED_MAILBOX']+'/events.jsonl','a')"
                      ".write(json.dumps({'event':'bench','data':{'sent':time.time()}})+'\\n')")
            client.run(writer.name, [sys.executable, "-c", script])
            time.sleep(0.05)
        done.wait(10)
        if latencies:
            print(f"event in a node → subscriber: median {statistics.median(latencies) * 1000:.1f} ms, worst "
                  f"{max(latencies) * 1000:.1f} ms over {len(latencies)} · goal < 100 ms: "
                  f"{'met' if max(latencies) < 0.1 else 'MISSED'}")
        else:
            print("event latency: no event arrived")
            ok = False
    finally:
        down = subprocess.run(NESTBED + ["down", NAME], capture_output=True, text=True)
        print(down.stdout.strip() or down.stderr.strip())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
