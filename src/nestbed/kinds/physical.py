"""kind: physical — a machine of its own: the embedder gives it a whole host (its declared cpus/memory must fit).

This version places physical nodes but cannot realize them: `check_realizable` refuses them at preflight."""
from __future__ import annotations

from nestbed.embed.demands import Demand
from nestbed.kinds.base import NodeKind
from nestbed.model.topology import Node

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.agent.launcherclient import Launcher
    from nestbed.agent.runners import NodeRunner
    from nestbed.plan.hostplan import HostPlan, VmPlan
    from nestbed.realize.state import ExperimentState


class Physical(NodeKind):
    name = "physical"
    whole_host = True
    marker = "p"

    def demand(self, node: Node) -> Demand:
        return Demand(containers=0, qemu=0, processes=0, cpus=self.cpus(node), memory=self.memory(node))

    def check_realizable(self, nodes: list[str]) -> None:
        from nestbed.errors import PreflightError
        from nestbed.realize.preflight import name_list
        raise PreflightError(f"node(s) {name_list(nodes)} are of kind {self.name}, which this version cannot "
                             f"realize yet; use kind: process for now")

    def runner(self, state: ExperimentState, plan: HostPlan, vm: VmPlan | None,
               launcher: Launcher | None = None) -> NodeRunner:
        from nestbed.errors import ExperimentError
        raise ExperimentError("physical nodes cannot run programs until multi-host lands")


KIND = Physical()
