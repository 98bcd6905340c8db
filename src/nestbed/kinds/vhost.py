"""The testbed's own VM (not a kind users write): it holds the process nodes that embed.processes_in: qemu nests.

It is no node of the topology: VmPlans of kind vhost use its size and its guest plan (the processes' namespaces).
"""
from __future__ import annotations

from nestbed.embed.demands import VHOST_CPUS, VHOST_MEMORY
from nestbed.kinds.base import NodeKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.agent.launcherclient import Launcher
    from nestbed.agent.runners import NodeRunner
    from nestbed.plan.hostplan import HostPlan, VmPlan
    from nestbed.realize.state import ExperimentState


class Vhost(NodeKind):
    name = "vhost"
    user_visible = False
    default_cpus = VHOST_CPUS
    default_memory = VHOST_MEMORY

    def runner(self, state: ExperimentState, plan: HostPlan, vm: VmPlan | None,
               launcher: Launcher | None = None) -> NodeRunner:
        """Its programs run through the VM's guest agent."""
        assert vm is not None, "a node of a VM kind without its VM"
        from nestbed.agent.guestrunner import GuestRunner, vm_client
        return GuestRunner(vm_client(state, plan, vm))


KIND = Vhost()
