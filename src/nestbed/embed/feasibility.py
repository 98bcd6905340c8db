"""Infeasible input, caught before any search, each case as one line saying which constraint fails and by how much.

These are necessary conditions; the repair pass finds the rare packing that passes them and still cannot be
made (e.g. many large partitions), and says so in the same style.
"""
from __future__ import annotations

from nestbed.embed.demands import (
    CPU_SLACK,
    NO_DEMAND,
    VHOST_CPUS,
    VHOST_MEMORY,
    Capacity,
    Demand,
    vhosts_needed,
)
from nestbed.embed.embedding import EmbeddingError
from nestbed.embed.problem import FREE, Problem, vhost_name


def fmt_memory(size: float) -> str:
    for scale, unit in ((2**40, "T"), (2**30, "G"), (2**20, "M")):
        if size >= scale:
            return f"{size / scale:.4g}{unit}"
    return f"{size:.0f}B"


def fmt_count(value: float) -> str:
    return f"{value:g}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def container_limit(problem: Problem, host: int) -> str:
    """Which setting makes a host's container cap, for messages ("per_host is 10" / "max_containers is 8")."""
    cap = problem.caps[host].containers
    return f"per_host is {cap:g}" if cap == problem.settings.per_host else f"max_containers is {cap:g}"


def overload(problem: Problem, host: int, load: Demand, pinned_vhosts: int = 0) -> tuple[str, str] | None:
    """What `load` breaks on `host` as (what it needs, the limit), e.g. ("14 nodes", "per_host is 10"); None if
    it fits. Counts of nodes come first since they are what users set most."""
    cap: Capacity = problem.caps[host]
    vhosts = vhosts_needed(load.processes, pinned_vhosts, problem.settings.per_vhost) if problem.nested else 0
    if load.containers > cap.containers:
        return f"{load.containers} nodes", container_limit(problem, host)
    if load.qemu + vhosts > cap.vms:
        what = f"{load.qemu} qemu nodes" + (f" and {vhosts} vhosts" if vhosts else "")
        return what, f"max_vms is {cap.vms:g}"
    cpus = load.cpus + vhosts * VHOST_CPUS
    if cpus > cap.cpus + CPU_SLACK:
        return f"{fmt_count(cpus)} cpus", f"it has {fmt_count(cap.cpus)}"
    memory = load.memory + vhosts * VHOST_MEMORY
    if memory > cap.memory:
        return f"{fmt_memory(memory)} memory", f"it has {fmt_memory(cap.memory)}"
    return None


def check_pins(problem: Problem) -> None:
    """Physical nodes against hosts, and everything pinned to one host against that host."""
    hosts = len(problem.host_names)
    physical = [g for g in range(problem.group_count) if problem.physical[g]]
    others = sum(1 for g in range(problem.group_count) if not problem.physical[g])
    if len(physical) > hosts:
        raise EmbeddingError(f"{plural(len(physical), 'physical node')} but {plural(hosts, 'host')}", None,
                             "a physical node takes a whole host: add hosts or use qemu nodes")
    if physical and others and len(physical) >= hosts:
        takes = "takes the only host" if hosts == 1 else f"take all {hosts} hosts"
        raise EmbeddingError(f"{plural(len(physical), 'physical node')} {takes}, leaving "
                             f"none for {plural(others, 'other node')}", None, "add a host")
    pinned: list[Demand] = [NO_DEMAND] * hosts
    pinned_count = [0] * hosts
    pinned_at: list[str | None] = [None] * hosts        # where the first pin to each host was written
    physical_on: dict[int, int] = {}
    for g in range(problem.group_count):
        host = problem.pin[g]
        if host == FREE:
            continue
        if problem.physical[g]:
            if host in physical_on:
                first = problem.node_names[problem.group_nodes[physical_on[host]][0]]
                raise EmbeddingError(f"physical nodes {first!r} and {_name(problem, g)!r} are both pinned to host "
                                     f"{problem.host_names[host]!r}", problem.pin_location[g],
                                     "a physical node takes a whole host")
            physical_on[host] = g
        pinned[host] = pinned[host] + problem.demand[g]
        pinned_count[host] += len(problem.group_nodes[g])
        pinned_at[host] = pinned_at[host] or problem.pin_location[g]
    for host, g in physical_on.items():
        if pinned_count[host] > 1:
            raise EmbeddingError(f"host {problem.host_names[host]!r} is pinned by physical node {_name(problem, g)!r} "
                                 f"and {plural(pinned_count[host] - 1, 'other node')}", problem.pin_location[g],
                                 "a physical node takes a whole host")
        check_physical_fits(problem, g, host)
    for host in range(hosts):
        if pinned_count[host] and host not in physical_on:
            reason = overload(problem, host, pinned[host], len(problem.pinned_vhosts[host]))
            if reason:
                need, limit = reason
                by = need if need.endswith(("nodes", "vhosts")) else f"nodes needing {need}"
                raise EmbeddingError(f"host {problem.host_names[host]!r} pinned by {by} but {limit}", pinned_at[host],
                                     "pin fewer nodes there or raise its capacity")
    _check_vhost_pins(problem)


