#!/usr/bin/env python3
"""Up/down benchmark: nestbed against Mininet 2.3 on the same ~1000-node shape, in one run (root only).

nestbed: N LANs of M process nodes (a counted group per LAN) plus a router per LAN, the routers on a core
LAN, static routing; brought up and down with the `nestbed` command, timed from the outside.
Mininet: N LinuxBridge switches of M hosts on a core switch, no controller, run by /usr/bin/python3 (Debian's
`mininet` package) in a subprocess; build+start and stop are timed inside it.
Both check connectivity end to end with real pings. Prints a table and the ratios against the goals of
issue 11 (up >= 15x, down >= 25x faster). `--nodes-10k` adds the 10,000-node shape (nestbed only: up <= 20 s,
down <= 10 s) and what it costs in memory per node (the agent's and launcher's RSS, the kernel's slab and
per-CPU memory per namespace).

    sudo .venv/bin/python benchmarks/bench_up_down.py                     # 1000 nodes, both peers
    sudo .venv/bin/python benchmarks/bench_up_down.py --nodes-10k         # also 10,000 nodes (nestbed)
    sudo .venv/bin/python benchmarks/bench_up_down.py --lans 2 --per-lan 5 --skip-mininet   # quick try
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

UP_GOAL = 15.0            # nestbed up at least this many times faster than Mininet
DOWN_GOAL = 25.0          # nestbed down at least this many times faster
UP_GOAL_10K = 20.0        # seconds for 10,000 nodes
DOWN_GOAL_10K = 10.0
BRIDGE_MAX_PORTS = 1024   # a Linux bridge holds at most this many ports (BR_MAX_PORTS)
MININET_PYTHON = "/usr/bin/python3"
EXPERIMENT = "bench-updown"       # names only this script uses, so it never touches anyone else's experiment
EXPERIMENT_10K = "bench-10k"


@dataclass
class Result:
    peer: str
    nodes: str
    up: float | None = None             # seconds, wall clock as a user waits for it
    down: float | None = None
    reported_up: float | None = None    # the peer's own figure (nestbed's summary line; Mininet: same as up)
    reported_down: float | None = None
    pings: list[tuple[str, str, bool, str]] = field(default_factory=list)   # (src, dst, ok, how)
    notes: list[str] = field(default_factory=list)
    bridges_ok: bool = True             # --nodes-10k: no bridge at the port limit
    memory: list[str] = field(default_factory=list)     # --nodes-10k: memory per node, as lines to print

    @property
    def connected(self) -> bool:
        return bool(self.pings) and all(ok for _, _, ok, _ in self.pings)


# ---------------------------------------------------------------------------------------------------- helpers

def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], timeout: float = 600) -> tuple[int, str, str, float]:
    """Run a command; returns (exit code, stdout, stderr, wall seconds)."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        out = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        return 124, out, f"timed out after {timeout:.0f} s", time.perf_counter() - started
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started


def one_line(text: str, limit: int = 300) -> str:
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit] + " …"


def find_nestbed() -> str:
    beside = Path(sys.executable).with_name("nestbed")
    if beside.exists():
        return str(beside)
    found = shutil.which("nestbed")
    if found:
        return found
    venv = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "nestbed"
    if venv.exists():
        return str(venv)
    sys.exit("bench: no `nestbed` command found (install the package, e.g. pip install -e .)")


def compile_nestbed(executable: str) -> None:
    """Byte-compile nestbed's modules with the interpreter the command runs, as installing a package does (and
    as Debian did for Mininet's). Without it, where PYTHONDONTWRITEBYTECODE is set or the sources are read-only,
    every `nestbed` command and each host agent and launcher it starts compiles ~150 modules first."""
    with open(executable, "rb") as script:
        first = script.readline().decode(errors="replace").strip()
    python = first[2:].strip() if first.startswith("#!") else sys.executable
    code, out, err, _ = run([python, "-c", "import nestbed, os; print(os.path.dirname(nestbed.__file__))"])
    if code == 0:
        code, out, err, _ = run([python, "-m", "compileall", "-q", out.strip()])
    if code != 0:
        log(f"could not byte-compile nestbed ({one_line(err or out)}); figures include compiling it")


