"""The etcd engine as cluster/deploy.py drives it: synchronous calls over the async publish/wait.

    apply(urls, plans)         publish every host's plan, wait for every status at the generation; on a failed
                               or lost host publish the empty plan everywhere, wait for the live hosts, one line
                               (with keep_going, a lost host is HostsLost instead, nothing rolled back: the
                               caller moves its nodes, cluster/relocate.py, and applies again with it in `lost`)
    remove(urls, exp, hosts)   the empty plan everywhere, wait for the live hosts, then forget the keys
    start_agents(cluster, …)   one `nestbed agent` per emulated host inside its namespace (journaled first)
    summary(urls, exp)         the statuses aggregated, for `nestbed status`
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestbed import procs
from nestbed.cluster.etcd import publish, sharing
from nestbed.cluster.etcd.client import Etcd
from nestbed.errors import ExperimentError
from nestbed.realize import namespaces
from nestbed.realize.journal import Journal

if TYPE_CHECKING:
    from nestbed.cluster.emulated import EmulatedCluster
    from nestbed.plan.hostplan import HostPlan

WAIT_SECONDS = 600.0
REMOVE_SECONDS = 120.0
AGENT_ROLE = "etcd-agent"


def host_id(exp: str, host: str, emulated: bool) -> str:
    """A host's name in etcd: its own for a real host; an emulated host's is its experiment's (emu0 of one
    experiment is not emu0 of another, and both may use one etcd)."""
    return f"{exp}.{host}" if emulated else host


class HostsLost(ExperimentError):
    """Hosts lost while applying with keep_going: nothing was rolled back."""
    def __init__(self, message: str, lost: list[str]):
        super().__init__(message)
        self.lost = lost


def apply(urls: list[str], exp: str, plans: dict[str, HostPlan], seconds: float = WAIT_SECONDS,
          rollback: bool = True, lost: frozenset[str] = frozenset(), keep_going: bool = False) -> dict[str, Any]:
    """Every host's plan through etcd (keyed by host_id); returns what happened ({generation, written, …}).
    Raises one line (after the rollback everywhere, unless `rollback` is False: a modify of a running
    experiment leaves it running) when a host failed or was lost; with `keep_going`, HostsLost for lost hosts
    (failed ones still roll back). Hosts in `lost` get the empty plan and are not waited for."""
    async def run() -> dict[str, Any]:
        async with Etcd(urls) as etcd:
            return await converge(etcd, exp, plans, seconds, rollback, lost, keep_going)
    return asyncio.run(run())


async def converge(etcd: Etcd, exp: str, plans: dict[str, HostPlan], seconds: float = WAIT_SECONDS,
                   rollback: bool = True, lost: frozenset[str] = frozenset(), keep_going: bool = False
                   ) -> dict[str, Any]:
    """apply's work on a connection: publish, wait, then the old blobs deleted and the history compacted."""
    started = time.monotonic()
    cut = sharing.split(plans)               # one shared document, each host's own part
    wanted: dict[str, bytes | None] = dict(cut.parts)
    wanted.update(dict.fromkeys(lost))       # the lost hosts: the empty plan
    out = await publish.publish(etcd, exp, wanted, cut.shared)
    published = time.monotonic() - started
    try:
        await publish.wait(etcd, exp, list(wanted), out.generation, seconds, ignore=lost)
    except publish.HostsFailed as failure:
        if keep_going and failure.lost:
            raise HostsLost(str(failure), failure.lost) from None
        if not rollback:
            raise ExperimentError(str(failure)) from None
        await _rollback(etcd, exp, list(wanted), frozenset(failure.lost) | lost)
        raise ExperimentError(f"{failure} (every host was rolled back)") from None
    await publish.collect_garbage(etcd, exp, list(wanted))
    compacted = await publish.compact_history(etcd, exp, list(plans), out.generation)
    return {"generation": out.generation, "written": len(out.written), "bytes": out.bytes,
            "shared": len(cut.shared or b""),
            "compacted": compacted,
            "publish": round(published, 3), "converge": round(time.monotonic() - started, 3)}


async def _rollback(etcd: Etcd, exp: str, hosts: list[str], lost: frozenset[str]) -> list[str]:
    """The empty plan everywhere; waits for the live hosts. Returns the hosts that did not confirm."""
    out = await publish.publish(etcd, exp, dict.fromkeys(hosts))
    try:
        await publish.wait(etcd, exp, hosts, out.generation, REMOVE_SECONDS, ignore=lost)
    except publish.HostsFailed as failure:
        return sorted(set(failure.lost) | lost) or [str(failure)]
    return sorted(lost)


def remove(urls: list[str], exp: str, hosts: list[str]) -> list[str]:
    """The experiment off every host through its agent, then nothing of it in etcd; returns the hosts that did
    not confirm (their part is left to the SSH removal and the emulated hosts' cleanup)."""
    async def run() -> list[str]:
        async with Etcd(urls) as etcd:
            gone = [h for h in hosts if await etcd.get(publish.keys.alive(h)) is None]
            unconfirmed = await _rollback(etcd, exp, hosts, frozenset(gone))
            await publish.forget(etcd, exp, hosts)
            return unconfirmed
    return asyncio.run(run())


def reachable(urls: list[str]) -> None:
    """One line (ExperimentError) when etcd does not answer."""
    async def run() -> None:
        async with Etcd(urls):
            pass
    asyncio.run(run())


def summary(urls: list[str], exp: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with Etcd(urls) as etcd:
            return dict(await publish.summary(etcd, exp))
    return asyncio.run(run())


def start_agents(cluster: EmulatedCluster, urls: list[str]) -> list[int]:
    """One agent per emulated host, in its namespace with its state root and prefix, unless a journaled one of
    that host still runs (a rerun after a crash). Journaled before each starts; emulated.down kills them."""
    journal = Journal(cluster.directory / "journal")
    running = {e["host"] for e in journal.entries()
               if e["t"] == "pid" and e.get("role") == AGENT_ROLE and procs.is_same(e["pid"], e.get("start"))}
    started = []
    for host in cluster.hosts:
        if host.name in running:
            continue
        log = cluster.directory / host.name / "agent.log"
        journal.record([{"t": "file", "path": str(log)}])
        env = {**os.environ, "NESTBED_STATE_DIR": host.state_dir, "NESTBED_PREFIX": host.prefix}
        argv = [cluster.python, "-m", "nestbed.cli.main", "agent", "--etcd", ",".join(urls),
                "--host", host_id(cluster.experiment, host.name, True)]
        with open(log, "ab") as output, namespaces.entered(host.netns):
            child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                     cwd="/", start_new_session=True)
        journal.record([{"t": "pid", "pid": child.pid, "start": procs.start_time(child.pid), "role": AGENT_ROLE,
                         "host": host.name}])
        started.append(child.pid)
    return started


def stop_agents(directory: Path, seconds: float = 5.0) -> None:
    """SIGTERM to the emulated hosts' agents (each revokes its lease: its alive key goes at once), then wait."""
    import signal
    running = agent_pids(directory)
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while agent_pids(directory) and time.monotonic() < deadline:
        time.sleep(0.02)


def agent_pids(directory: Path) -> dict[str, int]:
    """The journaled agents of emulated hosts that still run, by host (tests kill one)."""
    return {e["host"]: e["pid"] for e in Journal(directory / "journal").entries()
            if e["t"] == "pid" and e.get("role") == AGENT_ROLE and procs.is_same(e["pid"], e.get("start"))}
