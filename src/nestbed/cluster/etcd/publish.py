"""The controller's side: publish every host's plan at a generation, wait for every status, roll back.

Stateless: everything it needs is in etcd. A host whose manifest already names this plan at this generation gets
nothing written; a blob already there is not written again; a host whose status is done at the generation is
done. So a controller killed mid-up and run again resumes where it was.

Waiting ends when every host's status has observed == generation (ready, or removed for the empty plan), or fails
in one line when a host reports failed at the generation, or is lost: its alive key deleted (its lease ran out:
TTL + at most 2 s after its agent died) or never there within ALIVE_GRACE.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from nestbed.cluster.etcd import blobs, generation, keys
from nestbed.cluster.etcd.client import Etcd, compacted
from nestbed.cluster.etcd.records import Manifest, Status, aggregate
from nestbed.errors import ExperimentError

IN_FLIGHT = 32                 # hosts published at once (the design measured 8-32 txns as the best)
ALIVE_GRACE = 20.0             # a host's agent must have said it is alive by then
EMPTY = "empty"


class HostsFailed(ExperimentError):
    def __init__(self, message: str, lost: list[str]):
        super().__init__(message)
        self.lost = lost


@dataclass
class Published:
    generation: int
    raised: bool                              # a new generation (the spec changed)
    written: list[str] = field(default_factory=list)     # hosts whose manifest was written
    bytes: int = 0                            # compressed bytes of blobs written


def spec_of(plans: dict[str, bytes | None], shared: bytes | None = None) -> str:
    """The sha of every host's plan together (None: the empty plan), with the shared document's."""
    listing: dict[str, str] = {h: (blobs.sha_of(p) if p is not None else EMPTY) for h, p in sorted(plans.items())}
    if shared is not None:                # a host's name has no '/': this key is no host's
        listing["/shared"] = blobs.sha_of(shared)
    return blobs.sha_of(json.dumps(listing).encode())


async def publish(etcd: Etcd, exp: str, plans: dict[str, bytes | None], shared: bytes | None = None,
                  in_flight: int = IN_FLIGHT) -> Published:
    """Each host's plan JSON (None: the empty plan) at the generation of these plans; with `shared`, each
    non-empty one is a host's part (sharing.py) and its manifest names the shared document too, which is
    written, whole, before any manifest."""
    gen, raised = await generation.advance(etcd, exp, spec_of(plans, shared))
    result = Published(gen, raised)
    gate = asyncio.Semaphore(in_flight)
    listed = await etcd.range_prefix(keys.experiment(exp) + b"blob/", keys_only=True)   # one round trip
    chunks_there: dict[str, int] = {}
    for kv in listed.kvs:
        sha = kv.key.split(b"/")[-2].decode()
        chunks_there[sha] = chunks_there.get(sha, 0) + 1
    common = blobs.pack(shared) if shared is not None else None
    if common is not None:
        result.bytes += await _put_blob(etcd, exp, common, chunks_there, None)

    async def one(host: str, data: bytes | None) -> None:
        async with gate:
            written = await _publish_host(etcd, exp, host, data, gen, chunks_there, common)
        if written is not None:
            result.written.append(host)
            result.bytes += written
    await asyncio.gather(*(one(h, p) for h, p in plans.items()))
    return result


async def _publish_host(etcd: Etcd, exp: str, host: str, data: bytes | None, gen: int,
                        chunks_there: dict[str, int], common: blobs.Blob | None) -> int | None:
    blob = blobs.pack(data) if data is not None else None
    if blob is None:
        manifest = Manifest(gen, EMPTY, 0, 0, empty=True)
    elif common is None:
        manifest = Manifest(gen, blob.sha, len(blob.chunks), blob.size)
    else:
        manifest = Manifest(gen, blob.sha, len(blob.chunks), blob.size, shared=common.sha,
                            shared_chunks=len(common.chunks))
    old = await etcd.get(keys.manifest(host, exp))
    if old is not None and Manifest.from_bytes(old.value) == manifest:
        return None                                       # done by an earlier run
    last = etcd.put_op(keys.manifest(host, exp), manifest.to_bytes())
    if blob is None:
        await etcd.txn([], [last])
        return 0
    return await _put_blob(etcd, exp, blob, chunks_there, last)


async def _put_blob(etcd: Etcd, exp: str, blob: blobs.Blob, chunks_there: dict[str, int],
                    last: Any | None) -> int:
    """The blob's chunks unless it is there (content-addressed: a blob there is complete, and another host with
    the same plan need not write it), in txns within etcd's limits, `last` (the manifest) in the last txn: never
    half a plan. Returns the compressed bytes written."""
    chunk_ops: list[bytes] = []
    if chunks_there.get(blob.sha) != len(blob.chunks):
        chunk_ops = blob.chunks
        chunks_there[blob.sha] = len(blob.chunks)
    room = blobs.TXN_OPS - (last is not None)            # the manifest is one more operation
    groups = blobs.batches([len(c) for c in chunk_ops], ops=room) if chunk_ops else []
    if last is not None and not groups:
        groups = [[]]
    for k, group in enumerate(groups):
        ops = [etcd.put_op(keys.chunk(exp, blob.sha, i), chunk_ops[i]) for i in group]
        if last is not None and k == len(groups) - 1:
            ops.append(last)
        await etcd.txn([], ops)
    return sum(len(c) for c in chunk_ops)


async def statuses(etcd: Etcd, exp: str) -> tuple[dict[str, Status], int]:
    found = await etcd.range_prefix(keys.statuses(exp))
    return {keys.last_part(kv.key): Status.from_bytes(kv.value) for kv in found.kvs}, found.header.revision


async def wait(etcd: Etcd, exp: str, hosts: list[str], gen: int, seconds: float,
               ignore: frozenset[str] = frozenset()) -> dict[str, Status]:
    """Until every host's status is done at `gen`; HostsFailed (one line) when one failed or is lost (hosts in
    `ignore` are neither waited for nor lost)."""
    wanted = set(hosts) - ignore
    known, revision = await statuses(etcd, exp)
    listed = await etcd.range_prefix(keys.ROOT + b"/host/", keys_only=True)     # one round trip for every host
    alive_since = {kv.key.split(b"/")[-2].decode() for kv in listed.kvs if kv.key.endswith(b"/alive")} & wanted
    events: asyncio.Queue[tuple[str, bytes, bytes]] = asyncio.Queue()

    async def feed(prefix: bytes, what: str) -> None:
        start = revision + 1
        while True:
            try:
                watch = await etcd.watch_prefix(prefix, start_revision=start)
                async for event in watch:
                    events.put_nowait((f"{what}:{event.kind}", event.kv.key, event.kv.value))
                return
            except Exception as error:    # another experiment's compaction passed our start: the state instead
                if not compacted(error):
                    raise
            listed = await etcd.range_prefix(prefix, keys_only=what == "host")
            present = {kv.key for kv in listed.kvs}
            for kv in listed.kvs:
                events.put_nowait((f"{what}:PUT", kv.key, kv.value))
            for host in sorted(alive_since) if what == "host" else []:
                if keys.alive(host) not in present:
                    events.put_nowait(("host:DELETE", keys.alive(host), b""))
            start = listed.header.revision + 1
    tasks = [asyncio.create_task(feed(keys.statuses(exp), "status")),
             asyncio.create_task(feed(keys.ROOT + b"/host/", "host"))]
    started = time.monotonic()
    lost: list[str] = []
    try:
        while True:
            done = {h for h in wanted if h in known and known[h].done_at(gen)}
            failed = {h: known[h] for h in wanted if h in known and known[h].observed == gen
                      and known[h].phase == "failed"}
            if failed:
                lines = [f"host {h}: {'; '.join(s.errors) or 'failed'}" for h, s in sorted(failed.items())]
                raise HostsFailed("; ".join(lines), [])
            never = [h for h in wanted - alive_since - done if time.monotonic() - started > ALIVE_GRACE]
            if lost or never:
                gone = sorted(set(lost) | set(never))
                raise HostsFailed(f"host{'s' if len(gone) > 1 else ''} {', '.join(gone)} lost: "
                                  f"{'its' if len(gone) == 1 else 'their'} agent's lease ran out"
                                  + (" (or it never started)" if never else ""), gone)
            if done >= wanted:
                return {h: known[h] for h in wanted}
            left = seconds - (time.monotonic() - started)
            if left <= 0:
                behind = sorted(wanted - done)
                raise HostsFailed(f"after {seconds:g} s, {len(behind)} hosts have not reached generation {gen}: "
                                  f"{', '.join(behind[:5])}{' …' if len(behind) > 5 else ''}", [])
            try:
                what, key, value = await asyncio.wait_for(events.get(), min(left, 1.0))
            except TimeoutError:
                continue
            if what.startswith("status:") and what.endswith("PUT"):
                known[keys.last_part(key)] = Status.from_bytes(value)
            elif what.startswith("host:") and key.endswith(b"/alive"):
                host = key.split(b"/")[-2].decode()
                if host not in wanted:
                    continue
                if what.endswith("PUT"):
                    alive_since.add(host)
                elif host in alive_since and not (host in known and known[host].done_at(gen)):
                    lost.append(host)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def collect_garbage(etcd: Etcd, exp: str, hosts: list[str]) -> int:
    """Delete the blobs no host's manifest names any more, as its plan or its shared document (once every host
    reached the generation)."""
    found = await asyncio.gather(*(etcd.get(keys.manifest(host, exp)) for host in hosts))
    manifests = [Manifest.from_bytes(kv.value) for kv in found if kv is not None]
    used = {m.plan for m in manifests} | {m.shared for m in manifests if m.shared}
    listed = await etcd.range_prefix(keys.experiment(exp) + b"blob/", keys_only=True)
    stale = {kv.key.split(b"/")[-2].decode() for kv in listed.kvs} - used
    for sha in stale:
        await etcd.delete_prefix(keys.blob(exp, sha))
    return len(stale)


async def compact_history(etcd: Etcd, exp: str, hosts: list[str], gen: int) -> int | None:
    """Compact etcd's history to the revision at which the last of `hosts` reported `gen` done; returns it (None:
    not every host is done, or etcd was already compacted past it, by another experiment's controller).

    Why no live reader needs a revision below it: (1) agents watch their desired prefix from a fresh listing's
    revision + 1, on start and after every reconnect, so a watch never starts from history; a caught-up watch is
    not touched by compaction, and one that is refused (created in the instant between its listing and a
    compaction) is one more reconnect, which re-lists. (2) Every host has read this generation's manifest and
    blobs (its status says so), and a controller's wait watches from its own listing + 1. (3) A reader of chunks
    at an older manifest's revision (another experiment's agent) that finds it compacted reads the current ones:
    blobs are immutable and named by their sha, which unpacking checks. Blobs deleted after it (collect_garbage)
    keep their last version until the next compaction.
    """
    found = await etcd.range_prefix(keys.statuses(exp))
    done = {keys.last_part(kv.key): kv.mod_revision for kv in found.kvs if Status.from_bytes(kv.value).done_at(gen)}
    if not hosts or not set(hosts) <= set(done):
        return None
    revision = max(done[h] for h in hosts)
    try:
        await etcd.compact(revision)
    except Exception as error:
        if compacted(error):
            return None
        raise
    return int(revision)


async def forget(etcd: Etcd, exp: str, hosts: list[str]) -> None:
    """Nothing of the experiment left in etcd: its manifests, then its own keys."""
    for host in hosts:
        await etcd.delete_prefix(keys.manifest(host, exp))
    await etcd.delete_prefix(keys.experiment(exp))


async def summary(etcd: Etcd, exp: str) -> dict[str, object]:
    """The statuses aggregated, with the lost hosts: placed (a manifest) or reporting (a status), no alive key."""
    gen, _ = await generation.current(etcd, exp)
    found, _ = await statuses(etcd, exp)
    listed = await etcd.range_prefix(keys.ROOT + b"/host/", keys_only=True)      # one round trip for every host
    placed, alive = set(), set()
    for kv in listed.kvs:
        parts = kv.key.split(b"/")            # b"", b"nestbed", b"host", HOST, b"alive" | b"desired", EXP
        if len(parts) == 5 and parts[4] == b"alive":
            alive.add(parts[3].decode())
        elif len(parts) == 6 and parts[4] == b"desired" and parts[5] == exp.encode():
            placed.add(parts[3].decode())
    return aggregate(found, gen, placed, alive, time.time())
