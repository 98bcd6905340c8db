"""An experiment's life on this host: up (preflight, journal, realize, host agent, roll back on failure), down,
cleanup, and reconcile (the one entry every engine calls: up when absent, nothing for the same plan, the
difference for a changed one, down for an empty one; a changed node set is reloaded by the running host agent).
Realization and teardown are realize's (journal-driven, agent-free); the host agent is started here after
realization and stopped here before teardown.
"""
from __future__ import annotations

import errno
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestbed.agent import supervision
from nestbed.errors import ExperimentError
from nestbed.plan.diff import PlanDiff, diff
from nestbed.plan.hostplan import HostPlan
from nestbed.realize import credential, processes
from nestbed.realize import teardown as realized
from nestbed.realize.apply import NoProgress, Progress, realize
from nestbed.realize.kernel import LINUX, Kernel
from nestbed.realize.state import ExperimentState, all_experiments, experiment, make_root
from nestbed.realize.teardown import TeardownReport

BOOKKEEPING = ("status.json", "plan.json", "lock", "shellrc", "status.json.tmp")


def up(plan: HostPlan, progress: Progress | None = None, kernel: Kernel = LINUX) -> float:
    """Realize the plan; on any failure remove everything created so far and re-raise. Returns seconds taken."""
    started = time.monotonic()
    state = experiment(plan.experiment)
    if state.directory.exists():
        _refuse_existing(state)
    features = kernel.features(plan)
    lock = _claim(state)
    try:
        state.journal.record([{"t": "file", "path": str(state.directory / f)} for f in BOOKKEEPING]
                             + [{"t": "dir", "path": str(state.directory)}])
        state.plan_path.write_text(plan.to_json())
        (state.directory / "shellrc").write_text(processes.shell_rc(plan.experiment))
        state.set_status("creating", started=time.time())
        try:
            credential.ensure(state)               # every experiment has one: VMs and the host agent check it
            spawned = supervision.spawn_agent(state)   # the host agent: exec, events, mailboxes, counters
            realize(plan, state, features, progress or NoProgress(), kernel=kernel)
            agent = spawned.start()
            state.set_status("creating", agent=agent)
        except BaseException:
            teardown(state, kernel)
            raise
        seconds = time.monotonic() - started
        state.set_status("up", seconds=round(seconds, 3))
        return seconds
    finally:
        os.close(lock)


@dataclass
class Reconciled:
    action: str                   # "up" | "changed" | "unchanged" | "down"
    seconds: float
    diff: PlanDiff = field(default_factory=PlanDiff)
    agent_reloaded: bool = False      # the host agent took the new node set in place (its `reload` op)
    agent_restarted: bool = False     # … or, when it could not, was started anew


def reconcile(plan: HostPlan, progress: Progress | None = None, kernel: Kernel = LINUX) -> Reconciled:
    """Make this host hold `plan`, whatever it holds now (convergent): absent → up; the plan it holds → nothing
    at all (no kernel call); an empty plan (no nodes) → down; otherwise only the difference (realize/reconcile.py),
    journal first, untouched nodes keeping their processes. The plan should be compiled with the running one's
    pins (plan/pins.py), or everything renumbered looks changed."""
    started = time.monotonic()
    state = experiment(plan.experiment)
    if not plan.nodes and not plan.vms:
        down(plan.experiment, kernel)
        return Reconciled("down", time.monotonic() - started)
    if not state.directory.exists():
        return Reconciled("up", up(plan, progress, kernel))
    lock = state.lock()
    if lock is None or state.status().get("state") != "up":
        if lock is not None:
            os.close(lock)
        _refuse_existing_not_up(state)
    assert lock is not None
    try:
        old = state.load_plan()
        text = plan.to_json()
        if old is not None and old.to_json() == text:
            return Reconciled("unchanged", time.monotonic() - started)
        changes = diff(old, plan)
        if changes.refused:
            raise ExperimentError(f"{plan.experiment}: {changes.refused[0]}")
        refreshed = ""
        if not changes.empty:
            assert old is not None
            from nestbed.realize import reconcile as realize_reconcile
            features = realize_reconcile.features_for(old, plan, changes, kernel)
            state.set_status("modifying")
            try:
                realize_reconcile.apply_diff(old, plan, changes, state, features, kernel)
                _write_plan(state, text)
                if changes.added_nodes or changes.removed_nodes:
                    refreshed = _refresh_agent(state)
            finally:
                state.set_status("up")
        else:
            _write_plan(state, text)
        return Reconciled("changed" if not changes.empty else "unchanged", time.monotonic() - started, changes,
                          refreshed == "reloaded", refreshed == "restarted")
    finally:
        os.close(lock)