def reported_seconds(text: str) -> float | None:
    """nestbed's summary lines end in 'in 1.23 s'."""
    match = re.search(r"\bin ([0-9]+(?:\.[0-9]+)?) s\b", text)
    return float(match.group(1)) if match else None


def _netns_objects() -> int | None:
    """Live network namespaces per the slab allocator (the kernel frees namespaces asynchronously)."""
    try:
        with open("/proc/slabinfo") as slabinfo:
            for line in slabinfo:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _cpu_busy(interval: float) -> float:
    """Fraction of CPU time not idle over the interval, all CPUs."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]          # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def settle(timeout: float = 120.0) -> float:
    """Wait until the kernel has finished the previous peer's deferred work (namespace reclaim, udev), so
    the next peer is not charged for it: namespace count unchanged for 2 s and CPUs mostly idle.
    Returns the seconds waited."""
    started = time.perf_counter()
    last, stable_since = _netns_objects(), time.perf_counter()
    while time.perf_counter() - started < timeout:
        busy = _cpu_busy(0.5)
        now = _netns_objects()
        if now != last:
            last, stable_since = now, time.perf_counter()
        if time.perf_counter() - stable_since >= 2.0 and busy < 0.25:
            break
    else:
        log(f"the machine is still busy after {timeout:.0f} s (CPU {busy:.0%}); figures may be off")
    return time.perf_counter() - started


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    values = {}
    with open("/proc/meminfo") as lines:
        for line in lines:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    return values


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as lines:
        return next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)


def child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(word) for word in children.read().split()]
    except OSError:
        return []


KERNEL_MEMORY = ("Slab", "Percpu", "KernelStack", "PageTables", "Shmem")


def memory_report(before: dict[str, int], after: dict[str, int], name: str, nodes: int,
                  agent_pid: int | None) -> list[str]:
    """What the experiment costs in memory, per node: the kernel's (slab, per-CPU: namespaces, links, routes;
    shmem: the tmpfs of identity files and mailboxes) from /proc/meminfo before and after `up`, and the RSS of
    the host agent and its launcher."""
    namespaces = sum(1 for entry in os.listdir("/run/netns") if entry.startswith(f"nb-{name}."))
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in KERNEL_MEMORY}
    kernel = delta["Slab"] + delta["Percpu"]
    lines = [f"kernel: slab {delta['Slab'] / 1024:+.0f} MiB, per-CPU {delta['Percpu'] / 1024:+.0f} MiB for "
             f"{namespaces} namespaces: {kernel / max(1, namespaces):.0f} KiB per namespace "
             f"(kernel stacks {delta['KernelStack'] / 1024:+.0f} MiB, page tables {delta['PageTables'] / 1024:+.0f}"
             f" MiB, shmem/tmpfs {delta['Shmem'] / 1024:+.0f} MiB)"]
    if agent_pid is not None:
        agent = rss_kib(agent_pid)
        launchers = [rss_kib(pid) for pid in child_pids(agent_pid)]
        together = agent + sum(launchers)
        lines.append(f"host agent {agent / 1024:.0f} MiB RSS, launcher {sum(launchers) / 1024:.0f} MiB RSS: "
                     f"{together / max(1, nodes):.1f} KiB per node")
    used = (before["MemAvailable"] - after["MemAvailable"])
    lines.append(f"MemAvailable {-used / 1024:+.0f} MiB over {nodes} nodes: {used / max(1, nodes):.0f} KiB per node")
    return lines


# ---------------------------------------------------------------------------------------------------- nestbed

def topology_yaml(name: str, lans: int, per_lan: int) -> str:
    """lanK: the group hK (count per_lan, hK-0 … ) and router rK; core: every router."""
    lines = [f"# generated by benchmarks/bench_up_down.py: {lans} LANs x {per_lan} nodes + {lans} routers",
             f"name: {name}", "nodes:"]
    lines += [f"  h{k}: {{count: {per_lan}}}" for k in range(lans)]
    lines += [f"  r{k}: {{router: true}}" for k in range(lans)]
    lines.append("lans:")
    lines += [f"  lan{k}: {{members: [h{k}, r{k}]}}" for k in range(lans)]
    lines.append(f"  core: {{members: [{', '.join(f'r{k}' for k in range(lans))}]}}")
    lines.append("routing: static")
    return "\n".join(lines) + "\n"


class Nestbed:
    def __init__(self, executable: str):
        self.exe = executable

    def __call__(self, *args: str, timeout: float = 600) -> tuple[int, str, str, float]:
        return run([self.exe, *args], timeout=timeout)

    def experiments(self) -> list[dict]:
        code, out, err, _ = self("status", "--json", timeout=120)
        if code != 0:
            raise RuntimeError(f"nestbed status --json failed ({code}): {one_line(err or out)}")
        return json.loads(out).get("experiments", [])

    def ensure_absent(self, name: str) -> None:
        """A stale experiment of ours (an earlier interrupted run) is removed; others are left alone."""
        for exp in self.experiments():
            if exp.get("name") == name:
                log(f"removing stale experiment {name} ({exp.get('state')}) left by an earlier run")
                code, out, err, _ = self("down", name, timeout=900)
                if code != 0:
                    raise RuntimeError(f"nestbed down {name} failed ({code}): {one_line(err or out)}")

    def node_json(self, name: str) -> dict:
        code, out, err, _ = self("status", name, "--json", timeout=300)
        if code != 0:
            raise RuntimeError(f"nestbed status {name} --json failed ({code}): {one_line(err or out)}")
        return json.loads(out)

    def ping(self, name: str, src: str, dst: str, status: dict | None) -> tuple[bool, str]:
        """By name first (/etc/hosts in the node); by address when the name fails."""
        code, out, err, _ = self("exec", name, src, "--", "ping", "-c1", "-W2", dst, timeout=60)
        if code == 0:
            return True, "by name"
        detail = f"by name: exit {code}: {one_line(err or out, 160)}"
        address = None
        for node in (status or {}).get("nodes", []):
            if node.get("name") == dst and node.get("interfaces"):
                address = node["interfaces"][0]["address"].split("/")[0]
        if address is None:
            return False, detail + "; no address known for " + dst
        code, out, err, _ = self("exec", name, src, "--", "ping", "-c1", "-W2", address, timeout=60)
        if code == 0:
            return True, f"by address {address} only ({detail})"
        return False, f"{detail}; by address {address}: exit {code}: {one_line(err or out, 160)}"


def bridge_ports(nb: Nestbed, topology: Path, name: str, status: dict) -> dict[str, int] | None:
    """Ports per bridge of the experiment, read from the kernel. The namespaces holding bridges come from
    `nestbed plan --json` where it names them, plus every namespace named after the experiment that is not a
    node's (so the check does not depend on one plan format). None when no bridge was found."""
    namespaces: set[str] = set()
    code, out, _, _ = nb("plan", str(topology), "--json", timeout=300)
    if code == 0:
        try:
            plan = json.loads(out)
            namespaces.update(b["netns"] for b in plan.get("bridges", []) if isinstance(b, dict) and b.get("netns"))
            for key in ("switch_netns", "switch_namespaces"):
                value = plan.get(key)
                namespaces.update([value] if isinstance(value, str) else list(value or []))
        except (json.JSONDecodeError, TypeError, AttributeError):
            pass
    node_ns = {node.get("netns") for node in status.get("nodes", [])}
    _, out, _, _ = run(["ip", "netns", "list"])
    namespaces.update(word for word in (line.split()[0] for line in out.splitlines() if line.split())
                      if name in word and word not in node_ns)
    ports: dict[str, int] = {}
    for ns in sorted(namespaces):
        code, out, _, _ = run(["ip", "-n", ns, "-d", "-j", "link", "show"], timeout=120)
        if code != 0:
            continue
        links = json.loads(out or "[]")
        bridges = {link["ifname"] for link in links
                   if link.get("linkinfo", {}).get("info_kind") == "bridge"}
        for bridge in bridges:
            ports[f"{ns}/{bridge}"] = 0
        for link in links:
            if link.get("master") in bridges:
                ports[f"{ns}/{link['master']}"] += 1
    return ports or None


