"""`nestbed agent --etcd URL[,URL] --host NAME`: this host's agent, for every experiment placed on it.

It holds a lease (TTL 5 s, refreshed every TTL/3 on one stream per process) with the host's alive key on it,
re-lists the host's desired prefix, reconciles every experiment there, then watches that prefix from the listing's
revision + 1, so no manifest is missed across a restart. Per experiment one worker at a time; the newest manifest
wins (one that arrives while an apply runs replaces any waiting one). Each apply writes the experiment's status:
applying (observed stays the old generation), then ready, removed (the empty plan) or failed with its errors.

The realizer is one function of a HostPlan (`realizer`); by default `_reconcile` below, agent.lifecycle.reconcile
(the benchmark passes one that only journals).

When etcd goes away (after a first connection: an endpoint that never answered is one line), the agent keeps
what it holds and any apply under way, prints one line for the outage, and reconnects with a backoff of
0.2 s doubling to 5 s; then it grants a new lease, puts its alive key again and re-lists (level-triggered: what
changed meanwhile is in the listing, no event is needed), and writes the statuses an outage swallowed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import aetcd
import grpc  # type: ignore[import-untyped]

from nestbed.cluster.etcd import blobs, keys, sharing
from nestbed.cluster.etcd.client import Etcd, KeepAlive, compacted
from nestbed.cluster.etcd.records import APPLYING, FAILED, READY, REMOVED, Manifest, Status
from nestbed.cluster.etcd.shared_cache import SharedCache
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan

TTL = 5
BACKOFF_FIRST, BACKOFF_CAP = 0.2, 5.0      # seconds between reconnect attempts: doubling, capped
RETRY_CONNECT_SECONDS = 2.0                # one reconnect attempt's wait for an answer
Realizer = Callable[[HostPlan], None]


def _reconcile(plan: HostPlan) -> None:
    """agent.lifecycle.reconcile (convergent: up when absent, nothing for the plan it holds, only the difference
    otherwise, down for the empty plan), multi-host plans included (VXLAN devices, FDB entries, others). What it
    cannot change in place yet (VMs, the control network; plan/diff.py says which), and an experiment a crash
    left half-made, are taken down and made anew."""
    from nestbed.agent import lifecycle
    from nestbed.plan.diff import diff
    from nestbed.realize.state import experiment
    state = experiment(plan.experiment)
    if state.directory.is_dir() and (plan.nodes or plan.vms):
        old = state.load_plan() if state.status().get("state") == "up" else None
        if old is None or (old.to_json() != plan.to_json() and diff(old, plan).refused):
            lifecycle.down(plan.experiment)
    lifecycle.reconcile(plan)


def _applied(manifest: Manifest) -> str:
    return f"{manifest.plan}+{manifest.shared}"


def agent_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _Work:
    latest: tuple[bytes | None, int] | None = None        # (manifest or None when deleted, its revision)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class HostAgent:
    """One host's reconcile loop, on a shared connection (the benchmark runs hundreds in one process)."""

    def __init__(self, etcd: Etcd, host: str, realizer: Realizer = _reconcile, ident: str = "",
                 shared: SharedCache | None = None):
        self.etcd, self.host, self.realizer = etcd, host, realizer
        self.shared = shared if shared is not None else SharedCache()     # the benchmark's agents share one
        self.ident = ident or agent_id()
        self.work: dict[str, _Work] = {}
        self.applied: dict[str, str] = {}                 # experiment → shas applied by this process
        self.ready = asyncio.Event()                      # listed and watching
        self.online = True                                # False during an outage: its errors are not news

    async def announce(self, keepalive: KeepAlive, ttl: int = TTL) -> None:
        lease = await self.etcd.grant(ttl)
        keepalive.add(lease.id)
        await self.etcd.put(keys.alive(self.host), json.dumps({"agent": self.ident}).encode(), lease=lease)

    async def serve(self, keep_workers: bool = False) -> None:
        """List, reconcile, watch; returns never: raises when the watch breaks (etcd went away, or a compaction
        refused its start revision), with the workers left running; cancelled, it cancels them too unless
        `keep_workers` (a reconnect: an apply under way goes on; its realizer must never run twice at once)."""
        try:
            while True:
                listed = await self.etcd.range_prefix(keys.desired(self.host))
                for kv in listed.kvs:
                    self._offer(keys.last_part(kv.key), kv.value, kv.mod_revision)
                try:
                    watch = await self.etcd.watch_prefix(keys.desired(self.host),
                                                         start_revision=listed.header.revision + 1)
                    self.ready.set()
                    async for event in watch:
                        exp = keys.last_part(event.kv.key)
                        self._offer(exp, event.kv.value if event.kind == "PUT" else None, event.kv.mod_revision)
                except aetcd.exceptions.RevisionCompactedError:
                    continue                  # compacted between the listing and the watch: list again
                raise ConnectionError("the watch stream ended")
        except asyncio.CancelledError:
            if not keep_workers:
                self.stop()
            raise
        finally:
            self.ready.clear()

    def stop(self) -> None:
        for work in self.work.values():
            if work.task is not None:
                work.task.cancel()

    def _offer(self, exp: str, manifest: bytes | None, revision: int) -> None:
        work = self.work.setdefault(exp, _Work())
        work.latest = (manifest, revision)
        work.wake.set()
        if work.task is None:
            work.task = asyncio.create_task(self._worker(exp, work))

    async def _worker(self, exp: str, work: _Work) -> None:
        while True:
            await work.wake.wait()
            work.wake.clear()
            latest, work.latest = work.latest, None
            if latest is None:
                continue
            try:
                await self._apply(exp, *latest)
            except Exception as error:        # the worker stays: the next manifest is applied all the same
                if self.online:               # an outage's failures come back with the re-list
                    print(f"nestbed agent {self.host}: {exp}: {error}", file=sys.stderr, flush=True)

    async def _apply(self, exp: str, raw: bytes | None, revision: int) -> None:
        if raw is None:                       # the controller forgot the experiment: nothing of it may stay
            await asyncio.to_thread(self.realizer, HostPlan(exp, self.host))
            self.applied.pop(exp, None)
            return
        manifest = Manifest.from_bytes(raw)
        old = await self.etcd.get(keys.status(exp, self.host))
        previous = Status.from_bytes(old.value) if old is not None else None
        if previous is not None and previous.done_at(manifest.generation) and \
                self.applied.get(exp) == _applied(manifest):
            return                            # already there (a re-list after the watch saw it)
        observed = previous.observed if previous is not None else 0
        await self._status(exp, Status(observed, APPLYING))
        try:
            plan = await self._plan(exp, manifest, revision)
            await asyncio.to_thread(self.realizer, plan)          # the one call of the realizer
        except Exception as error:            # one line for the controller; the journal still lists everything
            line = str(error).splitlines()[0] if str(error) else type(error).__name__
            await self._status(exp, Status(manifest.generation, FAILED, [line]))
            self.applied.pop(exp, None)
            return
        self.applied[exp] = _applied(manifest)
        await self._status(exp, Status(manifest.generation, REMOVED if manifest.empty else READY))

    async def _plan(self, exp: str, manifest: Manifest, revision: int) -> HostPlan:
        if manifest.empty:
            return HostPlan(exp, self.host)
        part = await self._blob(exp, manifest.plan, manifest.chunks, revision)
        if not manifest.shared:               # the whole plan (fewer than two hosts, or an older controller)
            async with self.shared.gate:      # off the loop: leases keep alive
                return await asyncio.to_thread(sharing.join, None, part)

        async def fetch() -> sharing.SharedDoc:        # only when this sha is new to this process
            data = await self._blob(exp, manifest.shared, manifest.shared_chunks, revision)
            async with self.shared.gate:
                return await asyncio.to_thread(sharing.parse_shared, data)
        shared = await self.shared.get(manifest.shared, fetch)
        async with self.shared.gate:
            return await asyncio.to_thread(sharing.join, shared, part)

    async def _blob(self, exp: str, sha: str, chunks: int, revision: int) -> bytes:
        # at the manifest's revision: the chunks written with or before it, never a later blob's
        try:
            found = await self.etcd.range_prefix(keys.blob(exp, sha), revision=revision)
        except Exception as error:            # history compacted since: a blob is immutable, its sha checked below
            if not compacted(error):
                raise
            found = await self.etcd.range_prefix(keys.blob(exp, sha))
        if len(found.kvs) != chunks:
            raise ValueError(f"blob {sha}: {len(found.kvs)} of {chunks} chunks in etcd")
        return await asyncio.to_thread(blobs.unpack, [kv.value for kv in found.kvs], sha)

    async def _status(self, exp: str, status: Status) -> None:
        await self.etcd.put(keys.status(exp, self.host), Status(status.observed, status.phase, status.errors,
                                                                 agent=self.ident).to_bytes())


