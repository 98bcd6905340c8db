"""kind: physical — a machine of its own: the embedder gives it a whole host (its declared cpus/memory must fit).

On a cluster, its host's own namespace is the node (plan/multihost.py gives its NodePlan that namespace and
host_netns): on an emulated host, the host's namespace; programs run in it as in a process node. On one host
there is no host to give it: `check_realizable` refuses it at preflight."""
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
        raise PreflightError(f"node(s) {name_list(nodes)} are of kind {self.name}: each takes a host of its own; "
                             f"realize it on a cluster (nestbed up TOPO --cluster C, e.g. emulate: N), or use "
                             f"kind: process on one host")

    def runner(self, state: ExperimentState, plan: HostPlan, vm: VmPlan | None,
               launcher: Launcher | None = None) -> NodeRunner:
        """Its host's namespace, entered as a process node's (the host agent's launcher, or directly)."""
        from nestbed.kinds.process import KIND as PROCESS
        return PROCESS.runner(state, plan, vm, launcher)


KIND = Physical()