def bench_nestbed(nb: Nestbed, workdir: Path, name: str, lans: int, per_lan: int,
                  check_bridges: bool = False, measure_memory: bool = False) -> Result:
    nodes = lans * per_lan + lans
    result = Result("nestbed", f"{nodes} ({lans * per_lan} hosts + {lans} routers)")
    topology = workdir / f"{name}.yaml"
    topology.write_text(topology_yaml(name, lans, per_lan))
    nb.ensure_absent(name)
    others = [e.get("name") for e in nb.experiments() if e.get("name") != name]
    if others:
        result.notes.append(f"other experiments present during the run (may slow it): {', '.join(others)}")
    log(f"nestbed up {topology}  ({nodes} nodes)")
    memory_before = meminfo()
    code, out, err, seconds = nb("up", str(topology), timeout=1800)
    if code != 0:
        result.notes.append(f"`nestbed up {topology}` exited {code}: {one_line(err or out)}")
        nb.ensure_absent(name)            # up rolls back on failure; make sure, so the next run starts clean
        return result
    result.up, result.reported_up = seconds, reported_seconds(out)
    log(one_line(out, 200) + f"  [wall {seconds:.2f} s]")
    try:
        status = None
        if measure_memory:
            status = nb.node_json(name)
            result.memory = memory_report(memory_before, meminfo(), name, nodes,
                                          (status.get("agent") or {}).get("pid"))
        last, mid = lans - 1, lans // 2
        pairs = [("h0-0", f"h{last}-{per_lan - 1}"), (f"h{mid}-{per_lan // 2}", f"h0-{per_lan - 1}")]
        for src, dst in pairs:
            ok, how = nb.ping(name, src, dst, status)
            if not ok and status is None:     # fetch addresses only when a name failed
                status = nb.node_json(name)
                ok, how = nb.ping(name, src, dst, status)
            result.pings.append((src, dst, ok, how))
            log(f"ping {src} -> {dst}: {'ok' if ok else 'FAILED'} ({how})")
        if check_bridges:
            ports = bridge_ports(nb, topology, name, status or nb.node_json(name))
            if ports is None:
                result.bridges_ok = False
                result.notes.append("bridge check: found no bridge of the experiment")
            else:
                worst = max(ports, key=ports.__getitem__)
                verdict = "ok" if ports[worst] < BRIDGE_MAX_PORTS else "OVER THE LIMIT"
                result.notes.append(f"bridges: {len(ports)}, most ports on one: {ports[worst]} ({worst}); "
                                    f"limit {BRIDGE_MAX_PORTS}: {verdict}")
                result.bridges_ok = ports[worst] < BRIDGE_MAX_PORTS
    finally:
        log(f"nestbed down {name}")
        code, out, err, seconds = nb("down", name, timeout=1800)
        if code != 0:
            result.notes.append(f"`nestbed down {name}` exited {code}: {one_line(err or out)}")
        else:
            result.down, result.reported_down = seconds, reported_seconds(out)
            log(one_line(out, 200) + f"  [wall {seconds:.2f} s]")
            code, out, _, _ = nb("down", name, timeout=120)      # idempotent: must say there is nothing to do
            if code != 0 or "nothing to do" not in out:
                result.notes.append(f"second `nestbed down {name}`: exit {code}: {one_line(out)}")
    return result


