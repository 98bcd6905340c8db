"""LocalHost: this machine as a host of the ptopo (the only one until the multi-host issue adds SSH).

Plans are realized here by the experiment lifecycle (agent/lifecycle.py: realize, then start the host agent);
the running experiment is driven through its host agent's unix socket (agent/hostclient.py).
"""
from __future__ import annotations

import threading
from typing import Any

from nestbed import paths
from nestbed.agent import lifecycle, supervision
from nestbed.agent.hostclient import HostAgentClient
from nestbed.agent.store import Store
from nestbed.model.cluster import LOCAL_HOST
from nestbed.plan.hostplan import HostPlan
from nestbed.realize.apply import Progress
from nestbed.realize.kernel import LINUX, Kernel
from nestbed.realize.state import experiment
from nestbed.realize.teardown import TeardownReport


class LocalHost:
    name = LOCAL_HOST

    def __init__(self, kernel: Kernel = LINUX):
        self.kernel = kernel        # what realization acts through (tests pass a fake)

    def apply(self, plan: HostPlan, progress: Progress | None = None) -> float:
        return lifecycle.up(plan, progress, kernel=self.kernel)

    def reconcile(self, plan: HostPlan, progress: Progress | None = None) -> lifecycle.Reconciled:
        """Up when absent, nothing when unchanged, the difference otherwise (agent/lifecycle.reconcile)."""
        return lifecycle.reconcile(plan, progress, kernel=self.kernel)

    def remove(self, experiment_name: str) -> TeardownReport | None:
        return lifecycle.down(experiment_name, kernel=self.kernel)

    def cleanup(self, everything: bool = False) -> list[TeardownReport]:
        return lifecycle.cleanup(everything, kernel=self.kernel)

    def status(self, experiment_name: str) -> dict[str, Any]:
        state = experiment(experiment_name)
        if not state.directory.is_dir():
            return {"state": "absent", "agent": None}
        return {**state.status(), "agent": supervision.agent_status(state)}

    def control(self, experiment_name: str) -> LocalControl:
        return LocalControl(experiment_name)


class LocalControl(HostAgentClient):
    """The host agent's client, and the store the agent writes read in place (it is on this machine)."""

    def __init__(self, experiment_name: str):
        super().__init__(experiment_name)
        self._store: Store | None = None
        self._store_lock = threading.Lock()

    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        with self._store_lock:
            if self._store is None:
                path = paths.store(self.state.directory)
                if not path.exists():          # nothing recorded yet (the agent makes it when it starts)
                    return []
                self._store = Store(path)
            return self._store.records(agent)

    def close(self) -> None:
        super().close()
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