async def run(urls: list[str], host: str, realizer: Realizer = _reconcile,
              backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_CAP)) -> None:
    """The agent of one host until cancelled (its lease revoked on the way out: the host is gone at once).
    The first connection must answer (one line otherwise); after that, an outage is retried without end."""
    etcd: Etcd | None = Etcd(urls)
    assert etcd is not None
    await etcd.connect()
    agent = HostAgent(etcd, host, realizer)
    delay = backoff[0]
    try:
        while True:
            try:
                if etcd is None:
                    etcd = Etcd(urls)
                    await etcd.connect(RETRY_CONNECT_SECONDS)
                    agent.etcd = etcd
                await _session(agent)         # online again once its lease and alive key are in
            except (OSError, grpc.RpcError, aetcd.exceptions.ClientError, ExperimentError) as error:
                if agent.online:              # one line per outage, not per attempt
                    agent.online, delay = False, backoff[0]
                    line = str(error).splitlines()[0] if str(error) else type(error).__name__
                    print(f"nestbed agent {host}: etcd at {', '.join(urls)} lost ({line}); reconnecting every "
                          f"{backoff[0]:g}-{backoff[1]:g} s, applying what it holds", file=sys.stderr, flush=True)
            if etcd is not None:
                with contextlib.suppress(Exception):
                    await etcd.close()
                etcd = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff[1])
    finally:
        agent.stop()
        if etcd is not None:
            with contextlib.suppress(Exception):
                await etcd.close()


