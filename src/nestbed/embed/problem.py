"""The embedding problem as indexed data: nodes, the groups that must share a host, pins, demands, host capacities.

Nodes that share a `partition:` become one *group* (they move together), so every later step works on groups and
cannot split a partition. A `host:` pin names a host, or a vhost `vh-<host>-<k>` (which pins to that host too).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from nestbed.embed.demands import Capacity, Demand, host_capacities, node_demand
from nestbed.embed.embedding import EmbeddingError
from nestbed.kinds import registry
from nestbed.model.cluster import Cluster
from nestbed.model.topology import EmbedSettings, Experiment, Node

VHOST_NAME = re.compile(r"vh-(?P<host>.+)-(?P<index>[0-9]+)")
FREE = -1                           # a group without a pin


def vhost_name(host: str, index: int) -> str:
    return f"vh-{host}-{index}"


@dataclass
class Problem:
    settings: EmbedSettings
    host_names: list[str]
    caps: list[Capacity]
    node_names: list[str]
    nodes: list[Node]
    group_of: list[int]                   # node → group
    group_nodes: list[list[int]]          # group → its nodes
    demand: list[Demand]                  # per group
    pin: list[int]                        # group → host index, or FREE
    physical: list[bool]                  # group is one physical node
    vhost_pin: dict[int, int] = field(default_factory=dict)     # node → vhost index on its pinned host
    pinned_vhosts: list[set[int]] = field(default_factory=list)  # host → vhost indices named by pins
    pin_location: list[str | None] = field(default_factory=list)  # group → where its pin was written

    @property
    def nested(self) -> bool:
        """Processes run inside vhost VMs."""
        return self.settings.processes_in == "qemu"

    @property
    def group_count(self) -> int:
        return len(self.group_nodes)

    def free_total(self) -> Demand:
        """What all non-physical nodes ask together."""
        demands = [d for d, physical in zip(self.demand, self.physical) if not physical]
        return Demand(sum(d.containers for d in demands), sum(d.qemu for d in demands),
                      sum(d.processes for d in demands), sum(d.cpus for d in demands),
                      sum(d.memory for d in demands))


def build_problem(exp: Experiment, cluster: Cluster, nodes: dict[str, Node] | None = None) -> Problem:
    nodes = exp.expanded_nodes() if nodes is None else nodes
    host_names = list(cluster.hosts)
    host_index = {name: i for i, name in enumerate(host_names)}
    node_list = list(nodes.values())

    # Groups: one per partition value, else one per node. Declaration order keeps results deterministic.
    group_of: list[int] = []
    group_nodes: list[list[int]] = []
    by_partition: dict[str, int] = {}
    for i, node in enumerate(node_list):
        if node.partition is None:
            group_of.append(len(group_nodes))
            group_nodes.append([i])
            continue
        g = by_partition.get(node.partition)
        if g is None:
            g = by_partition[node.partition] = len(group_nodes)
            group_nodes.append([])
        group_of.append(g)
        group_nodes[g].append(i)

    problem = Problem(settings=exp.embed, host_names=host_names, caps=host_capacities(cluster, exp.embed),
                      node_names=list(nodes), nodes=node_list, group_of=group_of, group_nodes=group_nodes,
                      demand=[], pin=[FREE] * len(group_nodes), physical=[False] * len(group_nodes),
                      pinned_vhosts=[set() for _ in host_names], pin_location=[None] * len(group_nodes))
    cache: dict[tuple[str, float | None, int | None], Demand] = {}    # most nodes ask alike
    for g, members in enumerate(group_nodes):
        if len(members) == 1:
            node = node_list[members[0]]
            key = (node.kind, node.cpus, node.memory)
            demand = cache.get(key)
            if demand is None:
                demand = cache[key] = node_demand(node)
            problem.demand.append(demand)
            problem.physical[g] = registry.get(node.kind).whole_host
        else:
            total = node_demand(node_list[members[0]])
            for i in members[1:]:
                total = total + node_demand(node_list[i])
            problem.demand.append(total)
            physical = [node_list[i] for i in members if registry.get(node_list[i].kind).whole_host]
            if physical:
                others = len(members) - 1
                raise EmbeddingError(f"partition {physical[0].partition!r} holds physical node {physical[0].name!r} "
                                     f"and {others} other node{'s' if others > 1 else ''}, but a physical node "
                                     "takes a whole host",
                                     physical[0].location, "give the physical node its own partition")
        for i in members:
            if node_list[i].host is not None:
                _resolve_pin(problem, g, i, host_index)
    return problem


def _resolve_pin(problem: Problem, g: int, i: int, host_index: dict[str, int]) -> None:
    node = problem.nodes[i]
    name = node.host
    assert name is not None
    vhost = None
    if name in host_index:
        host = host_index[name]
    else:
        match = VHOST_NAME.fullmatch(name)
        if not match or match.group("host") not in host_index:
            known = ", ".join(problem.host_names[:8]) + (", …" if len(problem.host_names) > 8 else "")
            raise EmbeddingError(f"node {node.name!r} is pinned to host {name!r}, which the cluster does not have",
                                 node.location, f"hosts: {known}")
        host, vhost = host_index[match.group("host")], int(match.group("index"))
        nests = registry.get(node.kind).runs_in_vhost
        if not nests or not problem.nested:
            why = "embed.processes_in is host" if nests else f"a {node.kind} node runs on a host, not inside a vhost"
            raise EmbeddingError(f"node {node.name!r} is pinned to vhost {name!r} but {why}", node.location,
                                 f"pin it to host {match.group('host')!r}"
                                 + (" or set embed.processes_in: qemu" if nests else ""))
    if problem.pin[g] not in (FREE, host):
        first = problem.host_names[problem.pin[g]]
        raise EmbeddingError(f"partition {node.partition!r} is pinned to host {first!r} ({problem.pin_location[g]}) "
                             f"and to host {problem.host_names[host]!r}", node.location,
                             "pin every node of a partition to the same host")
    problem.pin[g] = host
    problem.pin_location[g] = node.location
    if vhost is not None:
        problem.vhost_pin[i] = vhost
        problem.pinned_vhosts[host].add(vhost)