# ---------------------------------------------------------------------------------------------------- Mininet

MININET_SCRIPT = r'''
import json, sys, time
from functools import partial
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo

lans, per_lan = int(sys.argv[1]), int(sys.argv[2])

class Shape(Topo):
    """Switch s1 … sN of per_lan hosts each, every switch on the core switch s(N+1)."""
    def build(self):
        core = self.addSwitch("s%d" % (lans + 1))
        host = 0
        for k in range(1, lans + 1):
            switch = self.addSwitch("s%d" % k)
            self.addLink(switch, core)
            for _ in range(per_lan):
                host += 1
                self.addLink(self.addHost("h%d" % host), switch)

setLogLevel("warning")
result = {"pings": []}
net = None
try:
    started = time.perf_counter()
    net = Mininet(topo=Shape(), switch=partial(LinuxBridge, stp=False), controller=None,
                  autoSetMacs=True, build=False)
    net.build()
    result["build_s"] = time.perf_counter() - started
    net.start()
    result["up_s"] = time.perf_counter() - started
    result["start_s"] = result["up_s"] - result["build_s"]
    total = lans * per_lan
    for src, dst in (("h1", "h%d" % total), ("h%d" % ((lans // 2) * per_lan + per_lan // 2 + 1), "h%d" % per_lan)):
        a, b = net.get(src), net.get(dst)
        out = a.cmd("ping -c1 -W2 %s" % b.IP())
        result["pings"].append([src, dst, " 0% packet loss" in out, b.IP()])
    result["hosts"], result["switches"] = len(net.hosts), len(net.switches)
except Exception as error:
    result["error"] = "%s: %s" % (type(error).__name__, error)
finally:
    if net is not None:
        stopped = time.perf_counter()
        try:
            net.stop()
            result["down_s"] = time.perf_counter() - stopped
        except Exception as error:
            result["error"] = result.get("error", "") + " stop: %s: %s" % (type(error).__name__, error)
    print("MININET-RESULT " + json.dumps(result), flush=True)
'''


