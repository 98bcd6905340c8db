#!/usr/bin/env python3
"""The etcd engine at scale (issue 14): 1,000 simulated hosts × 100 nodes against one real etcd, with nestbed's
own modules (cluster/etcd/: publish, wait, HostAgent, KeepAlive); then the same plans over SSH fan-out to emulated
hosts (fewer: 20 by default) for comparison. Root for the SSH part only.

    .venv/bin/python benchmarks/bench_etcd.py                          # 1000 hosts, 4 agent processes, SSH on 20
    .venv/bin/python benchmarks/bench_etcd.py --hosts 200 --ssh-hosts 0

Plans are synthesized, since compiling 100,000 nodes takes minutes (design §"Risks"): one real HostPlan of 100
process nodes (5 LANs of 20, a router, static routes) is compiled once; host i's plan is that JSON with every node
renamed h<i>-… and `host` set, so every plan is distinct (no blob is shared by content) and has the size of a
host's own part of a 100-node share. The `others`/hosts_file parts of a multi-host plan are NOT included (the
engine publishes whole HostPlans today; the shared document split of the design is left to do).

Agents: asyncio tasks (HostAgent) in --procs processes, each with 4 connections and ONE keep-alive stream for its
hosts' leases (TTL 5 s); the realizer only journals (nestbed's Journal: a netns entry per node, a veth entry per
interface) into a temporary directory. Controller (this process): nestbed's publish (generation CAS, chunks and
manifest per host, 16 txns in flight) and wait (every status observed == generation), then the aggregation of
every status (`nestbed status`'s path) and its RSS.

SSH: the same kind of plans (one per emulated host) sent over each host's one channel as the argument of a request
its remote agent parses and answers (a delivery without realization, like the journal-only agents).
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from etcd_server import EtcdServer  # noqa: E402
from nestbed.cluster.etcd import publish  # noqa: E402
from nestbed.cluster.etcd.agent import HostAgent  # noqa: E402
from nestbed.cluster.etcd.client import Etcd, KeepAlive  # noqa: E402
from nestbed.plan.hostplan import HostPlan  # noqa: E402

EXP = "bigetcd"
GOALS = {"converge": 5.0, "aggregate": 2.0, "rss_mb": 500.0}


def base_plan(nodes: int = 100) -> str:
    from nestbed.model.loader import build_experiment, parse_yaml
    from nestbed.plan.compile import compile_plan
    lans = nodes // 20
    lines = [f"name: {EXP}", "nodes:"] + [f"  x{k}: {{}}" for k in range(nodes - 1)] + ["  xr: {router: true}"]
    lines.append("lans:")
    for lan in range(lans):
        members = [f"x{k}" for k in range(lan * 20, min(lan * 20 + 20, nodes - 1))] + ["xr"]
        lines.append(f"  lan{lan}: {{members: [{', '.join(members)}]}}")
    text = "\n".join(lines) + "\n"
    return compile_plan(build_experiment(parse_yaml(text, "<bench>"), "<bench>")).to_json()


def host_name(i: int) -> str:
    return f"h{i:04d}"


def plan_for(template: str, i: int) -> bytes:
    text = re.sub(r"\bx(\d+|r)\b", lambda m: f"{host_name(i)}-x{m.group(1)}", template)
    return text.replace('"host":"local"', f'"host":"{host_name(i)}"', 1).encode()


def journal_only(root: Path):  # type: ignore[no-untyped-def]
    from nestbed.realize.journal import Journal

    def realize(plan: HostPlan) -> None:
        journal = Journal(root / f"{plan.host}.jsonl")
        journal.record([{"t": "netns", "name": n.netns} for n in plan.nodes]
                       + [{"t": "veth", "netns": n.netns, "name": i.name} for n in plan.nodes for i in n.interfaces])
    return realize


def agents(url: str, first: int, count: int, ready: mp.Queue, root: str) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        clients = [Etcd([url]) for _ in range(4)]
        for client in clients:
            await client.connect()
        keepalive = KeepAlive(clients[0], 5)
        realize = journal_only(Path(root))
        hosts = [HostAgent(clients[k % 4], host_name(first + k), realize, ident=f"bench:{os.getpid()}")
                 for k in range(count)]
        await asyncio.gather(*(h.announce(keepalive) for h in hosts))
        keepalive.start()
        tasks = [asyncio.create_task(h.serve()) for h in hosts]
        await asyncio.gather(*(h.ready.wait() for h in hosts))
        ready.put(count)
        await asyncio.gather(*tasks)
    asyncio.run(run())


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


async def controller(url: str, plans: dict[str, bytes]) -> dict[str, float]:
    async with Etcd([url]) as etcd:
        started = time.perf_counter()
        out = await publish.publish(etcd, EXP, plans)
        published = time.perf_counter() - started
        await publish.wait(etcd, EXP, list(plans), out.generation, 120)
        converged = time.perf_counter() - started
        mark = time.perf_counter()
        summary = await publish.summary(etcd, EXP)
        aggregated = time.perf_counter() - mark
        assert summary["phases"] == {"ready": len(plans)} and not summary["behind"], summary
        again = time.perf_counter()
        rerun = await publish.publish(etcd, EXP, plans)           # a rerun: nothing new
        assert rerun.written == [] and rerun.generation == out.generation
        await publish.wait(etcd, EXP, list(plans), out.generation, 60)
        rerun_s = time.perf_counter() - again
        return {"publish": published, "converge": converged, "aggregate": aggregated, "bytes": out.bytes,
                "rerun": rerun_s, "rss_mb": rss_mb()}


def over_etcd(hosts: int, procs: int, template: str) -> bool:
    plans = {host_name(i): plan_for(template, i) for i in range(hosts)}
    raw = sum(map(len, plans.values()))
    with EtcdServer() as etcd, tempfile.TemporaryDirectory(prefix="bench-etcd.") as root:
        ctx = mp.get_context("spawn")
        ready = ctx.Queue()
        mark = time.perf_counter()
        children = [ctx.Process(target=agents, args=(etcd.url, p * hosts // procs,
                                                     (p + 1) * hosts // procs - p * hosts // procs, ready, root),
                                daemon=True) for p in range(procs)]
        for child in children:
            child.start()
        waited = 0
        while waited < hosts:
            waited += ready.get(timeout=120)
        print(f"{hosts} agents ready (lease, alive key, listed, watching) in {procs} processes: "
              f"{time.perf_counter() - mark:.2f} s")
        figures = asyncio.run(controller(etcd.url, plans))
        journals = len(list(Path(root).iterdir()))
        for child in children:
            child.kill()
            child.join()
    print(f"{hosts} hosts x 100 nodes ({raw / hosts / 1e3:.0f} KB JSON per host, {figures['bytes'] / 1e6:.1f} MB "
          f"zlib in all): published {figures['publish']:.2f} s; every status at the generation "
          f"{figures['converge']:.2f} s (goal <= {GOALS['converge']:g}); aggregated {hosts} statuses "
          f"{figures['aggregate'] * 1e3:.0f} ms (goal <= {GOALS['aggregate']:g} s); rerun with the same plans "
          f"{figures['rerun']:.2f} s (nothing written); controller RSS {figures['rss_mb']:.0f} MB "
          f"(goal <= {GOALS['rss_mb']:g}); {journals} hosts journaled")
    return (figures["converge"] <= GOALS["converge"] and figures["aggregate"] <= GOALS["aggregate"]
            and figures["rss_mb"] <= GOALS["rss_mb"] and journals == hosts)


def over_ssh(count: int, template: str) -> bool:
    from concurrent.futures import ThreadPoolExecutor

    from nestbed.cluster import emulated
    from nestbed.cluster.ssh import connect_all
    name = "bsshfan"
    mark = time.perf_counter()
    hosts = emulated.up(name, count)
    try:
        made = time.perf_counter() - mark
        transports = hosts.transports()
        mark = time.perf_counter()
        connect_all(transports)
        connected = time.perf_counter() - mark
        plans = {t.name: plan_for(template, k).decode() for k, t in enumerate(transports)}
        mark = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda t: t.request("status", experiment="none", plan=plans[t.name]), transports))
        delivered = time.perf_counter() - mark
        for transport in transports:
            transport.close()
    finally:
        emulated.down(name)
    per_host = connected / count
    print(f"SSH fan-out to {count} emulated hosts: hosts up {made:.2f} s (not counted), connect + agent hello "
          f"{connected:.2f} s, every plan delivered and parsed {delivered:.2f} s; scaled to 1000 hosts at this "
          f"parallelism: about {(connected + delivered) * 1000 / count:.0f} s (one controller, "
          f"{per_host * 1e3:.0f} ms of connection per host)")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--ssh-hosts", type=int, default=20)
    args = parser.parse_args()
    mark = time.perf_counter()
    template = base_plan()
    print(f"template plan: 100 nodes compiled in {time.perf_counter() - mark:.2f} s, {len(template) / 1e3:.0f} KB")
    ok = over_etcd(args.hosts, args.procs, template)
    if args.ssh_hosts:
        if os.geteuid() != 0:
            print("SSH fan-out: needs root (emulated hosts); skipped")
        else:
            import shutil
            tmp = tempfile.mkdtemp(prefix="bench-etcd-state.")
            os.environ.setdefault("NESTBED_STATE_DIR", tmp)
            os.environ.setdefault("NESTBED_PREFIX", "be")
            try:
                ok = over_ssh(args.ssh_hosts, template) and ok
            finally:
                shutil.rmtree(tmp, ignore_errors=True)      # its own state root (emulated.down emptied it)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
