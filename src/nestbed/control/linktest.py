"""linktest: check that every link and LAN of a running experiment does what the topology says.

Like Emulab's linktest, from inside the nodes:
  reach      every member pair pings the other's address, both ways, all pairs at once (a ring of pairs on LANs
             of more than RING_ABOVE members); enough pings that loss on the segment cannot fail it by chance
  route      with static routing: the two nodes farthest apart ping each other, and the reply's TTL says how
             many routers it crossed (64 − (hops − 1))
  bandwidth  a short TCP transfer between two members (a tiny Python sender and receiver in the nodes), within
             BANDWIDTH_TOLERANCE of the configured rate (only an upper bound when the segment also drops packets)
  delay      the median ping RTT ≈ 2 × delay (each member delays its egress)
  loss       LOSS_PINGS pings: the lost count within a binomial tolerance of 1 − (1 − loss)² per round trip
What cannot be checked is said (jitter beyond the mean, queue limits, delay where the host has no netem, …).
Programs run in host nodes through processes.enter_node, in VM nodes through their guest agent.
"""
from __future__ import annotations

import io
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nestbed.plan.hostplan import HostPlan, NodePlan, SegmentPlan

RING_ABOVE = 12                 # LANs with more members: each member pings its ring neighbours only
BANDWIDTH_TOLERANCE = 0.15
BANDWIDTH_SECONDS = 2.0
LOSS_PINGS = 300
REACH_MISS_PROBABILITY = 1e-4   # chance that loss alone fails a reachability check
DELAY_TOLERANCE = 0.15          # of the expected RTT, plus DELAY_SLACK and the jitter
DELAY_SLACK = 0.002             # s: the RTT of an unshaped path (more under emulation)
PORT = 5201

PINGER = r"""
import json, re, subprocess, sys
jobs = json.loads(sys.argv[1]); procs = {}
for target, count, interval in jobs:
    procs[target] = subprocess.Popen(["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", target],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
result = {}
for target, proc in procs.items():
    out = proc.communicate()[0]
    seqs, rtts, ttls = set(), [], []
    for line in out.splitlines():
        m = re.search(r"icmp_seq=(\d+) ttl=(\d+) time=([\d.]+)", line)
        if m and "DUP" not in line and m.group(1) not in seqs:
            seqs.add(m.group(1)); ttls.append(int(m.group(2))); rtts.append(float(m.group(3)) / 1000)
    sent = re.search(r"(\d+) packets transmitted", out)
    result[target] = {"sent": int(sent.group(1)) if sent else 0, "received": len(seqs), "rtts": rtts,
                      "ttls": ttls, "error": "" if sent else out.strip()[-200:]}
print(json.dumps(result))
"""

TRANSFER = r"""
import socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
if mode == "receive":
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port)); srv.listen(1); srv.settimeout(float(sys.argv[3]))
    print("ready", flush=True)
    conn, _ = srv.accept(); conn.settimeout(10); total = 0; first = last = None
    while True:
        data = conn.recv(262144)
        if not data: break
        last = time.monotonic(); total += len(data)
        if first is None: first = last; total = 0
    print(total * 8 / (last - first) if first and last > first else 0.0, flush=True)
else:
    s = socket.create_connection((sys.argv[3], port), timeout=5); chunk = b"x" * 65536
    end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end: s.sendall(chunk)
    s.close()
"""


@dataclass
class Check:
    kind: str                    # reach | route | bandwidth | delay | loss
    segment: str                 # the segment, or "" for routes
    between: str                 # "a ↔ b", "3 pairs", …
    ok: bool
    detail: str


@dataclass
class Report:
    experiment: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "ok": self.ok, "seconds": round(self.seconds, 3),
                "checks": [c.__dict__ for c in self.checks], "not_checked": self.notes}


# -- running programs in nodes ------------------------------------------------------------------------------
class Running:
    """A program started in a node: its stdout line by line, then its exit code and whole output."""

    def __init__(self, lines: Callable[[], str], finish: Callable[[float], tuple[int, str, str]]):
        self.readline = lines
        self.finish = finish


