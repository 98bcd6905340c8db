"""An exact, independent reference for small embeddings: every assignment of nodes to hosts, checked against the
rules as the issue states them (written again here, on purpose, rather than imported from nestbed.embed).

Used by test_embed_exact (optimality within 10%) and test_embed_properties (embed() must not refuse a feasible
input). Small means ≤ ~8 free nodes on ≤ 3 hosts: 3⁸ assignments.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from nestbed.model.cluster import Cluster
from nestbed.model.topology import Experiment

GBIT = 10**9
M512 = 512 * 2**20


@dataclass
class Exact:
    cut: float                       # least inter-host bandwidth over the assignments allowed
    hosts: dict[str, str]            # one assignment reaching it


def segments(exp: Experiment) -> list[tuple[list[str], int]]:
    nodes = exp.expanded_nodes()
    return [([e.node for e in exp.segment_members(s, nodes)], s.shaping.bandwidth or GBIT)
            for s in exp.segments.values()]


def cut_of(segs: list[tuple[list[str], int]], hosts: dict[str, str]) -> float:
    return float(sum(bw * (len({hosts[m] for m in members}) - 1) for members, bw in segs))


def fair_shares(total: int, caps: list[float]) -> list[float]:
    shares, left = [0.0] * len(caps), float(total)
    order = sorted(range(len(caps)), key=lambda i: caps[i])
    for rank, i in enumerate(order):
        shares[i] = min(caps[i], left / (len(caps) - rank))
        left -= shares[i]
    return shares


def feasible(exp: Experiment, cluster: Cluster, hosts: dict[str, str]) -> bool:
    """The hard constraints of issue 3 for a node → host map (vhosts: as few as the processes need)."""
    nodes = exp.expanded_nodes()
    s = exp.embed
    nested = s.processes_in == "qemu"
    partition_host: dict[str, str] = {}
    per_host: dict[str, dict[str, float]] = {
        h: {"c": 0, "q": 0, "p": 0, "cpu": 0.0, "mem": 0, "phys": 0, "n": 0} for h in cluster.hosts}
    pinned_vhosts: dict[str, set[str]] = {h: set() for h in cluster.hosts}
    vhost_count: dict[str, int] = {}
    for name, node in nodes.items():
        h = hosts[name]
        load = per_host[h]
        load["n"] += 1
        if node.host is not None:
            if node.host in cluster.hosts:
                if node.host != h:
                    return False
            else:      # vh-<host>-<k>
                if not nested or node.kind != "process" or not node.host.startswith(f"vh-{h}-"):
                    return False
                pinned_vhosts[h].add(node.host)
                vhost_count[node.host] = vhost_count.get(node.host, 0) + 1
        if node.partition is not None and partition_host.setdefault(node.partition, h) != h:
            return False
        if node.kind == "physical":
            load["phys"] += 1
            load["cpu"] += node.cpus or 0
            load["mem"] += node.memory or 0
            continue
        load["c"] += 1
        if node.kind == "qemu":
            load["q"] += 1
            load["cpu"] += node.cpus if node.cpus is not None else 1.0
            load["mem"] += node.memory if node.memory is not None else M512
        else:
            load["p"] += 1
            load["cpu"] += node.cpus or 0
            load["mem"] += node.memory or 0
    if any(count > s.per_vhost for count in vhost_count.values()):
        return False
    for h, spec in cluster.hosts.items():
        load = per_host[h]
        if load["phys"] and load["n"] > 1:
            return False
        vhosts = max(len(pinned_vhosts[h]), math.ceil(load["p"] / s.per_vhost)) if nested else 0
        cap_c = min(s.per_host, spec.max_containers if spec.max_containers is not None else math.inf)
        if load["c"] > cap_c:
            return False
        if spec.max_vms is not None and load["q"] + vhosts > spec.max_vms:
            return False
        if spec.cpus is not None and load["cpu"] + vhosts > spec.cpus + 1e-9:
            return False
        if spec.memory is not None and load["mem"] + vhosts * M512 > spec.memory:
            return False
    return True


def exact(exp: Experiment, cluster: Cluster, balanced: bool = False) -> Exact | None:
    """Least cut over all feasible assignments (None if there is none). `balanced` also asks every host to stay
    within its fair share of containers (+3%, rounded up), the balance embed() aims for when nothing forces it
    off (only meaningful when containers are the only capacity that binds)."""
    nodes = exp.expanded_nodes()
    names = list(nodes)
    host_names = list(cluster.hosts)
    segs = segments(exp)
    groups: dict[str, list[str]] = {}
    for name, node in nodes.items():
        groups.setdefault(node.partition or f"\0{name}", []).append(name)
    bound: dict[str, float] = {}
    if balanced:
        containers = sum(1 for n in nodes.values() if n.kind != "physical")
        caps = [min(exp.embed.per_host, spec.max_containers if spec.max_containers is not None else math.inf)
                for spec in cluster.hosts.values()]
        physical = sum(1 for n in nodes.values() if n.kind == "physical")
        shares = fair_shares(containers, caps)   # physical hosts hold no containers: tolerated below
        bound = {h: max(math.ceil(sh * 1.03 - 1e-9), math.ceil(sh - 1e-9)) for h, sh in zip(host_names, shares)}
        if physical:
            bound = {}
    best: Exact | None = None
    members = list(groups.values())
    for choice in itertools.product(host_names, repeat=len(members)):
        hosts = {name: h for group, h in zip(members, choice) for name in group}
        if bound:
            count: dict[str, int] = {}
            for name in names:
                if nodes[name].kind != "physical":
                    count[hosts[name]] = count.get(hosts[name], 0) + 1
            if any(count.get(h, 0) > b for h, b in bound.items()):
                continue
        if not feasible(exp, cluster, hosts):
            continue
        value = cut_of(segs, hosts)
        if best is None or value < best.cut:
            best = Exact(value, hosts)
    return best
