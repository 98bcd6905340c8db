"""What the embedder answers: where each node runs (host, and the vhost VM for nested processes), which segments
cross hosts, and how good the placement is. Plain data: planning reads it, the CLI prints it, JSON carries it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nestbed.errors import TopologyError
from nestbed.types import NodeName, SegmentName


class EmbeddingError(TopologyError):
    """The vtopo cannot be placed on the cluster: one line naming the constraint and by how much it fails."""


@dataclass(slots=True)
class Placement:
    host: str
    vhost: str | None = None        # the vhost VM a process runs in (embed.processes_in: qemu), else None


@dataclass
class Metrics:
    inter_host_bandwidth_bps: float   # Σ over segments of bandwidth × (hosts it touches − 1)
    cut_segments: int                 # segments touching more than one host
    imbalance: float                  # max over hosts of containers / fair share − 1 (0 = perfectly even)
    violations: int                   # constraints broken (0 for anything embed() returns)
    seconds: float                    # time embed() took


@dataclass
class Embedding:
    placement: dict[NodeName, Placement]
    vhosts: dict[str, str]                              # vhost → host
    cut_segments: dict[SegmentName, list[str]]          # segment → hosts it touches, only those spanning >1 host
    metrics: Metrics
    host_names: list[str] = field(default_factory=list)  # every host of the cluster, in cluster order

    def hosts(self) -> dict[str, dict[str | None, list[NodeName]]]:
        """host → vhost (None: directly on the host) → nodes; hosts in cluster order, empty hosts included."""
        tree: dict[str, dict[str | None, list[NodeName]]] = {host: {} for host in self.host_names}
        for vhost, host in self.vhosts.items():
            tree.setdefault(host, {})[vhost] = []
        for node, place in self.placement.items():
            tree.setdefault(place.host, {}).setdefault(place.vhost, []).append(node)
        return tree

    def to_json(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "placement": {node: {"host": p.host, "vhost": p.vhost} for node, p in self.placement.items()},
            "vhosts": {vhost: {"host": host} for vhost, host in self.vhosts.items()},
            "metrics": {"inter_host_bandwidth_bps": m.inter_host_bandwidth_bps, "cut_segments": m.cut_segments,
                        "imbalance": m.imbalance, "violations": m.violations, "seconds": m.seconds},
            "cut_segments": dict(self.cut_segments),
        }
