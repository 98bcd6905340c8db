"""kind: qemu — a VM of its own; its guest agent configures the VM's root namespace as the node."""
from __future__ import annotations

from nestbed.embed.demands import QEMU_CPUS, QEMU_MEMORY
from nestbed.kinds.base import NodeKind
from nestbed.model.topology import Node

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.agent.launcherclient import Launcher
    from nestbed.agent.runners import NodeRunner
    from nestbed.plan.hostplan import HostPlan, VmPlan
    from nestbed.realize.state import ExperimentState


class Qemu(NodeKind):
    name = "qemu"
    own_vm = True
    default_cpus = QEMU_CPUS             # what nestbed boots it with when it declares none
    default_memory = QEMU_MEMORY
    marker = "D"

    def has_control(self, node: Node) -> bool:
        return True                      # its agent listens there

    boot_config_on_host = True           # guestboot applies what the host compiled; no full agent at boot

    def runner(self, state: ExperimentState, plan: HostPlan, vm: VmPlan | None,
               launcher: Launcher | None = None) -> NodeRunner:
        """Its programs run through the VM's guest agent."""
        assert vm is not None, "a node of a VM kind without its VM"
        from nestbed.agent.guestrunner import GuestRunner, vm_client
        return GuestRunner(vm_client(state, plan, vm))


KIND = Qemu()