class NodeExec:
    def __init__(self, state: Any, plan: HostPlan):
        self.state, self.plan = state, plan
        self.python = sys.executable

    def start(self, node: NodePlan, argv: list[str]) -> Running:
        if node.vm is None:
            return self._start_local(node, argv)
        return self._start_vm(node, argv)

    def run(self, node: NodePlan, argv: list[str], timeout: float = 60.0) -> tuple[int, str, str]:
        return self.start(node, argv).finish(timeout)

    def _start_local(self, node: NodePlan, argv: list[str]) -> Running:
        from nestbed.realize import identity, processes
        state = self.state
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
            env=processes.node_environment(state.name, node.name),
            preexec_fn=lambda: processes.enter_node(node.netns, str(state.hosts_path), node.name,
                                                    str(identity.node_dir(state.directory, node.name))))
        assert child.stdout is not None
        seen: list[str] = []

        def readline() -> str:
            line = child.stdout.readline()    # type: ignore[union-attr]
            seen.append(line)
            return line

        def finish(timeout: float) -> tuple[int, str, str]:
            try:
                out, err = child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                out, err = child.communicate()
                return -9, "".join(seen) + out, err + "(timed out)"
            return child.returncode, "".join(seen) + out, err
        return Running(readline, finish)

    def _start_vm(self, node: NodePlan, argv: list[str]) -> Running:
        from nestbed.realize import vms
        assert node.vm is not None
        client = vms.client(self.state, self.plan, self.plan.vm(node.vm))
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "r")
        errors = io.BytesIO()
        outcome: list[Any] = []

        def work() -> None:
            with os.fdopen(write_fd, "wb") as writer:
                try:
                    outcome.append(client.run(node.name, argv, stdout=writer, stderr=errors))
                except Exception as error:       # reported as the program's failure
                    errors.write(str(error).encode())
                    outcome.append(-1)
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        seen: list[str] = []

        def readline() -> str:
            line = reader.readline()
            seen.append(line)
            return line

        def finish(timeout: float) -> tuple[int, str, str]:
            rest = reader.read()
            thread.join(timeout)
            reader.close()
            rc = outcome[0] if outcome else -9
            return rc, "".join(seen) + rest, errors.getvalue().decode(errors="replace")
        return Running(readline, finish)


# -- what to check ------------------------------------------------------------------------------------------
def pairs(segment: SegmentPlan) -> tuple[list[tuple[int, int]], bool]:
    """Ordered member pairs (indexes) to ping; True when only a ring of them (big LANs)."""
    n = len(segment.members)
    if n <= RING_ABOVE:
        return [(i, j) for i in range(n) for j in range(n) if i != j], False
    ring = [(i, (i + 1) % n) for i in range(n)]
    return ring + [(j, i) for i, j in ring], True


def round_trip_loss(loss: float | None) -> float:
    """Each echo crosses two members' egress: the chance a round trip is lost."""
    keep = 1 - (loss or 0.0)
    return 1 - keep * keep


def reach_count(loss: float | None) -> int:
    q = round_trip_loss(loss)
    if q <= 0:
        return 3
    if q >= 1:
        return 3
    return max(3, min(60, math.ceil(math.log(REACH_MISS_PROBABILITY) / math.log(q))))


def loss_within(lost: int, sent: int, loss: float) -> tuple[bool, float, float]:
    """Binomial tolerance on the lost count: mean ± (4σ + 2). Returns (ok, low, high) as fractions."""
    q = round_trip_loss(loss)
    mean = sent * q
    spread = 4 * math.sqrt(sent * q * (1 - q)) + 2
    low, high = max(0.0, mean - spread), min(float(sent), mean + spread)
    return low <= lost <= high, low / sent, high / sent


def delay_within(rtt: float, delay: float, jitter: float | None) -> tuple[bool, float, float]:
    expected = 2 * delay
    low = expected * (1 - DELAY_TOLERANCE) - 2 * (jitter or 0)
    high = expected * (1 + DELAY_TOLERANCE) + DELAY_SLACK + 2 * (jitter or 0)
    return low <= rtt <= high, low, high


def bandwidth_within(measured: float, rate: int, loss: float | None) -> tuple[bool, float, float]:
    """±BANDWIDTH_TOLERANCE. TCP fills a lossy path less: with up to 2% loss half the rate is enough, beyond
    that only the upper bound holds."""
    if not loss:
        low = rate * (1 - BANDWIDTH_TOLERANCE)
    elif loss <= 0.02:
        low = rate * 0.5
    else:
        low = 0.0
    return low <= measured <= rate * (1 + BANDWIDTH_TOLERANCE), low, rate * (1 + BANDWIDTH_TOLERANCE)


