"""The shared document against a real etcd (started by the test on loopback): written whole before any manifest
names it, within etcd's txn limits; agents converge to exactly their plans; garbage collection keeps a shared
document a manifest still names; the rollback (empty plans) names none."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from test_etcd_sharing import multihost

from etcd_server import EtcdServer
from nestbed.cluster.etcd import blobs, engine, keys, publish, sharing
from nestbed.cluster.etcd.agent import HostAgent
from nestbed.cluster.etcd.client import Etcd, KeepAlive
from nestbed.cluster.etcd.records import Manifest
from nestbed.cluster.etcd.shared_cache import SharedCache
from nestbed.plan.hostplan import HostPlan

pytestmark = pytest.mark.needs("etcd")


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    with EtcdServer() as etcd:
        yield etcd
    assert not etcd.running()


def padded(plans: dict[str, HostPlan]) -> dict[str, HostPlan]:
    """The same hosts_file on every host, 3 MB of it incompressible: the shared document takes several txns."""
    pad = "# " + os.urandom(1_500_000).hex() + "\n"
    return {h: replace(p, hosts_file=p.hosts_file + pad) for h, p in plans.items()}


def test_the_shared_document_is_whole_before_any_manifest_and_agents_get_exactly_their_plans(
        server: EtcdServer) -> None:
    plans = padded(multihost(3, 6))
    seen: dict[str, HostPlan] = {}
    txns: list[tuple[int, int]] = []                  # (operations, bytes of values) of every txn

    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            real_txn = etcd.txn

            async def counted(compare: list[Any], success: list[Any], failure: list[Any] | None = None
                              ) -> tuple[bool, Any]:
                txns.append((len(success), sum(len(getattr(op, "value", b"")) for op in success)))
                return await real_txn(compare, success, failure)
            etcd.txn = counted                  # type: ignore[method-assign]
            keepalive = KeepAlive(etcd, 5)
            cache = SharedCache()
            agents = [HostAgent(etcd, h, lambda p: seen.__setitem__(p.host, p), ident="t", shared=cache)
                      for h in plans]
            for agent in agents:
                await agent.announce(keepalive)
            keepalive.start()
            tasks = [asyncio.create_task(a.serve()) for a in agents]
            first = await engine.converge(etcd, "shd", plans, 60)
            assert first["generation"] == 1 and first["written"] == 3
            assert {h: p.to_json() for h, p in seen.items()} == {h: p.to_json() for h, p in plans.items()}
            assert cache.fetches == 1                 # three hosts, one read of the shared document
            assert all(ops <= blobs.TXN_OPS and size <= blobs.TXN_BYTES for ops, size in txns)
            manifests = {h: await etcd.get(keys.manifest(h, "shd")) for h in plans}
            named = {Manifest.from_bytes(kv.value).shared for kv in manifests.values()}
            assert len(named) == 1 and "" not in named
            sha = named.pop()
            chunks = await etcd.range_prefix(keys.blob("shd", sha))
            assert len(chunks.kvs) >= 2                # several txns, every one before the first manifest
            assert max(kv.mod_revision for kv in chunks.kvs) < min(kv.mod_revision for kv in manifests.values())
            assert first["bytes"] >= sum(len(kv.value) for kv in chunks.kvs)
            # a new generation: only emu1's own part changes; the shared document stays, and stays named
            moved = dict(plans)
            moved["emu1"] = replace(plans["emu1"], routing="ospf")
            txns.clear()
            second = await engine.converge(etcd, "shd", moved, 60)
            assert second["generation"] == 2 and cache.fetches == 1
            assert sum(size for _, size in txns) < 50_000          # the 3 MB document was not written again
            assert seen["emu1"].routing == "ospf" and seen["emu1"].to_json() == moved["emu1"].to_json()
            assert len((await etcd.range_prefix(keys.blob("shd", sha), keys_only=True)).kvs) == len(chunks.kvs)
            # the shared document changes: the old one is collected, the new one read once
            third_plans = padded(moved)
            await engine.converge(etcd, "shd", third_plans, 60)
            assert cache.fetches == 2
            assert (await etcd.range_prefix(keys.blob("shd", sha), count_only=True)).count == 0
            assert seen["emu2"].to_json() == third_plans["emu2"].to_json()
            # the rollback: empty plans, no shared document named; collect_garbage leaves no blob
            gone = await publish.publish(etcd, "shd", dict.fromkeys(plans))
            await publish.wait(etcd, "shd", list(plans), gone.generation, 30)
            assert all(not seen[h].nodes for h in plans)
            for host in plans:
                assert not Manifest.from_bytes((await etcd.get(keys.manifest(host, "shd"))).value).shared
            await publish.collect_garbage(etcd, "shd", list(plans))
            assert (await etcd.range_prefix(keys.experiment("shd") + b"blob/", count_only=True)).count == 0
            for task in tasks:
                task.cancel()
            await keepalive.stop()
            await publish.forget(etcd, "shd", list(plans))
    asyncio.run(go())


def test_split_parts_and_their_shared_document_rerun_writes_nothing(server: EtcdServer) -> None:
    plans = multihost(3, 4)
    cut = sharing.split(plans)

    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            first = await publish.publish(etcd, "shr2", dict(cut.parts), cut.shared)
            again = await publish.publish(etcd, "shr2", dict(cut.parts), cut.shared)
            assert first.bytes > 0 and again.written == [] and again.bytes == 0
            assert again.generation == first.generation
            await publish.forget(etcd, "shr2", list(plans))
    asyncio.run(go())
