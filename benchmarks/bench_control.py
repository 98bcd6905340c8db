"""Experiment-control benchmark (issue 5): one event fanned out to 1000 nodes, and how fast an event written in a
node reaches a subscriber (what a scenario trigger waits on).

    sudo .venv/bin/python benchmarks/bench_control.py            # 20 LANs of 50 process nodes
    sudo .venv/bin/python benchmarks/bench_control.py --lans 2    # smaller

Fan-out: the host agent's run_many runs `true` in every node at once (what a scenario event on a group of 1000
does); the peer in the same run is the sequential way a Mininet script does it, `ip netns exec NS true` per node,
timed on 100 nodes and scaled. Trigger latency: a program in a node writes an event carrying its own clock
(`nestbed-event`), a subscriber on the host agent receives it; printed: median and worst of 20.
Also: a scenario (`nestbed run`) whose events run `true` on the 1000 host nodes through the runshell agent,
timed by the engine (run_many plus a record per node). Goals: fan-out < 1 s; event to trigger < 100 ms.
(Counter sampling: benchmarks/bench_counters.py.)
"""
from __future__ import annotations

import argparse
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


def scenario_fan_out(nodes: list[str], events: int = 3) -> list[float]:
    """`nestbed run` of an AAL whose events each run `true` on every node (runshell); the engine's own timing
    of each event, from its start to the last node's result stored."""
    import re
    items = []
    for k in range(events):
        items.append(f"    - {{type: event, agent: sh, method: runCommand, args: {{cmd: 'true'}}, trigger: done{k}}}")
        target = ", target: exit" if k == events - 1 else ""
        items.append(f"    - {{type: trigger, triggers: [{{event: done{k}{target}}}]}}")
    aal = (f"streamstarts: [s]\ngroups: {{g: [{', '.join(nodes)}]}}\nagents: {{sh: {{group: g, path: runshell}}}}\n"
           "eventstreams:\n  s:\n" + "\n".join(items) + "\n")
    with tempfile.NamedTemporaryFile("w", suffix=".aal") as handle:
        handle.write(aal)
        handle.flush()
        run = subprocess.run(NESTBED + ["run", NAME, handle.name, "--timeout", "60"], capture_output=True, text=True)
    if run.returncode != 0:
        print(f"scenario failed: {run.stderr.strip() or run.stdout.strip()}")
        return []
    return [float(t) for t in re.findall(r"runCommand on \d+ node\(s\): \d+ true \(([\d.]+) s\)", run.stdout)]


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
        print(f"fan-out to {len(nodes)} nodes (run_many true): right after up {times[0]:.2f} s, then "
              f"{', '.join(f'{t:.2f}' for t in times[1:])}; best {best:.2f} s"
              f" · sequential ip netns exec (Mininet-style), scaled from 100: {sequential:.2f} s "
              f"({sequential / best:.1f}x) · goal < 1 s: {'met' if max(times) < 1 else 'MISSED'} (worst of the three)")

        scenario_seconds = scenario_fan_out([n.name for n in nodes if not n.name.startswith("r")])
        print(f"scenario event → runshell `true` on {len([n for n in nodes if not n.name.startswith('r')])} nodes "
              f"(engine, run_many, 1 record per node): {', '.join(f'{t:.2f}' for t in scenario_seconds)} s · "
              f"goal < 1 s: {'met' if scenario_seconds and max(scenario_seconds) < 1 else 'MISSED'}")
        ok &= bool(scenario_seconds)
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
