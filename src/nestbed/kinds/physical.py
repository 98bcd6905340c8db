"""kind: physical — a machine of its own: the embedder gives it a whole host (its declared cpus/memory must fit).

This version places physical nodes but cannot realize them (realize/preflight.py refuses the plan)."""
from __future__ import annotations

from nestbed.embed.demands import Demand
from nestbed.kinds.base import NodeKind
from nestbed.model.topology import Node


class Physical(NodeKind):
    name = "physical"
    whole_host = True
    marker = "p"

    def demand(self, node: Node) -> Demand:
        return Demand(containers=0, qemu=0, processes=0, cpus=self.cpus(node), memory=self.memory(node))


KIND = Physical()
