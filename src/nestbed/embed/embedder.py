"""embed(): place every node of a vtopo on the cluster's hosts, and processes in vhost VMs when asked.

Pipeline: index the problem → reject infeasible input in one line → physical nodes take hosts of their own →
METIS partitions the rest → repair makes every hard constraint hold → greedy refinement lowers inter-host
bandwidth without breaking any → processes are packed into vhosts → metrics, checked independently.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Mapping
from dataclasses import replace

from nestbed.embed import balance, exact, feasibility
from nestbed.embed.embedding import Embedding, EmbeddingError, Metrics, Placement
from nestbed.embed.graph import Graph, Segments, build_graph, collect_segments
from nestbed.embed.metrics import cut, violations
from nestbed.embed.partition import initial_placement
from nestbed.embed.physical import physical_choices
from nestbed.embed.problem import FREE, Problem, build_problem
from nestbed.embed.refine import refine
from nestbed.embed.repair import pack_first_fit, repair
from nestbed.embed.state import Assignment
from nestbed.embed.vhosts import pack_vhosts
from nestbed.model.cluster import Cluster
from nestbed.model.topology import Experiment, Node

REFINE_SECONDS = 2.0          # refinement stops after this long (it converges well before on 10⁵ nodes)
PHYSICAL_RETRY_SECONDS = 5.0  # other hosts for the physical nodes are tried for this long when the rest won't fit


def embed(exp: Experiment, cluster: Cluster, seed: int = 0, check: bool = True,
          placed: Mapping[str, str] | None = None) -> Embedding:
    """Place `exp` on `cluster`, deterministically for a given seed. Raises EmbeddingError if it cannot.

    `check` re-verifies the result against every constraint independently (cheap; tests rely on it).
    `placed`: node (a group's member too) → the host it runs on, as if each had `host:` (a running experiment
    changed in place keeps its nodes where they are); a node's own `host:` wins."""
    # Millions of small objects and no cycles: the cyclic GC would only rescan them (a third of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _embed(exp, cluster, seed, check, placed or {})
    finally:
        if collecting:
            gc.enable()


def _embed(exp: Experiment, cluster: Cluster, seed: int, check: bool, placed: Mapping[str, str]) -> Embedding:
    started = time.perf_counter()
    nodes = exp.expanded_nodes()
    for name, host in placed.items():
        node = nodes.get(name)
        if node is not None and node.host is None and host in cluster.hosts:
            nodes[name] = replace(node, host=host)
    problem = build_problem(exp, cluster, nodes)
    feasibility.check_pins(problem)
    choices = physical_choices(problem)           # also checks what remains can take the rest
    physical_host, open_hosts = next(choices)
    while True:
        try:
            state, share, segments = _place_rest(exp, nodes, problem, physical_host, open_hosts, seed, started)
            break
        except EmbeddingError:
            # Which hosts the physical nodes take can decide whether the rest fits: try the next choice.
            following = next(choices, None) if any(problem.physical) else None
            if following is None or time.perf_counter() - started > PHYSICAL_RETRY_SECONDS:
                raise
            physical_host, open_hosts = following

    host_of = state.host_of
    node_host = [host_of[g] for g in problem.group_of]
    node_vhost, vhosts = pack_vhosts(problem, state.graph if segments is not None else None, host_of)
    names = problem.host_names
    placement = {name: Placement(names[node_host[i]], node_vhost.get(i))
                 for i, name in enumerate(problem.node_names)}
    bandwidth, spans = 0.0, dict[str, list[str]]()
    if len(set(node_host)) > 1:
        segments = segments or collect_segments(exp, nodes, problem)
        bandwidth, spans = cut(segments, node_host, names)
    containers = {h: state.containers[h] for h in open_hosts}
    metrics = Metrics(bandwidth, len(spans), balance.imbalance(containers, share), 0, 0.0)
    embedding = Embedding(placement, vhosts, spans, metrics, list(names))
    if check:
        broken = violations(exp, cluster, embedding, nodes)
        if broken:      # a bug, not a user error: say what broke rather than hand out a bad placement
            raise EmbeddingError(f"internal error: the embedding breaks {len(broken)} constraints, e.g. "
                                 f"{broken[0]}", None, "please report this with the topology and cluster files")
    metrics.seconds = time.perf_counter() - started
    return embedding


def _place_rest(exp: Experiment, nodes: dict[str, Node], problem: Problem, physical_host: dict[int, int],
                open_hosts: list[int], seed: int,
                started: float) -> tuple[Assignment, dict[int, float], Segments | None]:
    """Everything but the physical nodes, on the hosts they leave open."""
    share = balance.shares(problem, open_hosts)
    fixed = dict(physical_host)
    for g in range(problem.group_count):
        if problem.pin[g] != FREE:
            fixed[g] = problem.pin[g]
    segments: Segments | None = None
    if len(open_hosts) > 1 or problem.nested:
        segments = collect_segments(exp, nodes, problem)
        state = _search(problem, build_graph(problem, segments), share, fixed, open_hosts, seed, started)
    else:                         # one host takes every container: nothing to decide, only to verify
        graph = Graph([0] * (problem.group_count + 1), [], [], [], [], [[] for _ in range(problem.group_count)])
        host_of = [fixed.get(g, open_hosts[0] if open_hosts else -1) for g in range(problem.group_count)]
        state = Assignment(problem, graph, host_of, set(physical_host.values()))
        repair(state, open_hosts)                     # raises with the failing constraint if it does not fit
    return state, share, segments


def _search(problem: Problem, graph: Graph, share: dict[int, float], fixed: dict[int, int],
            open_hosts: list[int], seed: int, started: float) -> Assignment:
    """Partition, repair, refine (and search exactly when small): a valid placement with a low cut."""
    closed = {h for g, h in fixed.items() if problem.physical[g]}
    state = Assignment(problem, graph, initial_placement(problem, graph, share, fixed, seed), closed)
    free = problem.group_count - len(fixed)
    small = exact.worth_trying(free, sum(1 for s in share.values() if s > 0))
    try:
        repair(state, open_hosts)
    except EmbeddingError:
        # Greedy repair can miss a packing that exists (bin packing is hard): small inputs get an
        # exhaustive search over every open host (a host the balance gives no share, e.g. one whose capacity is
        # all taken by its VMs' cpus, may still hold containers), larger ones a fresh first-fit-decreasing
        # packing; else the error stands.
        if not (exact.improve_exactly(state, open_hosts, None) if exact.worth_trying(free, len(open_hosts))
                else pack_first_fit(state, open_hosts)):
            raise
    if len(open_hosts) > 1:
        worst = balance.imbalance({h: state.containers[h] for h in open_hosts}, share)
        refine(state, balance.bounds(problem, share, worst), share, seed, started + REFINE_SECONDS)
        if small:
            exact.improve_exactly(state, open_hosts, balance.bounds(problem, share))
    return state
