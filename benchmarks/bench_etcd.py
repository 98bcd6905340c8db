#!/usr/bin/env python3
"""The etcd engine at scale (issue 14): 1,000 simulated hosts × 100 nodes against one real etcd, with nestbed's
own modules (cluster/etcd/: sharing, publish, wait, HostAgent, KeepAlive), the plans split (one shared document +
each host's part) against the plans whole; then the same plans over SSH fan-out to emulated hosts (fewer: 20 by
default) for comparison. Root for the SSH part only.

    .venv/bin/python benchmarks/bench_etcd.py                          # 1000 hosts, 4 agent processes, SSH on 20
    .venv/bin/python benchmarks/bench_etcd.py --hosts 200 --real-hosts 20 --ssh-hosts 0

Plans: a real multi-host experiment is compiled (deploy.plan_for on `emulate: R`, --real-hosts, 50 by default):
R hosts × 100 nodes, 5 LANs of 20 a host and a link from each host to the next (cross-host: VXLAN tunnels, others,
the whole experiment's segments and hosts file on every host; design §3's plansize). Measured on those R hosts in
the same run: every host's plan published whole, then split (engine.converge's path): bytes written to etcd and
the time until every status reached the generation, and their ratio.
Compiling 1,000 hosts × 100 nodes takes minutes (design §"Risks"), so the 1,000 hosts are the R-host compile tiled
--hosts/R times, every name renamed per copy (copy k's emuI is emu(kR+I), its nodes n(kR+I)-J …): the shared
document is the copies' shared documents together (segments, hosts file, node order, every node as others list
it: 100,000 nodes), each host's part is its real part renamed. (Each copy is its own ring, so a host's static
routes stay those of an R-host experiment: a real 1,000-host ring's own parts would be bigger.) The split is
published and converged; the whole plans of 1,000 hosts are not (each would carry all 100,000 nodes, tens of MB:
the total is over etcd's 2 GiB quota), so their bytes are computed, by packing three hosts' whole plans (joined
from the split, as an agent does) and scaling to every host.

Agents: asyncio tasks (HostAgent) in --procs processes, each with 4 connections, ONE keep-alive stream for its
hosts' leases (TTL 5 s) and ONE SharedCache (so a shared document is read and parsed once per process, not per
host: 250 copies of 100,000 parsed nodes would not fit; what 1,000 hosts' reads of it cost etcd is measured on
its own, --shared-reads); the realizer only journals (nestbed's Journal: a netns entry per node, a veth entry per
interface) into a temporary directory. Controller (this process): nestbed's publish (generation CAS, the shared
document, then chunks and manifest per host, 32 in flight) and wait (every status observed == generation), then
the aggregation of every status (`nestbed status`'s path) and its RSS.

SSH: the real whole plans (one per emulated host) sent over each host's one channel as the argument of a request
its remote agent parses and answers (a delivery without realization, like the journal-only agents).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from etcd_server import EtcdServer  # noqa: E402
from nestbed.cluster.etcd import blobs, keys, publish, sharing  # noqa: E402
from nestbed.cluster.etcd.agent import HostAgent  # noqa: E402
from nestbed.cluster.etcd.client import Etcd, KeepAlive  # noqa: E402
from nestbed.cluster.etcd.shared_cache import SharedCache  # noqa: E402
from nestbed.plan.hostplan import HostPlan  # noqa: E402

GOALS = {"converge": 5.0, "aggregate": 2.0, "rss_mb": 500.0}
QUOTA = 2 << 30                       # etcd's default --quota-backend-bytes
# emuI, nI-J, lI-K, xI: the topology's names by host (not after a backslash: a JSON escape's "\\n1…")
NAMES = re.compile(r"(?<!\\)\b(emu|n|l|x)(\d+)(?=-\d|\b)")


def topology(hosts: int) -> str:
    lines = ["name: big", "nodes:"] + [f"  n{h}-{i}: {{host: emu{h}}}" for h in range(hosts) for i in range(100)]
    lines.append("lans:")
    lines += [f"  l{h}-{k}: {{members: [{', '.join(f'n{h}-{i}' for i in range(k * 20, k * 20 + 20))}]}}"
              for h in range(hosts) for k in range(5)]
    lines.append("links:")
    lines += [f"  - {{name: x{h}, ends: [n{h}-0, n{(h + 1) % hosts}-1]}}" for h in range(hosts)]
    return "\n".join(lines) + "\n"


def compile_real(hosts: int) -> dict[str, HostPlan]:
    from nestbed.cluster.deploy import plan_for
    from nestbed.model.cluster import load_cluster_text
    from nestbed.model.loader import load_topology_text
    saved = os.environ.get("NESTBED_PREFIX")
    os.environ["NESTBED_PREFIX"] = "b"        # a 1-letter prefix: up to 1,296 emulated hosts' object prefixes
    try:
        return plan_for(load_topology_text(topology(hosts)), load_cluster_text(f"emulate: {hosts}\n")).plans
    finally:
        if saved is None:
            del os.environ["NESTBED_PREFIX"]
        else:
            os.environ["NESTBED_PREFIX"] = saved


def host_name(i: int) -> str:
    return f"emu{i}"


def renamed(text: str, offset: int) -> str:
    return NAMES.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + offset}", text) if offset else text


def tile(cut: sharing.Split, real: int, hosts: int) -> tuple[bytes, dict[str, bytes | None]]:
    """The R-host split as `hosts` hosts: the shared document's lists and hosts file repeated per copy, renamed;
    each host's part its real one renamed."""
    copies = hosts // real
    assert cut.shared is not None and copies * real == hosts, "--hosts must be a multiple of --real-hosts"
    shared = json.loads(cut.shared)
    for name in ("segments", "node_order", "others"):
        text = json.dumps(shared[name], separators=(",", ":"))[1:-1]
        shared[name] = json.loads("[" + ",".join(renamed(text, k * real) for k in range(copies)) + "]")
    shared["hosts_file"] = "".join(renamed(shared["hosts_file"], k * real) for k in range(copies))
    parts: dict[str, bytes | None] = {}
    for k in range(copies):
        for j in range(real):
            parts[host_name(k * real + j)] = renamed(cut.parts[host_name(j)].decode(), k * real).encode()
    return json.dumps(shared, separators=(",", ":")).encode(), parts


