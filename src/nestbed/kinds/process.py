"""kind: process — a network namespace on its host (or inside a vhost VM with embed.processes_in: qemu)."""
from __future__ import annotations

from nestbed.kinds.base import NodeKind
from nestbed.model.topology import Node


class Process(NodeKind):
    name = "process"
    runs_in_vhost = True
    marker = "o"
    marker_scale = 1.0

    def has_control(self, node: Node) -> bool:
        return node.control              # `control: true` gives it a ctl0 on the control network

    def label(self, name: str) -> str:
        return name                      # the plain kind: untagged


KIND = Process()