def _check_vhost_pins(problem: Problem) -> None:
    per_vhost = problem.settings.per_vhost
    counts: dict[tuple[int, int], int] = {}
    for node, index in problem.vhost_pin.items():
        key = (problem.pin[problem.group_of[node]], index)
        counts[key] = counts.get(key, 0) + 1
    for (host, index), count in counts.items():
        if count > per_vhost:
            raise EmbeddingError(f"vhost {vhost_name(problem.host_names[host], index)!r} pinned by {count} processes "
                                 f"but per_vhost is {per_vhost}", None, "pin fewer processes to it")


def check_groups(problem: Problem, open_hosts: list[int]) -> None:
    """Each free group (a partition or a lone node) must fit alone on some host that takes containers."""
    # Hosts with equal capacities answer alike, and so do groups with equal demands: check each pair once.
    classes: dict[Capacity, int] = {}
    for h in open_hosts:
        classes.setdefault(problem.caps[h], h)
    representatives = list(classes.values())
    checked: set[Demand] = set()
    for g in range(problem.group_count):
        demand = problem.demand[g]
        if problem.pin[g] != FREE or problem.physical[g] or demand in checked:
            continue
        checked.add(demand)
        reasons = [overload(problem, h, demand) for h in representatives]
        if representatives and all(reasons):
            best = min(range(len(representatives)), key=lambda i: _shortfall(problem, representatives[i], demand))
            members = problem.group_nodes[g]
            first = problem.nodes[members[0]]
            what = (f"partition {first.partition!r}" if len(members) > 1 or first.partition is not None
                    else f"node {first.name!r}")
            need, limit = reasons[best] or ("", "")
            hint = ("split the partition or raise the capacity" if what.startswith("partition")
                    else "lower its demands or raise a host's capacity")
            raise EmbeddingError(f"{what} fits no host: on {problem.host_names[representatives[best]]!r} it needs "
                                 f"{need} but {limit}", first.location, hint)


def _shortfall(problem: Problem, host: int, demand: Demand) -> float:
    cap = problem.caps[host]
    return (max(0, demand.containers - cap.containers) + max(0, demand.qemu - cap.vms)
            + max(0.0, demand.cpus - cap.cpus) + max(0, demand.memory - cap.memory) / 2**30)


def check_physical_fits(problem: Problem, g: int, host: int) -> None:
    demand, cap = problem.demand[g], problem.caps[host]
    if demand.cpus > cap.cpus + CPU_SLACK or demand.memory > cap.memory:
        need = (f"{fmt_count(demand.cpus)} cpus but it has {fmt_count(cap.cpus)}"
                if demand.cpus > cap.cpus + CPU_SLACK
                else f"{fmt_memory(demand.memory)} memory but it has {fmt_memory(cap.memory)}")
        raise EmbeddingError(f"physical node {_name(problem, g)!r} pinned to host {problem.host_names[host]!r} "
                             f"needs {need}", problem.pin_location[g])


def check_totals(problem: Problem, open_hosts: list[int]) -> None:
    """Everything that is not physical, against the sum of what the remaining hosts offer."""
    total = problem.free_total()
    if total.containers == 0:
        return
    caps = [problem.caps[h] for h in open_hosts]
    where = "the host" if len(open_hosts) == 1 else f"the {len(open_hosts)} hosts"
    if len(open_hosts) < len(problem.host_names):
        where += " not taken by physical nodes"
    room = sum(c.containers for c in caps)
    take, allow, have = ("takes", "allows", "has") if len(open_hosts) == 1 else ("take", "allow", "have")
    if total.containers > room:
        limits = sorted({container_limit(problem, h) for h in open_hosts})
        raise EmbeddingError(f"{total.containers} process and qemu nodes but {where} {take} at most {room:g} "
                             f"({'; '.join(limits[:3])})", None, "add hosts or raise embed.per_host/max_containers")
    vhosts = -(-total.processes // problem.settings.per_vhost) if problem.nested else 0
    vms = sum(c.vms for c in caps)
    if total.qemu + vhosts > vms:
        what = f"{total.qemu} qemu nodes" + (f" and at least {vhosts} vhosts" if vhosts else "")
        raise EmbeddingError(f"{what} but {where} {allow} at most {vms:g} VMs (max_vms)", None,
                             "add hosts or raise max_vms" + (" or embed.per_vhost" if vhosts else ""))
    cpus, have_cpus = total.cpus + vhosts * VHOST_CPUS, sum(c.cpus for c in caps)
    if cpus > have_cpus + CPU_SLACK:
        raise EmbeddingError(f"the nodes need {fmt_count(cpus)} cpus but {where} {have} {fmt_count(have_cpus)}", None,
                             "add hosts or lower the nodes' cpus")
    memory, have_memory = total.memory + vhosts * VHOST_MEMORY, sum(c.memory for c in caps)
    if memory > have_memory:
        raise EmbeddingError(f"the nodes need {fmt_memory(memory)} memory but {where} {have} "
                             f"{fmt_memory(have_memory)}", None, "add hosts or lower the nodes' memory")


def _name(problem: Problem, g: int) -> str:
    return problem.node_names[problem.group_nodes[g][0]]
