"""What each node asks of a host, and what each host offers. The defaults are the embedder's documented rules.

Each node's own demand is its kind's answer (`nestbed.kinds`, looked up by name); the numbers below are the rules.
- A node is a *container* if it is a process or a qemu node; `embed.per_host` and a host's `max_containers` cap
  the containers on it, whether they run directly on the host or nested inside a vhost VM.
- A host's *VMs* are its qemu nodes plus the vhosts the embedder creates for nested processes; `max_vms` caps them.
- cpus/memory: a process asks only what it declares (it shares the host's kernel, so an unspecified one costs
  nothing); a qemu node without `cpus`/`memory` asks QEMU_CPUS and QEMU_MEMORY (what nestbed boots it with); a
  vhost VM costs VHOST_CPUS and VHOST_MEMORY on top of the processes inside it. A physical node's own declared
  demands must fit the host it takes.
- An unshaped link or LAN weighs DEFAULT_BANDWIDTH in the objective (the speed a veth or a 1G NIC gives).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from nestbed.kinds import registry
from nestbed.model.topology import EmbedSettings, Node

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.model.cluster import Cluster

DEFAULT_BANDWIDTH = 10**9            # bit/s for unshaped links and LANs
QEMU_CPUS = 1.0
QEMU_MEMORY = 512 * 2**20
VHOST_CPUS = 1.0
VHOST_MEMORY = 512 * 2**20
BALANCE_TOLERANCE = 0.10             # a host may carry 10% over its fair share (as DETER packing did) for less traffic
UNLIMITED = math.inf
CPU_SLACK = 1e-9                     # float sums of 0.1-cpu demands must not fail by rounding


@dataclass(frozen=True, slots=True)
class Demand:
    containers: int
    qemu: int
    processes: int
    cpus: float
    memory: int

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.containers + other.containers, self.qemu + other.qemu,
                      self.processes + other.processes, self.cpus + other.cpus, self.memory + other.memory)


NO_DEMAND = Demand(0, 0, 0, 0.0, 0)


def node_demand(node: Node) -> Demand:
    return registry.get(node.kind).demand(node)


@dataclass(frozen=True, slots=True)
class Capacity:
    containers: float        # min(embed.per_host, max_containers)
    vms: float
    cpus: float
    memory: float


def host_capacities(cluster: Cluster, settings: EmbedSettings) -> list[Capacity]:
    caps = []
    for spec in cluster.hosts.values():
        containers = min(settings.per_host, UNLIMITED if spec.max_containers is None else spec.max_containers)
        caps.append(Capacity(containers, UNLIMITED if spec.max_vms is None else spec.max_vms,
                             UNLIMITED if spec.cpus is None else spec.cpus,
                             UNLIMITED if spec.memory is None else spec.memory))
    return caps


def vhosts_needed(processes: int, pinned_vhosts: int, per_vhost: int) -> int:
    """Fewest vhosts holding `processes` when `pinned_vhosts` of them are named by pins (each within per_vhost)."""
    return max(pinned_vhosts, -(-processes // per_vhost))


def fair_shares(total: float, capacities: list[float]) -> list[float]:
    """Even split of `total` over hosts, no host above its capacity (water filling): the balance target."""
    shares = [0.0] * len(capacities)
    order = sorted(range(len(capacities)), key=lambda i: capacities[i])
    left, count = float(total), len(order)
    for rank, i in enumerate(order):
        share = min(capacities[i], left / (count - rank))
        shares[i] = share
        left -= share
    return shares