def bench_mininet(lans: int, per_lan: int) -> Result:
    switches = [f"s{k}" for k in range(1, lans + 2)]
    result = Result("Mininet 2.3", f"{lans * per_lan} ({lans * per_lan} hosts + {lans + 1} switches)")
    if not os.path.exists(MININET_PYTHON) or run([MININET_PYTHON, "-c", "import mininet.net"])[0] != 0:
        result.notes.append(f"Mininet not importable by {MININET_PYTHON} (apt-get install mininet)")
        return result
    # LinuxBridge.start() runs `brctl delbr` on its own name first: never let it remove someone's bridge.
    taken = [s for s in switches if run(["ip", "link", "show", "dev", s])[0] == 0]
    if taken:
        result.notes.append(f"skipped: interfaces {', '.join(taken[:5])} already exist in the root namespace "
                            f"(a stale Mininet run? remove them or run `mn -c` yourself)")
        return result
    log(f"Mininet: {lans} LinuxBridge switches x {per_lan} hosts + core switch (no controller)")
    code, out, err, wall = run([MININET_PYTHON, "-c", MININET_SCRIPT, str(lans), str(per_lan)], timeout=3600)
    line = next((row for row in out.splitlines() if row.startswith("MININET-RESULT ")), None)
    if line is None:
        result.notes.append(f"Mininet subprocess exited {code} without a result: {one_line(err or out)}")
        return result
    data = json.loads(line[len("MININET-RESULT "):])
    result.up, result.down = data.get("up_s"), data.get("down_s")
    result.reported_up, result.reported_down = result.up, result.down
    result.pings = [(s, d, ok, f"by address {ip}") for s, d, ok, ip in data["pings"]]
    if "build_s" in data and "start_s" in data:
        result.notes.append(f"build {data['build_s']:.2f} s + start {data['start_s']:.2f} s; "
                            f"subprocess wall {wall:.1f} s")
    if "error" in data:
        result.notes.append("error: " + data["error"])
    log(f"Mininet: up {fmt(result.up)} s, down {fmt(result.down)} s, pings "
        + ", ".join(f"{s}->{d} {'ok' if ok else 'FAILED'}" for s, d, ok, _ in result.pings))
    return result


# ---------------------------------------------------------------------------------------------------- report