def farthest_pair(plan: HostPlan, segments: list[SegmentPlan]) -> tuple[str, str, int, str] | None:
    """(a, b, hops, b's address on the last segment of the path) for two nodes about as far apart as any
    (double sweep over the node–segment graph; only nodes with two or more interfaces forward)."""
    nodes = {n.name: n for n in plan.nodes if n.interfaces}
    if len(nodes) < 2:
        return None
    members = {s.name: s.members for s in segments}
    by_node: dict[str, list[str]] = {}
    for seg in segments:
        for node, _, _ in seg.members:
            by_node.setdefault(node, []).append(seg.name)

    def sweep(start: str) -> dict[str, tuple[int, str]]:
        found = {start: (0, "")}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if node != start and len(by_node.get(node, [])) < 2:
                continue
            hops = found[node][0]
            for seg in by_node.get(node, []):
                for other, _, address in members[seg]:
                    if other not in found:
                        found[other] = (hops + 1, address.split("/")[0])
                        queue.append(other)
        return found

    first = next(iter(nodes))
    reached = sweep(first)
    a = max(reached, key=lambda n: reached[n][0])
    from_a = sweep(a)
    b = max(from_a, key=lambda n: from_a[n][0])
    if b == a:
        return None
    return a, b, from_a[b][0], from_a[b][1]


