"""HostTransport: how the controller reaches one host of the ptopo.

It gives the host its plan (`apply`), takes an experiment off it (`remove`, `cleanup`), reads its status, and drives
the running experiment (`control`: run programs in nodes, spawn and stop them, publish and receive events). `up`,
`down`, `cleanup`, `status`, `run`, `collect` and `demo` go through one; on one host `exec`, `shell`, `link`,
`linktest` and `counters` reach its nodes directly. `LocalHost` (cluster/local.py) is this machine, `SshHost`
(cluster/ssh.py) any other (one connection per host, one long-lived channel to its agent); cluster/deploy.py drives
an experiment over several. The scale-out issue adds an etcd one; the CLI does not change when it comes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nestbed.cluster.control import ExperimentControl
    from nestbed.plan.hostplan import HostPlan
    from nestbed.realize.apply import Progress
    from nestbed.realize.teardown import TeardownReport


class HostTransport(Protocol):
    name: str

    def apply(self, plan: HostPlan, progress: Progress | None = None) -> float:
        """Realize the plan on the host (nothing left behind on failure); returns the seconds it took."""

    def remove(self, experiment: str) -> TeardownReport | None:
        """Take the experiment off the host, from its journal; None when the host has no such experiment."""

    def cleanup(self, everything: bool = False) -> list[TeardownReport]:
        """Remove what crashed runs left on the host (with everything: every experiment)."""

    def status(self, experiment: str) -> dict[str, Any]:
        """The experiment's state on the host: {"state", "agent", …} (state "absent" when it has none)."""

    def control(self, experiment: str) -> ExperimentControl:
        """Drive the running experiment: programs in nodes, records, events, link changes."""
