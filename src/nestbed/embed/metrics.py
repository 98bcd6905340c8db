"""Judge any placement: its inter-host bandwidth and cut segments, its imbalance, and every constraint it breaks.

`violations` re-reads the rules from the experiment, its nodes' kinds and the cluster, not from the embedder's
internal state, so it is the independent check that tests (and `Metrics.violations`) rely on. `evaluate` scores a plain
node → host mapping, e.g. one from calling a partitioner directly, on the same scale as `embed()`.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nestbed.embed import balance
from nestbed.embed.demands import CPU_SLACK, VHOST_CPUS, VHOST_MEMORY, Demand, host_capacities
from nestbed.embed.embedding import Embedding, Metrics, Placement
from nestbed.embed.graph import Segments, build_graph, collect_segments
from nestbed.embed.problem import build_problem
from nestbed.embed.vhosts import pack_vhosts
from nestbed.kinds import registry
from nestbed.model.cluster import Cluster
from nestbed.model.topology import Experiment, Node

if TYPE_CHECKING:
    from nestbed.kinds.base import NodeKind


def cut(segments: Segments, node_host: list[int], host_names: list[str]) -> tuple[float, dict[str, list[str]]]:
    """(Σ bandwidth × (hosts touched − 1), segment → hosts for segments touching more than one host)."""
    total = 0
    spans: dict[str, list[str]] = {}
    for name, ids, bw in zip(segments.names, segments.members, segments.bandwidth):
        if len(ids) == 2:
            a, b = node_host[ids[0]], node_host[ids[1]]
            if a != b:
                total += bw
                spans[name] = [host_names[min(a, b)], host_names[max(a, b)]]
            continue
        hosts = {node_host[i] for i in ids}
        if len(hosts) > 1:
            total += bw * (len(hosts) - 1)
            spans[name] = [host_names[h] for h in sorted(hosts)]
    return float(total), spans


@dataclass
class _HostLoad:
    containers: int = 0
    vms: int = 0
    cpus: float = 0.0
    memory: int = 0
    physical: int = 0
    nodes: int = 0
    vhosts: int = 0


def violations(exp: Experiment, cluster: Cluster, embedding: Embedding,
               nodes: dict[str, Node] | None = None) -> list[str]:
    """Every broken constraint, one phrase each (empty: the embedding is valid)."""
    nodes = exp.expanded_nodes() if nodes is None else nodes
    settings = exp.embed
    nested = settings.processes_in == "qemu"
    found: list[str] = []
    caps = dict(zip(cluster.hosts, host_capacities(cluster, settings)))
    load = {h: _HostLoad() for h in caps}
    for vhost, vhost_host in embedding.vhosts.items():
        if vhost_host not in caps:
            found.append(f"vhost {vhost} is on unknown host {vhost_host}")
        else:
            load[vhost_host].vhosts += 1
    per_vhost: dict[str, int] = {}
    partition_host: dict[str, str] = {}
    kinds: dict[tuple[str, float | None, int | None], tuple[NodeKind, Demand]] = {}    # most nodes ask alike
    for name, node in nodes.items():
        place = embedding.placement.get(name)
        if place is None or place.host not in caps:
            found.append(f"node {name} is not placed on a known host")
            continue
        used = load[place.host]
        used.nodes += 1
        if node.host is not None and node.host not in (place.host, place.vhost):
            found.append(f"node {name} is pinned to {node.host} but runs on {place.host}/{place.vhost}")
        if node.partition is not None and partition_host.setdefault(node.partition, place.host) != place.host:
            found.append(f"partition {node.partition} spans hosts")
        key = (node.kind, node.cpus, node.memory)
        known = kinds.get(key)
        if known is None:
            kind = registry.get(node.kind)
            known = kinds[key] = (kind, kind.demand(node))
        kind, demand = known
        if place.vhost is not None:
            if not kind.runs_in_vhost or not nested:
                found.append(f"node {name} ({node.kind}) is inside vhost {place.vhost}")
            if embedding.vhosts.get(place.vhost) != place.host:
                found.append(f"node {name} is in vhost {place.vhost}, which is not on {place.host}")
            per_vhost[place.vhost] = per_vhost.get(place.vhost, 0) + 1
        elif kind.runs_in_vhost and nested:
            found.append(f"{node.kind} {name} is not inside a vhost")
        used.physical += kind.whole_host
        used.containers += demand.containers
        used.vms += demand.qemu
        used.cpus += demand.cpus
        used.memory += demand.memory
    for vhost, count in per_vhost.items():
        if count > settings.per_vhost:
            found.append(f"vhost {vhost} holds {count} processes, per_vhost is {settings.per_vhost}")
    for h, cap in caps.items():
        used = load[h]
        if used.physical and (used.nodes > 1 or used.vhosts):
            found.append(f"host {h} has a physical node and other nodes or vhosts")
        vms, cpus = used.vms + used.vhosts, used.cpus + used.vhosts * VHOST_CPUS
        memory = used.memory + used.vhosts * VHOST_MEMORY
        for what, value, limit in (("containers", used.containers, cap.containers), ("VMs", vms, cap.vms),
                                   ("memory", memory, cap.memory), ("cpus", cpus, cap.cpus + CPU_SLACK)):
            if value > limit:
                found.append(f"host {h} has {value:g} {what}, limit {limit:g}")
    return found


def evaluate(exp: Experiment, cluster: Cluster, host_of: Mapping[str, str]) -> Metrics:
    """Metrics of a node → host mapping (vhosts packed as embed() would): to compare other placements."""
    started = time.perf_counter()
    nodes = exp.expanded_nodes()
    problem = build_problem(exp, cluster, nodes)
    segments = collect_segments(exp, nodes, problem)
    index = {h: i for i, h in enumerate(problem.host_names)}
    node_host = [index[host_of[name]] for name in problem.node_names]
    bandwidth, spans = cut(segments, node_host, problem.host_names)
    physical_hosts = {h for i, h in enumerate(node_host) if problem.physical[problem.group_of[i]]}
    open_hosts = [h for h in range(len(problem.host_names)) if h not in physical_hosts]
    share = balance.shares(problem, open_hosts)
    containers: dict[int, int] = {}
    for i, h in enumerate(node_host):
        if not problem.physical[problem.group_of[i]]:
            containers[h] = containers.get(h, 0) + 1
    group_host = [node_host[members[0]] for members in problem.group_nodes]
    graph = build_graph(problem, segments) if problem.nested else None
    node_vhost, vhosts = pack_vhosts(problem, graph, group_host)
    embedding = Embedding({name: Placement(problem.host_names[node_host[i]], node_vhost.get(i))
                           for i, name in enumerate(problem.node_names)}, vhosts, spans,
                          Metrics(bandwidth, len(spans), 0.0, 0, 0.0), list(problem.host_names))
    broken = violations(exp, cluster, embedding, nodes)
    return Metrics(bandwidth, len(spans), balance.imbalance(containers, share), len(broken),
                   time.perf_counter() - started)
