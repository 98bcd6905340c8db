"""kind: process — a network namespace on its host (or inside a vhost VM with embed.processes_in: qemu)."""
from __future__ import annotations

from nestbed.kinds.base import NodeKind
from nestbed.model.topology import Node

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.agent.launcherclient import Launcher
    from nestbed.agent.runners import NodeRunner
    from nestbed.plan.hostplan import HostPlan, VmPlan
    from nestbed.realize.state import ExperimentState


class Process(NodeKind):
    name = "process"
    runs_in_vhost = True
    marker = "o"
    marker_scale = 1.0

    def has_control(self, node: Node) -> bool:
        return node.control              # `control: true` gives it a ctl0 on the control network

    def label(self, name: str) -> str:
        return name                      # the plain kind: untagged

    def runner(self, state: ExperimentState, plan: HostPlan, vm: VmPlan | None,
               launcher: Launcher | None = None) -> NodeRunner:
        """A namespace of this host: the host agent's launcher, or (the controller) entering it directly."""
        if launcher is not None:
            from nestbed.agent.launcherrunner import LauncherRunner
            return LauncherRunner(state, launcher)
        from nestbed.agent.localrunner import LocalRunner
        return LocalRunner(state, plan)


KIND = Process()