# -- the test -----------------------------------------------------------------------------------------------
def run(state: Any, plan: HostPlan, bandwidth: bool = True, progress: Callable[[str], None] | None = None) -> Report:
    from nestbed.realize import linkstate, preflight
    started = time.monotonic()
    say = progress or (lambda text: None)
    report = Report(plan.experiment)
    execs = NodeExec(state, plan)
    segments = linkstate.effective_segments(state, plan)
    node = {n.name: n for n in plan.nodes}
    local_members = {seg.name: [m for m, _, _ in seg.members if node[m].vm is None] for seg, _ in segments}

    netem_here = preflight.has_qdisc("netem") if any(local_members.values()) else True
    if not netem_here:
        affected = [seg.name for seg, _ in segments if local_members[seg.name]]
        report.notes.append(f"delay and jitter not checked on {_names(affected)}: no netem on this host "
                            f"(they cannot be set there; loss is done by iptables)")
    for seg, link_state in segments:
        if link_state == "down":
            report.notes.append(f"{seg.name} was set down (nestbed link {plan.experiment} {seg.name} up)")
        shaping = seg.shaping
        if shaping and shaping.jitter:
            report.notes.append(f"jitter on {seg.name} not checked: only the median RTT is")
        if shaping and shaping.queue:
            report.notes.append(f"queue limit on {seg.name} not checked")

    # 1. pings: reachability of every pair, loss, delay, the farthest pair — all at once, one pinger per node
    jobs: dict[str, dict[str, tuple[int, float]]] = {}

    def want(source: str, target: str, count: int, interval: float) -> None:
        have = jobs.setdefault(source, {}).get(target)
        if have is None or have[0] < count:
            jobs[source][target] = (count, min(interval, have[1]) if have else interval)

    plan_pairs: dict[str, tuple[list[tuple[int, int]], bool]] = {}
    for seg, _ in segments:
        shaping = seg.shaping
        loss = shaping.loss if shaping else None
        chosen, ring = pairs(seg)
        plan_pairs[seg.name] = (chosen, ring)
        if ring:
            report.notes.append(f"reachability on {seg.name}: {len(chosen)} of "
                                f"{len(seg.members) * (len(seg.members) - 1)} pairs (each member with its ring "
                                f"neighbours)")
        for i, j in chosen:
            want(seg.members[i][0], _ip(seg.members[j][2]), reach_count(loss), 0.05)
        if len(seg.members) >= 2 and shaping:
            first, second = seg.members[0], seg.members[1]
            if shaping.loss:
                want(first[0], _ip(second[2]), LOSS_PINGS, 0.005)
            if shaping.delay:
                want(first[0], _ip(second[2]), 20, 0.02)
    far = farthest_pair(plan, [s for s, _ in segments]) if plan.routing == "static" else None
    if plan.routing != "static":
        report.notes.append(f"routes end to end not checked: routing is {plan.routing}")
    far_back = None
    if far is not None:
        far_a, far_b, _, far_address = far
        want(far_a, far_address, 3, 0.05)
        far_back = farthest_pair_back(plan, [s for s, _ in segments], far_b, far_a)
        if far_back is not None:
            want(far_b, far_back, 3, 0.05)
    say(f"pinging: {sum(len(t) for t in jobs.values())} targets from {len(jobs)} nodes")
    results = _ping_all(execs, node, jobs)

    for seg, link_state in segments:
        chosen, _ = plan_pairs[seg.name]
        if not chosen:
            continue
        failed = []
        for i, j in chosen:
            source, target = seg.members[i][0], _ip(seg.members[j][2])
            got = results.get(source, {}).get(target)
            if got is None or got["received"] == 0:
                failed.append(f"{source}→{seg.members[j][0]}" + (f" ({got['error']})" if got and got["error"]
                                                                 else ""))
        detail = f"{len(chosen) - len(failed)}/{len(chosen)} pairs answer"
        if failed:
            detail += ": no answer " + ", ".join(failed[:6]) + (" …" if len(failed) > 6 else "")
            if link_state == "down":
                detail += f" ({seg.name} is set down)"
        report.checks.append(Check("reach", seg.name, _members_text(seg), not failed, detail))

    if far is not None:
        far_a, far_b, hops, far_address = far
        directions: list[tuple[str, str | None, str]] = [(far_a, far_address, far_b), (far_b, far_back, far_a)]
        for source, to, dest_name in directions:
            if to is None:
                continue
            got = results.get(source, {}).get(to)
            expected_ttl = 64 - (hops - 1)
            if got is None or got["received"] == 0:
                report.checks.append(Check("route", "", f"{source} → {dest_name}", False,
                                           f"{_hops(hops)}: no answer from {to}"))
                continue
            ttl = max(set(got["ttls"]), key=got["ttls"].count)
            ok = ttl == expected_ttl
            report.checks.append(Check("route", "", f"{source} → {dest_name}", ok,
                                       f"{_hops(hops)}, reply TTL {ttl}" + ("" if ok else f", expected {expected_ttl}")))

    reachable = {c.segment for c in report.checks if c.kind == "reach" and c.ok}
    for seg, _ in segments:
        shaping = seg.shaping
        if not shaping or len(seg.members) < 2:
            continue
        a, b = seg.members[0], seg.members[1]
        got = results.get(a[0], {}).get(_ip(b[2]))
        if shaping.delay and got:
            if seg.name not in reachable or not got["rtts"]:
                report.checks.append(Check("delay", seg.name, f"{a[0]} ↔ {b[0]}", False, "not measured: no answer"))
            else:
                rtt = statistics.median(got["rtts"])
                ok, low, high = delay_within(rtt, shaping.delay, shaping.jitter)
                report.checks.append(Check("delay", seg.name, f"{a[0]} ↔ {b[0]}", ok,
                                           f"median RTT {rtt * 1000:.2f} ms, expected {low * 1000:.2f}–"
                                           f"{high * 1000:.2f} ms (2 × {shaping.delay * 1000:g} ms)"))
        if shaping.loss and got:
            if seg.name not in reachable:
                report.checks.append(Check("loss", seg.name, f"{a[0]} ↔ {b[0]}", False, "not measured: no answer"))
            else:
                sent, lost = got["sent"], got["sent"] - got["received"]
                ok, low, high = loss_within(lost, sent, shaping.loss)
                report.checks.append(Check("loss", seg.name, f"{a[0]} ↔ {b[0]}", ok,
                                           f"{lost}/{sent} round trips lost ({lost / max(sent, 1):.1%}), "
                                           f"expected {low:.1%}–{high:.1%} ({shaping.loss:.2%} each way)"))

    # 2. bandwidth: one transfer at a time (they would share this machine's cores)
    if bandwidth:
        port = PORT
        for seg, _ in segments:
            shaping = seg.shaping
            if not shaping or not shaping.bandwidth or len(seg.members) < 2:
                continue
            a, b = seg.members[0], seg.members[1]
            if seg.name not in reachable:
                report.checks.append(Check("bandwidth", seg.name, f"{a[0]} → {b[0]}", False,
                                           "not measured: no answer"))
                continue
            say(f"bandwidth on {seg.name}: {a[0]} → {b[0]}")
            measured, problem = _transfer(execs, node[a[0]], node[b[0]], _ip(b[2]), port)
            port += 1
            if problem:
                report.checks.append(Check("bandwidth", seg.name, f"{a[0]} → {b[0]}", False, problem))
                continue
            from nestbed.model.units import format_bandwidth
            ok, low, high = bandwidth_within(measured, shaping.bandwidth, shaping.loss)
            bound = (f"at most {format_bandwidth(int(high))} (TCP cannot fill a lossy path)" if not low
                     else f"{format_bandwidth(int(low))}–{format_bandwidth(int(high))}"
                     + (" (lower bound relaxed for loss)" if shaping.loss else ""))
            report.checks.append(Check("bandwidth", seg.name, f"{a[0]} → {b[0]}", ok,
                                       f"{measured / 1e6:.2f} Mbit/s, expected {bound}"))
            if seg.kind == "lan":
                report.notes.append(f"bandwidth on {seg.name} measured between {a[0]} and {b[0]} only")
    else:
        shaped = [seg.name for seg, _ in segments if seg.shaping and seg.shaping.bandwidth]
        if shaped:
            report.notes.append(f"bandwidth not checked on {_names(shaped)} (--no-bandwidth)")
    report.seconds = time.monotonic() - started
    return report


