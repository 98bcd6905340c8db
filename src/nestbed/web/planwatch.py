"""The plan a running server shows, read again when it changes: `nestbed modify` (and a relocation) rewrite
plan.json while `nestbed web` runs, and frames index links by the plan's segment order, so a frame made from an
older plan would colour the wrong links.

    plans = PlanWatch(state)
    plans.current()        # the plan (None before `up` wrote it), re-read when plan.json's mtime changed
    plans.node("a")        # one node, from an index (a node panel polls once a second)
    plans.version          # what the page compares: the plan.json it drew against the one frames come from
    links_version(state)   # the same for links.json: `nestbed link` from the CLI changed a link's shaping

Versions are the files' mtimes in ns, as text ("0": no file): the topology JSON and every counters frame carry
both, and the page reloads its topology when one differs.
"""
from __future__ import annotations

import threading
from pathlib import Path

from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState


def _stamp(path: Path) -> str:
    try:
        return str(path.stat().st_mtime_ns)
    except OSError:
        return "0"


def plan_version(state: ExperimentState) -> str:
    return _stamp(state.plan_path)


def links_version(state: ExperimentState) -> str:
    return _stamp(linkstate.links_path(state))


class PlanWatch:
    def __init__(self, state: ExperimentState):
        self.state = state
        self.version = "0"                     # of the plan `current` last returned
        self._plan: HostPlan | None = None
        self._nodes: dict[str, NodePlan] = {}
        self._lock = threading.Lock()          # the feed and node requests read from executor threads

    def current(self) -> HostPlan | None:
        with self._lock:
            stamp = plan_version(self.state)
            if stamp != self.version or self._plan is None:
                plan = self.state.load_plan() if stamp != "0" else None
                self._plan, self.version = plan, stamp
                self._nodes = {} if plan is None else {node.name: node for node in plan.every_node()}
            return self._plan

    def node(self, name: str) -> NodePlan | None:
        self.current()
        return self._nodes.get(name)