def journal_only(root: Path):  # type: ignore[no-untyped-def]
    from nestbed.realize.journal import Journal

    def realize(plan: HostPlan) -> None:
        journal = Journal(root / f"{plan.host}.jsonl")
        journal.record([{"t": "netns", "name": n.netns} for n in plan.nodes]
                       + [{"t": "veth", "netns": n.netns, "name": i.name} for n in plan.nodes for i in n.interfaces])
    return realize


def agents(url: str, names: list[str], ready: mp.Queue, root: str, ttl: int) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        clients = [Etcd([url]) for _ in range(4)]
        for client in clients:
            await client.connect()
        keepalive = KeepAlive(clients[0], ttl)
        realize = journal_only(Path(root))
        cache = SharedCache()
        hosts = [HostAgent(clients[k % 4], name, realize, ident=f"bench:{os.getpid()}", shared=cache)
                 for k, name in enumerate(names)]
        await asyncio.gather(*(h.announce(keepalive, ttl) for h in hosts))
        keepalive.start()
        tasks = [asyncio.create_task(h.serve()) for h in hosts]
        await asyncio.gather(*(h.ready.wait() for h in hosts))
        ready.put(len(names))
        await asyncio.gather(*tasks)
    asyncio.run(run())


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


async def controller(url: str, exp: str, plans: dict[str, bytes | None], shared: bytes | None,
                     rerun: bool = False) -> dict[str, float]:
    """Publish, wait for every status; the figures. `rerun`: also the aggregation, a rerun (nothing written)."""
    async with Etcd([url]) as etcd:
        started = time.perf_counter()
        out = await publish.publish(etcd, exp, plans, shared)
        published = time.perf_counter() - started
        await publish.wait(etcd, exp, list(plans), out.generation, 300)
        figures = {"publish": published, "converge": time.perf_counter() - started, "bytes": out.bytes,
                   "shared": sum(len(c) for c in blobs.pack(shared).chunks) if shared else 0}
        if rerun:
            mark = time.perf_counter()
            summary = await publish.summary(etcd, exp)
            figures["aggregate"] = time.perf_counter() - mark
            assert summary["phases"] == {"ready": len(plans)} and not summary["behind"], summary
            again = time.perf_counter()
            repeat = await publish.publish(etcd, exp, plans, shared)          # a rerun: nothing new
            assert repeat.written == [] and repeat.generation == out.generation and repeat.bytes == 0
            await publish.wait(etcd, exp, list(plans), out.generation, 60)
            figures["rerun"] = time.perf_counter() - again
            figures["rss_mb"] = rss_mb()
        return figures