async def _session(agent: HostAgent) -> None:
    """One connection's life: a lease with the alive key on it, the keep-alive stream, list and watch. Returns
    (raises) when the watch or the keep-alive stream breaks, or the lease ran out all the same (the process was
    paused longer than TTL): the next session grants a new one and puts the alive key again."""
    keepalive = KeepAlive(agent.etcd, TTL)
    await agent.announce(keepalive)
    keepalive.start()
    agent.online = True
    serving = asyncio.create_task(agent.serve(keep_workers=True))
    ended = asyncio.create_task(keepalive.ended.wait())
    try:
        await asyncio.wait({serving, ended}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()                  # its error: etcd went away
        raise ConnectionError("its lease ran out" if keepalive.expired else "the lease keep-alive stream ended")
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await agent.etcd.client.revoke_lease(keepalive.leases[0])
        raise
    finally:
        for task in (serving, ended):
            if not task.done():
                task.cancel()
        await asyncio.gather(serving, ended, return_exceptions=True)
        await keepalive.stop()


def main(urls: list[str], host: str) -> int:
    import signal

    keys.host(host)                           # a bad host name is one line before anything connects

    async def until_signalled() -> None:
        task = asyncio.create_task(run(urls, host))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        asyncio.run(until_signalled())
    except aetcd.exceptions.ClientError as error:       # etcd went away: one line; its supervisor restarts it
        raise ExperimentError(f"etcd at {', '.join(urls)}: {error}") from None
    return 0

