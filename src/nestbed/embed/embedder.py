"""embed(): place every node of a vtopo on the cluster's hosts, and processes in vhost VMs when asked.

Pipeline: index the problem → reject infeasible input in one line → physical nodes take hosts of their own →
METIS partitions the rest → repair makes every hard constraint hold → greedy refinement lowers inter-host
bandwidth without breaking any → processes are packed into vhosts → metrics, checked independently.
"""
from __future__ import annotations

import gc
import time

from nestbed.embed import balance, exact, feasibility
from nestbed.embed.embedding import Embedding, EmbeddingError, Metrics, Placement
from nestbed.embed.graph import Graph, build_graph, collect_segments
from nestbed.embed.metrics import cut, violations
from nestbed.embed.partition import initial_placement
from nestbed.embed.physical import place_physical
from nestbed.embed.problem import FREE, build_problem
from nestbed.embed.refine import refine
from nestbed.embed.repair import pack_first_fit, repair
from nestbed.embed.state import Assignment
from nestbed.embed.vhosts import pack_vhosts
from nestbed.model.cluster import Cluster
from nestbed.model.topology import Experiment

REFINE_SECONDS = 2.0          # refinement stops after this long (it converges well before on 10⁵ nodes)


def embed(exp: Experiment, cluster: Cluster, seed: int = 0, check: bool = True) -> Embedding:
    """Place `exp` on `cluster`, deterministically for a given seed. Raises EmbeddingError if it cannot.

    `check` re-verifies the result against every constraint independently (cheap; tests rely on it)."""
    # Millions of small objects and no cycles: the cyclic GC would only rescan them (a third of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _embed(exp, cluster, seed, check)
    finally:
        if collecting:
            gc.enable()


def _embed(exp: Experiment, cluster: Cluster, seed: int, check: bool) -> Embedding:
    started = time.perf_counter()
    nodes = exp.expanded_nodes()
    problem = build_problem(exp, cluster, nodes)
    feasibility.check_pins(problem)
    physical_host, open_hosts = place_physical(problem)      # also checks what remains can take the rest
    closed = set(physical_host.values())
    share = balance.shares(problem, open_hosts)

    fixed = dict(physical_host)
    for g in range(problem.group_count):
        if problem.pin[g] != FREE:
            fixed[g] = problem.pin[g]
    segments = collect_segments(exp, nodes, problem)
    graph: Graph | None = None
    if len(open_hosts) > 1 or problem.nested:
        graph = build_graph(problem, segments)
    if graph is None:             # one host takes every container: nothing to decide, only to verify
        graph = Graph([0] * (problem.group_count + 1), [], [], [], [], [[] for _ in range(problem.group_count)])
        host_of = [fixed.get(g, open_hosts[0] if open_hosts else -1) for g in range(problem.group_count)]
        state = Assignment(problem, graph, host_of, closed)
        repair(state, open_hosts)                     # raises with the failing constraint if it does not fit
    else:
        host_of = initial_placement(problem, graph, share, fixed, seed)
        state = Assignment(problem, graph, host_of, closed)
        free = sum(1 for g in range(problem.group_count) if g not in fixed)
        small = exact.worth_trying(free, sum(1 for s in share.values() if s > 0))
        try:
            repair(state, open_hosts)
        except EmbeddingError:
            # Greedy repair can miss a packing that exists (bin packing is hard): small inputs get an
            # exhaustive search, larger ones a fresh first-fit-decreasing packing; else the error stands.
            if not (exact.improve_exactly(state, open_hosts, None) if small else pack_first_fit(state, open_hosts)):
                raise
        if len(open_hosts) > 1:
            worst = balance.imbalance({h: state.containers[h] for h in open_hosts}, share)
            refine(state, balance.bounds(problem, share, worst), share, seed, started + REFINE_SECONDS)
            if small:
                exact.improve_exactly(state, open_hosts, balance.bounds(problem, share))

    node_host = [host_of[g] for g in problem.group_of]
    node_vhost, vhosts = pack_vhosts(problem, graph, host_of)
    names = problem.host_names
    placement = {name: Placement(names[node_host[i]], node_vhost.get(i))
                 for i, name in enumerate(problem.node_names)}
    used_hosts = len(set(node_host))
    bandwidth, spans = cut(segments, node_host, names) if used_hosts > 1 else (0.0, {})
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
