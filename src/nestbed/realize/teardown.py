"""Teardown of an experiment on this host, from its journal alone.

It needs neither the topology file nor a consistent state, removes what each entry names if it is there, and can
run any number of times. It knows nothing of agents: agent/lifecycle.py stops the host agent before calling it.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nestbed.plan import mechanisms
from nestbed.realize import firewall, hostnetns, ownership
from nestbed.realize.kernel import LINUX, Kernel
from nestbed.realize.state import ExperimentState


@dataclass
class TeardownReport:
    name: str
    namespaces: int = 0
    vms: int = 0
    processes: int = 0
    files: int = 0
    seconds: float = 0.0
    left: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)     # objects of journaled names without our mark: one line each
    processes_left: list[str] = field(default_factory=list)     # still in the process table after the wait


def teardown(state: ExperimentState, kernel: Kernel = LINUX) -> TeardownReport:
    started = time.monotonic()
    report = TeardownReport(state.name)
    entries = state.journal.entries()
    netns = [e["name"] for e in entries if e["t"] == "netns"]
    if any(e["t"] == "vm" for e in entries):    # VMs first, cleanly (QMP), before their pids are killed
        from nestbed.realize import vms
        report.vms = vms.stop_vms(entries)

    pids = kernel.processes_in(netns) if netns else set()
    for entry in entries:     # journaled pids that left their namespace, if the pid is still the same process
        if entry["t"] == "pid" and entry.get("start") is not None \
                and kernel.process_start_time(entry["pid"]) == entry["start"]:
            pids.add(entry["pid"])
    pids.discard(os.getpid())
    # Killed is not gone: a zombie (qemu's, the agent's) stays listed until its parent reaps it; wait for that.
    report.processes_left = [_describe(pid) for pid in kernel.kill(sorted(pids))]
    report.processes += len(pids)

    # Links, bridges, qdiscs and iptables rules live inside the experiment's namespaces and go with them;
    # a link mechanism names what does not (none of today's do). A node in its host's own namespace: its marked
    # rules, then its handle (realize/hostnetns.py); its links go with their peers' namespaces.
    report.left += hostnetns.remove_marked_rules(entries, kernel)
    for link in mechanisms.removals(entries):
        kernel.delete_link(link.netns, link.name)
    report.namespaces = _remove_namespaces(kernel, list(reversed(netns)))
    hostnetns.remove_handles(entries)

    kernel.remove_identity(entries)
    if any(e["t"] == "mailbox" for e in entries):
        kernel.remove_mailboxes(entries)
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
    # In the host's own namespace only what carries the experiment's mark: the control network's links, then its
    # nftables table (the bridge it guards is gone by then).
    owner = ownership.mark(state.name, state.directory)
    if any(e["t"] == "rootlink" for e in entries):
        from nestbed.realize import control
        report.kept += control.remove_root_links(entries, owner)
    if any(e["t"] == firewall.ENTRY for e in entries):
        report.kept += firewall.remove(entries, owner)
    for leftover in ("lock", "journal.jsonl"):
        (state.directory / leftover).unlink(missing_ok=True)
    _remove_dir(state.directory, report)
    report.seconds = time.monotonic() - started
    return report


def _describe(pid: int) -> str:
    from nestbed import procs
    if procs.state_of(pid) == "Z":
        return f"process {pid}: a zombie its parent has not reaped"
    return f"process {pid}: still running after SIGKILL"


REMOVERS = 16        # threads unmounting namespaces: each umount mostly waits for an RCU grace period


def _remove_namespaces(kernel: Kernel, names: list[str]) -> int:
    """Unmount and unlink every namespace; returns how many were there. Many threads at once: an umount waits
    for an RCU grace period after the kernel's mount lock is released, so threads share the waits (2000
    namespaces: 0.35 s from one thread, 0.15 s from eight)."""
    if len(names) < 2 * REMOVERS:
        return sum(1 for name in names if kernel.remove_namespace(name))
    with ThreadPoolExecutor(REMOVERS) as pool:
        return sum(pool.map(kernel.remove_namespace, names, chunksize=32))


def _remove_dir(path: Path, report: TeardownReport) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        report.left.append(str(path))    # holds files nestbed did not make: leave them to the user
