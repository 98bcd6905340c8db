"""The testbed's own VM (not a kind users write): it holds the process nodes that embed.processes_in: qemu nests.

It is no node of the topology: VmPlans of kind vhost use its size and its guest plan (the processes' namespaces).
"""
from __future__ import annotations

from nestbed.embed.demands import VHOST_CPUS, VHOST_MEMORY
from nestbed.kinds.base import NodeKind


class Vhost(NodeKind):
    name = "vhost"
    user_visible = False
    default_cpus = VHOST_CPUS
    default_memory = VHOST_MEMORY


KIND = Vhost()
