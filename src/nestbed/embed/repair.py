"""Make a placement meet every hard constraint, losing as little of the objective as possible.

The partitioner only balances container counts, approximately; hosts may still be over per_host/max_containers,
max_vms, cpus or memory. For each overloaded host we move free groups off it, always the move that costs least
(lazy greedy: a priority queue of candidate moves whose costs are re-checked when they come up), and only to a
host that can take the group whole. Pinned and physical groups never move.
"""
from __future__ import annotations

import heapq

from nestbed.embed.demands import NO_DEMAND, Demand
from nestbed.embed.embedding import EmbeddingError
from nestbed.embed.feasibility import overload
from nestbed.embed.state import Assignment


def repair(state: Assignment, open_hosts: list[int]) -> int:
    """Returns the number of moves made; raises EmbeddingError when no move can fix a host."""
    overloaded = [h for h in open_hosts if state.over(h)]
    if not overloaded:
        return 0
    on_host: dict[int, list[int]] = {h: [] for h in overloaded}
    for g, h in enumerate(state.host_of):
        if h in on_host and not state.fixed[g]:
            on_host[h].append(g)
    moves = 0
    for h in overloaded:
        moves += _relieve(state, h, on_host[h], open_hosts)
    return moves


def _relieve(state: Assignment, h: int, groups: list[int], open_hosts: list[int]) -> int:
    # Hosts with most room first: the fallback destination when no neighbouring host can take a group.
    roomy = sorted(open_hosts, key=lambda b: (state.containers[b] - state.cap_containers[b], b))
    heap: list[tuple[int, int, int]] = []
    for g in groups:
        if state.relieves(h, g):
            gain, _b = _best_move(state, g, roomy)
            heapq.heappush(heap, (-gain, g, _b))
    moves = 0
    while state.over(h):
        if not heap:
            _fail(state, h)
        _neg, g, _b = heapq.heappop(heap)
        if state.host_of[g] != h or not state.relieves(h, g):
            continue
        gain, b = _best_move(state, g, roomy)
        if b < 0:
            continue
        if heap and -gain > heap[0][0]:     # got worse since it was queued: let the others compete again
            heapq.heappush(heap, (-gain, g, b))
            continue
        state.move(g, b)
        moves += 1
    return moves


def _best_move(state: Assignment, g: int, roomy: list[int]) -> tuple[int, int]:
    """(gain, destination) of the cheapest feasible move of g, or (minimum, -1) if no host can take it."""
    a = state.host_of[g]
    base, conn = state.gains(g)
    best_gain, best = -(1 << 62), -1
    for b, c in sorted(conn.items(), key=lambda item: -item[1]):
        if b != a and state.fits(b, g):
            best_gain, best = base + c, b
            break
    if best_gain < base:           # a host with no tie to g costs `base`; take the roomiest that fits
        for b in roomy:
            if b != a and b not in conn and state.fits(b, g):
                return base, b
    return best_gain, best


def pack_first_fit(state: Assignment, open_hosts: list[int]) -> bool:
    """Place every free group afresh, biggest first, each on the host with most container room that can take
    it (ignoring traffic: refinement recovers it). True if everything fits; else the state is left as it was."""
    free = [g for g in range(len(state.host_of)) if not state.fixed[g]]
    before = {g: state.host_of[g] for g in free}
    for g in free:
        state.unplace(g)

    def size(g: int) -> tuple[float, ...]:       # the scarcest resources first
        return (-state.g_qemu[g] - state.g_processes[g] / state.per_vhost, -state.g_containers[g],
                -state.g_cpus[g], -state.g_memory[g], g)

    for g in sorted(free, key=size):
        fits = [h for h in open_hosts if state.fits(h, g)]
        if not fits:
            for placed in free:
                if state.host_of[placed] >= 0:
                    state.unplace(placed)
            for other, h in before.items():
                state.place(other, h)
            return False
        state.place(g, max(fits, key=lambda h: (state.cap_containers[h] - state.containers[h], -h)))
    return True


def _fail(state: Assignment, h: int) -> None:
    problem = state.problem
    load = Demand(state.containers[h], state.qemu[h], state.processes[h], state.cpus[h], state.memory[h])
    reason = overload(problem, h, load, state.pinned_vhosts[h]) or ("more than it can hold", "its capacity")
    need, limit = reason
    if load == NO_DEMAND:
        need = "nothing"
    raise EmbeddingError(f"no placement meets every constraint: host {problem.host_names[h]!r} is left with "
                         f"{need} but {limit}, and no other host can take any of its movable nodes", None,
                         "add hosts, raise capacities, or use fewer/smaller partitions")