async def shared_reads(url: str, exp: str, sha: str, count: int, clients: int = 16) -> float:
    """`count` reads of the shared document's chunks (what `count` real hosts' agents cost etcd), 16 clients."""
    conns = [Etcd([url]) for _ in range(clients)]
    for conn in conns:
        await conn.connect()
    gate = asyncio.Semaphore(64)

    async def one(k: int) -> None:
        async with gate:
            found = await conns[k % clients].range_prefix(keys.blob(exp, sha))
            assert found.kvs
    mark = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(count)))
    took = time.perf_counter() - mark
    for conn in conns:
        await conn.close()
    return took


def whole_bytes(shared: bytes, parts: dict[str, bytes | None], sample: int = 3) -> tuple[int, int, float]:
    """The compressed bytes of every host's whole plan (joined from the split as an agent does, then packed as the
    engine published it before the split), from `sample` hosts scaled to all; and the largest raw plan."""
    doc = sharing.parse_shared(shared)
    names = list(parts)
    picked = [names[k * (len(names) - 1) // max(1, sample - 1)] for k in range(sample)]
    packed, raw = [], 0
    mark = time.perf_counter()
    for name in picked:
        sharing.join(doc, parts[name] or b"")
    each = (time.perf_counter() - mark) / len(picked)
    for name in picked:
        joined = sharing.join(doc, parts[name] or b"")
        assert len(joined.every_node()) == len(doc.plan.node_order) and joined.host == name   # the whole experiment
        text = joined.to_json().encode()
        raw = max(raw, len(text))
        packed.append(sum(len(c) for c in blobs.pack(text).chunks))
    return sum(packed) * len(names) // len(picked), raw, each


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} KB"


def over_etcd(hosts: int, procs: int, real: dict[str, HostPlan], reads: int, ttl: int) -> bool:
    cut = sharing.split(real)
    shared_1k, parts_1k = tile(cut, len(real), hosts)
    print(f"tiled to {hosts} hosts: shared document {mb(len(shared_1k))} raw "
          f"({mb(sum(len(c) for c in blobs.pack(shared_1k).chunks))} zlib), each host's part "
          f"{sum(map(len, cut.parts.values())) / len(cut.parts) / 1e3:.0f} KB raw on average")
    whole = {h: p.to_json().encode() for h, p in real.items()}
    with EtcdServer() as etcd, tempfile.TemporaryDirectory(prefix="bench-etcd.") as root:
        ctx = mp.get_context("spawn")
        ready = ctx.Queue()
        mark = time.perf_counter()
        names = [host_name(i) for i in range(hosts)]
        children = [ctx.Process(target=agents, args=(etcd.url, names[p::procs], ready, root, ttl), daemon=True)
                    for p in range(procs)]      # round robin: the real hosts' agents in every process
        for child in children:
            child.start()
        try:
            figures, a, b, journals, read_s = _measured(etcd.url, hosts, procs, ready, real, cut, whole, shared_1k,
                                                        parts_1k, Path(root), reads, mark, ttl)
        finally:
            for child in children:
                child.kill()
                child.join()
    unsplit, biggest, each = whole_bytes(shared_1k, parts_1k)
    ok = _report(hosts, len(real), whole, a, b, figures, journals, unsplit, biggest, reads, read_s)
    print(f"an agent's join of its part with the parsed shared document: {each * 1e3:.0f} ms (the {hosts} simulated "
          f"agents do theirs on this machine's {os.cpu_count()} cores, part of the converge time above)")
    return ok


def _measured(url: str, hosts: int, procs: int, ready: mp.Queue, real: dict[str, HostPlan],  # type: ignore[type-arg]
              cut: sharing.Split, whole: dict[str, bytes | None], shared_1k: bytes, parts_1k: dict[str, bytes | None],
              root: Path, reads: int, mark: float, ttl: int
              ) -> tuple[dict[str, float], dict[str, float], dict[str, float], int, float]:
    waited = 0
    while waited < hosts:
        waited += ready.get(timeout=120)
    print(f"{hosts} agents ready (lease TTL {ttl} s, alive key, listed, watching) in {procs} processes: "
          f"{time.perf_counter() - mark:.2f} s")
    a = asyncio.run(controller(url, "bigwhole", dict(whole), None))
    b = asyncio.run(controller(url, "bigsplit", dict(cut.parts), cut.shared))
    figures = asyncio.run(controller(url, "big1k", parts_1k, shared_1k, rerun=True))
    journals = len(list(root.iterdir()))
    read_s = asyncio.run(shared_reads(url, "big1k", blobs.sha_of(shared_1k), reads)) if reads else 0.0
    return figures, a, b, journals, read_s


def _report(hosts: int, count: int, whole: dict[str, bytes | None], a: dict[str, float], b: dict[str, float],
            figures: dict[str, float], journals: int, unsplit: int, biggest: int, reads: int, read_s: float) -> bool:
    print(f"{count} real hosts x 100 nodes ({sum(map(len, whole.values())) / count / 1e6:.2f} MB JSON a host "
          f"whole), same run: whole plans {mb(a['bytes'])} written, every status at the generation "
          f"{a['converge']:.2f} s; split {mb(b['bytes'])} written (shared document "
          f"{b['shared'] / 1e3:.0f} KB zlib, once), {b['converge']:.2f} s; bytes whole/split "
          f"{a['bytes'] / b['bytes']:.1f}x, converge whole/split {a['converge'] / b['converge']:.1f}x")
    print(f"{hosts} hosts x 100 nodes, split: {mb(figures['bytes'])} written to etcd; published "
          f"{figures['publish']:.2f} s; every status at the generation {figures['converge']:.2f} s (goal <= "
          f"{GOALS['converge']:g}; the shared document read and parsed once per agent process); aggregated "
          f"{hosts} statuses {figures['aggregate'] * 1e3:.0f} ms (goal <= {GOALS['aggregate']:g} s); rerun with "
          f"the same plans {figures['rerun']:.2f} s (nothing written); controller RSS {figures['rss_mb']:.0f} MB "
          f"(goal <= {GOALS['rss_mb']:g}); {journals} hosts journaled")
    print(f"{hosts} hosts x 100 nodes, whole (not published: computed from 3 hosts' whole plans, "
          f"{mb(biggest)} JSON each): {mb(unsplit)} zlib, {unsplit / QUOTA:.1f}x etcd's 2 GiB quota; "
          f"bytes whole/split {unsplit / figures['bytes']:.0f}x")
    if reads:
        print(f"{reads} reads of the shared document ({mb(figures['shared'])} zlib), as {reads} real hosts' "
              f"agents would each read it once (this run's agents shared one read per process): {read_s:.2f} s")
    return (figures["converge"] <= GOALS["converge"] and figures["aggregate"] <= GOALS["aggregate"]
            and figures["rss_mb"] <= GOALS["rss_mb"] and journals == hosts)


def over_ssh(count: int, real: dict[str, HostPlan]) -> bool:
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
        whole = [p.to_json() for p in real.values()]
        plans = {t.name: whole[k % len(whole)] for k, t in enumerate(transports)}
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
    parser.add_argument("--real-hosts", type=int, default=50, help="hosts of the real compile (--hosts: a multiple)")
    parser.add_argument("--shared-reads", type=int, default=None, help="reads of the shared document (--hosts)")
    parser.add_argument("--ttl", type=int, default=30, help="the simulated agents' lease TTL (nestbed's: 5 s)")
    parser.add_argument("--ssh-hosts", type=int, default=20)
    args = parser.parse_args()
    if args.real_hosts < 2 or args.hosts % args.real_hosts:
        print(f"--hosts {args.hosts} must be a multiple of --real-hosts {args.real_hosts} (>= 2)", file=sys.stderr)
        return 2
    mark = time.perf_counter()
    real = compile_real(args.real_hosts)
    print(f"real compile: {args.real_hosts} hosts x 100 nodes in {time.perf_counter() - mark:.2f} s, "
          f"emu0's plan {len(real['emu0'].to_json()) / 1e6:.2f} MB")
    reads = args.hosts if args.shared_reads is None else args.shared_reads
    ok = over_etcd(args.hosts, args.procs, real, reads, args.ttl)
    if args.ssh_hosts:
        if os.geteuid() != 0:
            print("SSH fan-out: needs root (emulated hosts); skipped")
        else:
            import shutil
            tmp = tempfile.mkdtemp(prefix="bench-etcd-state.")
            os.environ.setdefault("NESTBED_STATE_DIR", tmp)
            os.environ.setdefault("NESTBED_PREFIX", "be")
            try:
                ok = over_ssh(args.ssh_hosts, real) and ok
            finally:
                shutil.rmtree(tmp, ignore_errors=True)      # its own state root (emulated.down emptied it)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
