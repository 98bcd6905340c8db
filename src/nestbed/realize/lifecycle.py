"""An experiment's life on this host: up (preflight, journal, realize, roll back on failure), down, cleanup.

Teardown reads only the journal: it needs neither the topology file nor a consistent state, removes what each
entry names if it is there, and can run any number of times.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from nestbed import procs
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan
from nestbed.realize import credential, identity, namespaces, preflight, processes
from nestbed.realize.apply import NoProgress, Progress, realize
from nestbed.realize.state import ExperimentState, all_experiments, experiment

BOOKKEEPING = ("status.json", "plan.json", "lock", "shellrc", "status.json.tmp")


@dataclass
class TeardownReport:
    name: str
    namespaces: int = 0
    vms: int = 0
    processes: int = 0
    files: int = 0
    seconds: float = 0.0
    left: list[str] = field(default_factory=list)


def up(plan: HostPlan, progress: Progress | None = None) -> float:
    """Realize the plan; on any failure remove everything created so far and re-raise. Returns seconds taken."""
    started = time.monotonic()
    state = experiment(plan.experiment)
    if state.directory.exists():
        status = state.status().get("state")
        if status == "up":
            raise ExperimentError(f"experiment {plan.experiment!r} is already up; "
                                  f"run 'nestbed down {plan.experiment}' first or pick another name")
        raise ExperimentError(f"experiment {plan.experiment!r} was left half-made by an earlier run ({status}); "
                              f"run 'nestbed cleanup' first")
    features = preflight.check(plan)
    state.directory.mkdir(parents=True)
    lock = state.lock()
    try:
        state.journal.record([{"t": "file", "path": str(state.directory / f)} for f in BOOKKEEPING]
                             + [{"t": "dir", "path": str(state.directory)}])
        state.plan_path.write_text(plan.to_json())
        (state.directory / "shellrc").write_text(processes.shell_rc(plan.experiment))
        state.set_status("creating", started=time.time())
        try:
            from nestbed.agent import supervision
            credential.ensure(state)          # every experiment has one: VMs and the host agent check it
            realize(plan, state, features, progress or NoProgress())
            agent = supervision.start_agent(plan, state)  # the host agent: exec, events, mailboxes, counters
            state.set_status("creating", agent=agent)
        except BaseException:
            teardown(state)
            raise
        seconds = time.monotonic() - started
        state.set_status("up", seconds=round(seconds, 3))
        return seconds
    finally:
        if lock is not None:
            os.close(lock)


def down(name: str) -> TeardownReport | None:
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
        return teardown(state)
    finally:
        os.close(lock)


def cleanup(everything: bool = False) -> list[TeardownReport]:
    """Remove experiments left by crashed runs (all experiments with `everything`), from their journals."""
    reports = []
    for state in all_experiments():
        if not everything and state.status().get("state") == "up":
            continue
        lock = state.lock()
        if lock is None:
            continue      # an `up` or `down` is still running on it
        try:
            reports.append(teardown(state))
        finally:
            os.close(lock)
    return reports


def teardown(state: ExperimentState) -> TeardownReport:
    started = time.monotonic()
    report = TeardownReport(state.name)
    entries = state.journal.entries()
    netns = [e["name"] for e in entries if e["t"] == "netns"]
    if any(e["t"] == "pid" and e.get("role") for e in entries):    # the host agent first: nothing new starts
        from nestbed.agent import supervision
        report.processes += supervision.stop_agent(entries)
    if any(e["t"] == "vm" for e in entries):    # VMs first, cleanly (QMP), before their pids are killed
        from nestbed.realize import vms
        report.vms = vms.stop_vms(entries)

    ids = {nsid for nsid in map(namespaces.namespace_id, netns) if nsid is not None}
    pids = set(namespaces.processes_in(ids)) if ids else set()
    for entry in entries:     # journaled pids that left their namespace, if the pid is still the same process
        if entry["t"] == "pid" and entry.get("start") is not None \
                and procs.start_time(entry["pid"]) == entry["start"]:
            pids.add(entry["pid"])
    pids.discard(os.getpid())
    procs.kill_all(sorted(pids))
    report.processes += len(pids)

    # Links, bridges, qdiscs and iptables rules live inside the experiment's namespaces and go with them.
    for name in reversed(netns):
        if namespaces.remove(name):
            report.namespaces += 1

    identity.remove_identity(entries)        # unmounts the nodes' tmpfs, releases /var/emulab
    if any(e["t"] == "mailbox" for e in entries):
        from nestbed.agent import mailbox
        mailbox.remove_mailboxes(entries)    # unmounts the mailboxes' tmpfs, releases /var/nestbed/mailbox
    for entry in reversed(entries):
        if entry["t"] == "file":
            path = Path(entry["path"])
            if path.name == "lock" or path.name == "journal.jsonl":
                continue
            try:
                path.unlink()
                report.files += 1
            except FileNotFoundError:
                pass
        elif entry["t"] == "dir" and Path(entry["path"]) != state.directory:
            _remove_dir(Path(entry["path"]), report)
    if any(e["t"] == "rootlink" for e in entries):
        from nestbed.realize import control
        control.remove_root_links(entries)
    for leftover in ("lock", "journal.jsonl"):
        (state.directory / leftover).unlink(missing_ok=True)
    _remove_dir(state.directory, report)
    report.seconds = time.monotonic() - started
    return report


def _remove_dir(path: Path, report: TeardownReport) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        report.left.append(str(path))    # holds files nestbed did not make: leave them to the user