def farthest_pair_back(plan: HostPlan, segments: list[SegmentPlan], source: str, target: str) -> str | None:
    """The target's address on the last segment of the source's path to it (for the return ping)."""
    by_node: dict[str, list[str]] = {}
    members = {s.name: s.members for s in segments}
    for seg in segments:
        for node, _, _ in seg.members:
            by_node.setdefault(node, []).append(seg.name)
    found = {source: ""}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if node != source and len(by_node.get(node, [])) < 2:
            continue
        for name in by_node.get(node, []):
            for other, _, address in members[name]:
                if other not in found:
                    found[other] = address.split("/")[0]
                    queue.append(other)
    return found.get(target)


def _ping_all(execs: NodeExec, node: dict[str, NodePlan],
              jobs: dict[str, dict[str, tuple[int, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    started = {}
    for source, targets in jobs.items():
        argv = [execs.python, "-S", "-c", PINGER,
                json.dumps([[target, count, interval] for target, (count, interval) in targets.items()])]
        started[source] = execs.start(node[source], argv)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for source, running in started.items():
        rc, out, err = running.finish(120.0)
        try:
            results[source] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            problem = (err or out).strip().splitlines()
            results[source] = {t: {"sent": 0, "received": 0, "rtts": [], "ttls": [],
                                   "error": problem[-1] if problem else f"exit {rc}"} for t in jobs[source]}
    return results


def _transfer(execs: NodeExec, sender: NodePlan, receiver: NodePlan, address: str,
              port: int) -> tuple[float, str]:
    """Bits per second from sender to receiver's address, or (0, what went wrong)."""
    python = [execs.python, "-S", "-c", TRANSFER]
    rx = execs.start(receiver, python + ["receive", str(port), "15"])
    if rx.readline().strip() != "ready":
        rc, out, err = rx.finish(5.0)
        return 0.0, f"receiver did not start: {(err or out).strip()[-200:]}"
    rc, out, err = execs.run(sender, python + ["send", str(port), address, str(BANDWIDTH_SECONDS)],
                             timeout=BANDWIDTH_SECONDS + 30)
    if rc != 0:
        rx.finish(20.0)
        return 0.0, f"sender failed: {(err or out).strip()[-200:]}"
    rc, out, err = rx.finish(30.0)
    try:
        return float(out.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return 0.0, f"receiver failed: {(err or out).strip()[-200:]}"


def _hops(hops: int) -> str:
    return "1 hop" if hops == 1 else f"{hops} hops"


def _ip(address: str) -> str:
    return address.split("/")[0]


def _members_text(seg: SegmentPlan) -> str:
    names = [m for m, _, _ in seg.members]
    if seg.kind == "link" and len(names) == 2:
        return f"{names[0]} ↔ {names[1]}"
    return ", ".join(names[:6]) + (f" … ({len(names)})" if len(names) > 6 else "")


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