def _write_plan(state: ExperimentState, text: str) -> None:
    """plan.json replaced atomically (its temporary is journaled with it)."""
    tmp = state.plan_path.with_name("plan.json.tmp")
    entries = state.journal.entries()
    if not any(e.get("t") == "file" and e.get("path") == str(tmp) for e in entries):
        state.journal.record([{"t": "file", "path": str(tmp)}])
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(state.plan_path)


RELOAD_SECONDS = 30.0


def reload_agent(state: ExperimentState) -> dict[str, Any]:
    """Ask the running host agent to serve the node set of plan.json (its `reload` op, agent/host.py)."""
    conn = supervision.HostAgentConnection(state, RELOAD_SECONDS)
    try:
        return conn.request("reload")
    finally:
        conn.close()


def _refresh_agent(state: ExperimentState) -> str:
    """The host agent learns the new node set in place: its launcher, counters and mailbox watcher take the
    added nodes and drop the removed ones, and the programs it spawned keep their stop handles. "reloaded";
    or "restarted" when the agent could not be asked (dead, or an older agent without the op)."""
    try:
        reload_agent(state)
        return "reloaded"
    except (OSError, ExperimentError):
        _restart_agent(state)
        return "restarted"


def _restart_agent(state: ExperimentState) -> None:
    """A new host agent reads the new set when it starts. Programs the old one spawned run in their own sessions
    and keep running (their pids too); what it held of them (stop handles, outputs under way) is lost."""
    entries = state.journal.entries()
    old = supervision.agent_entries(entries)
    supervision.stop_agent(entries)
    state.journal.bury(old)
    spawned = supervision.spawn_agent(state)
    agent = spawned.start()
    state.set_status("up", agent=agent)


def _refuse_existing_not_up(state: ExperimentState) -> None:
    if state.is_busy():
        pid = state.status().get("pid")
        by = f" (pid {pid})" if pid else ""
        raise ExperimentError(f"experiment {state.name!r} is already being created, changed or removed by another "
                              f"nestbed{by}; wait for it, then run this again")
    _refuse_existing(state)


def _refuse_existing(state: ExperimentState) -> None:
    name = state.name
    status = state.status()
    if status.get("state") == "up":
        raise ExperimentError(f"experiment {name!r} is already up; "
                              f"run 'nestbed down {name}' first or pick another name")
    if state.is_busy():
        raise ExperimentError(f"experiment {name!r} is already being created or removed (pid {status.get('pid')}); "
                              f"wait for it, or pick another name")
    raise ExperimentError(f"experiment {name!r} was left half-made by an earlier run ({status.get('state')}); "
                          f"run 'nestbed cleanup' first")


def _claim(state: ExperimentState) -> int:
    """Make the experiment's directory with its lock already held, atomically: a locked directory under a
    temporary name, renamed into place. Of two `up` of one name exactly one gets it; the other is refused in one
    line and touches nothing of the first (a plain mkdir-then-lock would leave a moment where the directory
    exists unlocked and looks abandoned)."""
    make_root()
    staging = Path(tempfile.mkdtemp(prefix=f".up-{state.name}-", dir=state.directory.parent))
    staged = ExperimentState(state.name, staging)
    staged.make_private()               # private before it has a name others look for
    lock = staged.lock()
    assert lock is not None             # a directory nobody else knows
    try:
        os.rename(staging, state.directory)
    except OSError as error:
        os.close(lock)
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise ExperimentError(f"experiment {state.name!r} is already being created or up (another "
                                  f"'nestbed up' got there first); pick another name or wait for it") from None
        raise
    return lock


def down(name: str, kernel: Kernel = LINUX) -> TeardownReport | None:
    """Tear an experiment down; None when there is no such experiment (nothing to do)."""
    state = experiment(name)
    if not state.directory.is_dir():
        return None
    lock = state.lock()
    if lock is None:
        pid = state.status().get("pid")
        raise ExperimentError(f"experiment {name!r} is busy (pid {pid} is creating or removing it); "
                              f"wait for it, or stop that process and run 'nestbed cleanup'")
    try:
        state.set_status("removing")
        return teardown(state, kernel)
    finally:
        os.close(lock)


def cleanup(everything: bool = False, kernel: Kernel = LINUX) -> list[TeardownReport]:
    """Remove experiments left by crashed runs (all experiments with `everything`), from their journals."""
    reports = []
    for state in all_experiments():
        if not everything and state.status().get("state") == "up":
            continue
        lock = state.lock()
        if lock is None:
            continue      # an `up` or `down` is still running on it
        try:
            reports.append(teardown(state, kernel))
        finally:
            os.close(lock)
    return reports


def teardown(state: ExperimentState, kernel: Kernel = LINUX) -> TeardownReport:
    """The host agent first (nothing new starts), then everything the journal names."""
    entries = state.journal.entries()
    stopped = 0
    if any(e["t"] == "pid" and e.get("role") for e in entries):
        stopped = supervision.stop_agent(entries)
    report = realized.teardown(state, kernel)
    report.processes += stopped
    return report
