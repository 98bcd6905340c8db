"""A placement of groups on hosts that knows its loads, what still fits, and what a move gains.

Repair and refinement both work through this one object, so they agree on the constraints (`fits`, `over`) and
on the objective (`gains`): the connectivity−1 metric over links and LANs.
"""
from __future__ import annotations

from nestbed.embed.demands import CPU_SLACK, VHOST_CPUS, VHOST_MEMORY
from nestbed.embed.graph import Graph
from nestbed.embed.problem import FREE, Problem

UNPLACED = -1


class Assignment:
    def __init__(self, problem: Problem, graph: Graph, host_of: list[int], closed: set[int]):
        self.problem, self.graph = problem, graph
        self.host_of = host_of
        hosts = len(problem.host_names)
        self.closed = [h in closed for h in range(hosts)]       # hosts taken by physical nodes
        self.fixed = [problem.pin[g] != FREE or problem.physical[g] for g in range(problem.group_count)]
        self.nested = problem.nested
        self.per_vhost = problem.settings.per_vhost
        self.pinned_vhosts = [len(s) for s in problem.pinned_vhosts]
        self.cap_containers = [c.containers for c in problem.caps]
        self.cap_vms = [c.vms for c in problem.caps]
        self.cap_cpus = [c.cpus + CPU_SLACK for c in problem.caps]
        self.cap_memory = [c.memory for c in problem.caps]
        # Per-group demands as flat lists: the hot loops read them millions of times.
        d = problem.demand
        self.g_containers = [x.containers for x in d]
        self.g_qemu = [x.qemu for x in d]
        self.g_processes = [x.processes for x in d]
        self.g_cpus = [x.cpus for x in d]
        self.g_memory = [x.memory for x in d]
        self.containers = [0] * hosts
        self.qemu = [0] * hosts
        self.processes = [0] * hosts
        self.cpus = [0.0] * hosts
        self.memory = [0] * hosts
        for g, h in enumerate(host_of):
            if h >= 0:                           # UNPLACED groups count nowhere (the exact search places them)
                self._add(g, h, 1)
        self.phi: list[dict[int, int]] = []      # net → host → members of the net there
        for members in graph.net_groups:
            counts: dict[int, int] = {}
            for g, count in members:
                h = host_of[g]
                if h >= 0:
                    counts[h] = counts.get(h, 0) + count
            self.phi.append(counts)

    def _add(self, g: int, h: int, sign: int) -> None:
        self.containers[h] += sign * self.g_containers[g]
        self.qemu[h] += sign * self.g_qemu[g]
        self.processes[h] += sign * self.g_processes[g]
        self.cpus[h] += sign * self.g_cpus[g]
        self.memory[h] += sign * self.g_memory[g]

    def vhosts(self, h: int, processes: int | None = None) -> int:
        if not self.nested:
            return 0
        p = self.processes[h] if processes is None else processes
        return max(self.pinned_vhosts[h], -(-p // self.per_vhost))

    def fits(self, h: int, g: int) -> bool:
        """Whether host h can take group g on top of what it has."""
        if self.closed[h] or self.containers[h] + self.g_containers[g] > self.cap_containers[h]:
            return False
        vhosts = self.vhosts(h, self.processes[h] + self.g_processes[g]) if self.nested else 0
        return (self.qemu[h] + self.g_qemu[g] + vhosts <= self.cap_vms[h]
                and self.cpus[h] + self.g_cpus[g] + vhosts * VHOST_CPUS <= self.cap_cpus[h]
                and self.memory[h] + self.g_memory[g] + vhosts * VHOST_MEMORY <= self.cap_memory[h])

    def over(self, h: int) -> bool:
        vhosts = self.vhosts(h)
        return (self.containers[h] > self.cap_containers[h] or self.qemu[h] + vhosts > self.cap_vms[h]
                or self.cpus[h] + vhosts * VHOST_CPUS > self.cap_cpus[h]
                or self.memory[h] + vhosts * VHOST_MEMORY > self.cap_memory[h])

    def relieves(self, h: int, g: int) -> bool:
        """Whether moving g off the overloaded host h lowers a quantity that h has too much of."""
        vhosts = self.vhosts(h)
        fewer_vhosts = self.nested and self.g_processes[g] > 0 and self.vhosts(
            h, self.processes[h] - self.g_processes[g]) < vhosts
        return bool((self.containers[h] > self.cap_containers[h] and self.g_containers[g])
                    or (self.qemu[h] + vhosts > self.cap_vms[h] and (self.g_qemu[g] or fewer_vhosts))
                    or (self.cpus[h] + vhosts * VHOST_CPUS > self.cap_cpus[h] and (self.g_cpus[g] or fewer_vhosts))
                    or (self.memory[h] + vhosts * VHOST_MEMORY > self.cap_memory[h]
                        and (self.g_memory[g] or fewer_vhosts)))

    def gains(self, g: int) -> tuple[int, dict[int, int]]:
        """(base, conn): moving g to host b changes the objective by −(base + conn.get(b, 0))."""
        host_of = self.host_of
        a = host_of[g]
        graph = self.graph
        conn: dict[int, int] = {}
        for j in range(graph.xadj[g], graph.xadj[g + 1]):
            h = host_of[graph.adj[j]]
            conn[h] = conn.get(h, 0) + graph.adjw[j]
        base = -conn.pop(a, 0)
        for net, count in graph.nets_of[g]:
            w = graph.net_weight[net]
            phi = self.phi[net]
            if phi[a] == count:
                base += w                  # the net leaves host a
            base -= w                      # it joins the destination, unless already there (added back below)
            if len(phi) <= 64:             # larger spreads: skip (underestimates the gain, never overstates it)
                for h in phi:
                    if h != a:
                        conn[h] = conn.get(h, 0) + w
        return base, conn

    def move(self, g: int, b: int) -> None:
        a = self.host_of[g]
        self._add(g, a, -1)
        self._add(g, b, 1)
        self.host_of[g] = b
        for net, count in self.graph.nets_of[g]:
            phi = self.phi[net]
            left = phi[a] - count
            if left:
                phi[a] = left
            else:
                del phi[a]
            phi[b] = phi.get(b, 0) + count

    def place(self, g: int, h: int) -> int:
        """Put an UNPLACED group on h; returns what that adds to the objective (placed neighbours only)."""
        graph, host_of = self.graph, self.host_of
        added = 0
        for j in range(graph.xadj[g], graph.xadj[g + 1]):
            other = host_of[graph.adj[j]]
            if other >= 0 and other != h:
                added += graph.adjw[j]
        for net, count in graph.nets_of[g]:
            phi = self.phi[net]
            if phi and h not in phi:
                added += graph.net_weight[net]
            phi[h] = phi.get(h, 0) + count
        self._add(g, h, 1)
        host_of[g] = h
        return added

    def unplace(self, g: int) -> None:
        h = self.host_of[g]
        self._add(g, h, -1)
        self.host_of[g] = UNPLACED
        for net, count in self.graph.nets_of[g]:
            phi = self.phi[net]
            if phi[h] == count:
                del phi[h]
            else:
                phi[h] -= count

    def objective(self) -> int:
        """Inter-host bandwidth of the placed groups (all of them, except during the exact search)."""
        graph, host_of = self.graph, self.host_of
        total = 0
        for g in range(len(host_of)):
            h = host_of[g]
            if h == UNPLACED:
                continue
            for j in range(graph.xadj[g], graph.xadj[g + 1]):
                other = host_of[graph.adj[j]]
                if other != h and other != UNPLACED:
                    total += graph.adjw[j]
        total //= 2
        return total + sum(w * (len(phi) - 1) for w, phi in zip(graph.net_weight, self.phi) if phi)
