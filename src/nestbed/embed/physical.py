"""Hosts for physical nodes: each takes a whole host, so choosing which is a choice of what remains for the rest.

Which host does not change the objective (all of a physical node's traffic leaves its host wherever it is), but
it can decide feasibility: take the host with the most VMs and the qemu nodes may no longer fit. So unpinned
physical nodes take the hosts least useful to everything else (fewest average containers they can hold), and
if what remains cannot take the rest, other choices are tried (a bounded number) before giving up.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator

from nestbed.embed import balance, feasibility
from nestbed.embed.demands import CPU_SLACK
from nestbed.embed.embedding import EmbeddingError
from nestbed.embed.problem import FREE, Problem

MAX_TRIES = 200


def place_physical(problem: Problem) -> tuple[dict[int, int], list[int]]:
    """(physical group → host, the hosts left open for everything else); raises EmbeddingError if none works."""
    return next(physical_choices(problem))


def physical_choices(problem: Problem) -> Iterator[tuple[dict[int, int], list[int]]]:
    """Choices of hosts for the physical nodes, most promising first, each passing the quick feasibility checks;
    raises EmbeddingError (the first reason) when there is none. The embedder takes the next choice when the
    packing of the rest fails on one (the checks are necessary, not sufficient)."""
    hosts = range(len(problem.host_names))
    pinned = {g: problem.pin[g] for g in range(problem.group_count) if problem.physical[g] and problem.pin[g] != FREE}
    loose = [g for g in range(problem.group_count) if problem.physical[g] and problem.pin[g] == FREE]
    taken = {problem.pin[g] for g in range(problem.group_count) if problem.pin[g] != FREE}
    room = balance.container_room(problem, list(hosts))
    candidates = sorted((h for h in hosts if h not in taken), key=lambda h: (room[h], h))
    first_error: EmbeddingError | None = None
    yielded = False
    for chosen in itertools.islice(itertools.combinations(candidates, len(loose)), MAX_TRIES):
        placed = _match(problem, loose, list(chosen))
        if placed is None:
            continue
        placed.update(pinned)
        open_hosts = [h for h in hosts if h not in placed.values()]
        try:
            feasibility.check_groups(problem, open_hosts)
            feasibility.check_totals(problem, open_hosts)
        except EmbeddingError as err:
            first_error = first_error or err
            continue
        yielded = True
        yield placed, open_hosts
    if yielded:
        return
    if first_error is not None:
        raise first_error
    g = loose[0]
    raise EmbeddingError(f"physical node {problem.node_names[problem.group_nodes[g][0]]!r} finds no free host that "
                         f"fits it ({len(candidates)} hosts are free of pins)",
                         problem.nodes[problem.group_nodes[g][0]].location, "add a host or lower its cpus/memory")


def _match(problem: Problem, groups: list[int], hosts: list[int]) -> dict[int, int] | None:
    """Give each physical group one of `hosts` that meets its cpus/memory (most demanding first), or None."""
    placed: dict[int, int] = {}
    free = list(hosts)
    for g in sorted(groups, key=lambda g: (-problem.demand[g].memory, -problem.demand[g].cpus, g)):
        demand = problem.demand[g]
        fits = [h for h in free if demand.cpus <= problem.caps[h].cpus + CPU_SLACK
                and demand.memory <= problem.caps[h].memory]
        if not fits:
            return None
        best = min(fits, key=lambda h: (problem.caps[h].memory, problem.caps[h].cpus, h))   # tightest that fits
        placed[g] = best
        free.remove(best)
    return placed