def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(results: list[Result]) -> None:
    rows = [("peer", "nodes", "up s", "down s", "connectivity ok")]
    for r in results:
        up = fmt(r.up) + (f" ({fmt(r.reported_up)})" if r.peer == "nestbed" and r.reported_up else "")
        down = fmt(r.down) + (f" ({fmt(r.reported_down)})" if r.peer == "nestbed" and r.reported_down else "")
        ok = ("yes" if r.connected else "NO") if r.pings else "-"
        rows.append((r.peer, r.nodes, up, down, f"{ok} ({sum(p[2] for p in r.pings)}/{len(r.pings)} pings)"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    for r in results:
        for src, dst, ok, how in r.pings:
            if not ok or "only" in how:
                print(f"  {r.peer}: {src} -> {dst}: {'ok' if ok else 'FAILED'} {how}")
        for note in r.notes:
            print(f"  {r.peer}: {note}")
        for line in r.memory:
            print(f"  {r.peer} memory: {line}")


def ratio_line(what: str, nestbed: float | None, mininet: float | None, goal: float) -> tuple[str, bool]:
    if not nestbed or not mininet:
        return f"{what}: no ratio (a figure is missing) (goal ≥ {goal:g}x)", False
    ratio = mininet / nestbed
    met = ratio >= goal
    return (f"{what}: nestbed {ratio:.1f}x faster than Mininet (goal ≥ {goal:g}x) — "
            f"{'met' if met else 'NOT met'}"), met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lans", type=int, default=20, help="LANs (Mininet: edge switches); default 20")
    parser.add_argument("--per-lan", type=int, default=50, help="process nodes (hosts) per LAN; default 50")
    parser.add_argument("--skip-mininet", action="store_true", help="run the nestbed half only")
    parser.add_argument("--nodes-10k", action="store_true",
                        help="also bring up 200 LANs x 50 + 200 routers in nestbed (goals: up in ≤ 20 s, "
                             "down in ≤ 10 s) and report memory per node")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (network namespaces, bridges)")
    if args.lans < 1 or args.per_lan < 1:
        sys.exit("bench: --lans and --per-lan must be at least 1")

    nb = Nestbed(find_nestbed())
    log(f"nestbed command: {nb.exe}; {os.cpu_count()} CPUs")
    compile_nestbed(nb.exe)
    results: list[Result] = []
    healthy = True
    with tempfile.TemporaryDirectory(prefix="nestbed-bench-") as tmp:
        workdir = Path(tmp)
        # One peer at a time, never overlapping, so neither slows the other down.
        log(f"waited {settle():.1f} s for an idle machine")
        nestbed = bench_nestbed(nb, workdir, EXPERIMENT, args.lans, args.per_lan)
        results.append(nestbed)
        if not args.skip_mininet:
            log(f"waited {settle():.1f} s for the kernel to settle after nestbed")
            results.append(bench_mininet(args.lans, args.per_lan))
        print()
        print(f"up/down: {args.lans} LANs x {args.per_lan} nodes (nestbed figures: wall clock of the "
              f"`nestbed` command, its own figure in parentheses; Mininet: build+start, stop)")
        print_table(results)
        healthy = all(r.connected and r.up is not None and r.down is not None for r in results)
        if not args.skip_mininet:
            mininet = results[1]
            for what, n_wall, n_own, m, goal in (("up", nestbed.up, nestbed.reported_up, mininet.up, UP_GOAL),
                                                 ("down", nestbed.down, nestbed.reported_down, mininet.down,
                                                  DOWN_GOAL)):
                line, _ = ratio_line(what, n_wall, m, goal)
                if n_own and m:
                    line += f" [nestbed's own figure: {m / n_own:.1f}x]"
                print(line)

        if args.nodes_10k:
            log(f"waited {settle():.1f} s for the kernel to settle")
            big = bench_nestbed(nb, workdir, EXPERIMENT_10K, 200, 50, check_bridges=True, measure_memory=True)
            print()
            print("10,000 nodes (200 LANs x 50 + 200 routers on one core LAN), nestbed only")
            print_table([big])
            if big.up is not None:
                met = big.up <= UP_GOAL_10K
                down_met = big.down is not None and big.down <= DOWN_GOAL_10K
                print(f"up: {big.up:.1f} s (goal ≤ {UP_GOAL_10K:g} s) — {'met' if met else 'NOT met'}; "
                      f"down: {fmt(big.down, 1)} s (goal ≤ {DOWN_GOAL_10K:g} s) — "
                      f"{'met' if down_met else 'NOT met'}")
            healthy = healthy and big.connected and big.bridges_ok and big.up is not None and big.down is not None
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
