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
Programs run in nodes through the experiment's control (cluster/control.py): on one host its host agent, on a
cluster ClusterControl (cluster/fanout.py), which runs each node's program on the host holding it. A segment
across hosts (VXLAN) is checked as any other, from the whole plan (every node with its host): reachability both
ways, routes end to end, shaping. The checks are control/linkchecks.py, the programs control/linkprograms.py.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from nestbed.cluster.control import ExperimentControl
from nestbed.control.linkchecks import (
    LOSS_PINGS,
    Check,
    Report,
    bandwidth_within,
    delay_within,
    farthest_pair,
    farthest_pair_back,
    hops_text,
    hosts_of,
    ip,
    loss_within,
    members_text,
    names_text,
    pairs,
    reach_count,
)
from nestbed.control.linkprograms import PORT, ping_all, transfer
from nestbed.plan import pathshaping
from nestbed.plan.hostplan import HostPlan, ShapingPlan


def run(state: Any, plan: HostPlan, control: ExperimentControl, bandwidth: bool = True,
        progress: Callable[[str], None] | None = None) -> Report:
    """Check the experiment of `state` (its whole plan: on a cluster every node carries its host) through
    `control` (deploy.control_for: the host agent's, or the cluster's)."""
    from nestbed.realize import linkstate, preflight
    started = time.monotonic()
    say = progress or (lambda text: None)
    report = Report(plan.experiment)
    segments = linkstate.effective_segments(state, plan)
    node = {n.name: n for n in plan.nodes}
    local_members = {seg.name: [m for m, _, _ in seg.members if node[m].vm is None] for seg, _ in segments}

    netem_here = preflight.has_qdisc("netem") if any(local_members.values()) else True
    if not netem_here:
        affected = [seg.name for seg, _ in segments if local_members[seg.name]]
        report.notes.append(f"delay and jitter not checked on {names_text(affected)}: no netem on this host "
                            f"(they cannot be set there; loss is done by iptables)")
    # What the first two members of each segment should see: the segment's shaping now, or with per-member
    # settings (egress, ingress) the composition along that pair's two ways.
    planned = {s.name: s for s in plan.segments}
    expected = {seg.name: (pathshaping.round_trip(plan, planned[seg.name], seg.members[0][0], seg.members[1][0])
                           if len(seg.members) >= 2 and pathshaping.has_member_shaping(plan, planned[seg.name])
                           else seg.shaping) for seg, _ in segments}
    for seg, link_state in segments:
        if link_state == "down":
            report.notes.append(f"{seg.name} was set down (nestbed link {plan.experiment} {seg.name} up)")
        shaping = expected[seg.name]
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
        shaping = expected[seg.name]
        loss = shaping.loss if shaping else None
        chosen, ring = pairs(seg)
        plan_pairs[seg.name] = (chosen, ring)
        if ring:
            report.notes.append(f"reachability on {seg.name}: {len(chosen)} of "
                                f"{len(seg.members) * (len(seg.members) - 1)} pairs (each member with its ring "
                                f"neighbours)")
        for i, j in chosen:
            want(seg.members[i][0], ip(seg.members[j][2]), reach_count(loss), 0.05)
        if len(seg.members) >= 2 and shaping:
            first, second = seg.members[0], seg.members[1]
            if shaping.loss:
                want(first[0], ip(second[2]), LOSS_PINGS, 0.005)
            if shaping.delay:
                want(first[0], ip(second[2]), 20, 0.02)
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
    results = ping_all(control, jobs)

    for seg, link_state in segments:
        chosen, _ = plan_pairs[seg.name]
        if not chosen:
            continue
        failed = []
        for i, j in chosen:
            source, target = seg.members[i][0], ip(seg.members[j][2])
            got = results.get(source, {}).get(target)
            if got is None or got["received"] == 0:
                failed.append(f"{source}→{seg.members[j][0]}" + (f" ({got['error']})" if got and got["error"]
                                                                 else ""))
        detail = f"{len(chosen) - len(failed)}/{len(chosen)} pairs answer"
        across = hosts_of(seg, node)
        if len(across) > 1:
            detail += f" across {', '.join(across)}"
        if failed:
            detail += ": no answer " + ", ".join(failed[:6]) + (" …" if len(failed) > 6 else "")
            if link_state == "down":
                detail += f" ({seg.name} is set down)"
        report.checks.append(Check("reach", seg.name, members_text(seg), not failed, detail))

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
                                           f"{hops_text(hops)}: no answer from {to}"))
                continue
            ttl = max(set(got["ttls"]), key=got["ttls"].count)
            ok = ttl == expected_ttl
            report.checks.append(Check("route", "", f"{source} → {dest_name}", ok,
                                       f"{hops_text(hops)}, reply TTL {ttl}"
                                       + ("" if ok else f", expected {expected_ttl}")))

    reachable = {c.segment for c in report.checks if c.kind == "reach" and c.ok}
    for seg, _ in segments:
        shaping = expected[seg.name]
        if not shaping or len(seg.members) < 2:
            continue
        a, b = seg.members[0], seg.members[1]
        got = results.get(a[0], {}).get(ip(b[2]))
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
            shaping = expected[seg.name]
            if not shaping or not shaping.bandwidth or len(seg.members) < 2:
                continue
            a, b = seg.members[0], seg.members[1]
            if seg.name not in reachable:
                report.checks.append(Check("bandwidth", seg.name, f"{a[0]} → {b[0]}", False,
                                           "not measured: no answer"))
                continue
            say(f"bandwidth on {seg.name}: {a[0]} → {b[0]}")
            measured, problem = transfer(control, a[0], b[0], ip(b[2]), port)
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
        shaped = [seg.name for seg, _ in segments if (expected[seg.name] or ShapingPlan()).bandwidth]
        if shaped:
            report.notes.append(f"bandwidth not checked on {names_text(shaped)} (--no-bandwidth)")
    report.seconds = time.monotonic() - started
    return report
