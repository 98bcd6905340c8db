"""The etcd engine's split of an experiment's plans: one shared document + each host's part; join gives back exactly
the plan the host would have got whole; manifests naming both (and older ones naming a whole plan); the agent's
cache of shared documents by sha (a fake etcd)."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from nestbed.cluster.deploy import plan_for
from nestbed.cluster.etcd import blobs, keys, sharing
from nestbed.cluster.etcd.agent import HostAgent
from nestbed.cluster.etcd.records import Manifest
from nestbed.cluster.etcd.shared_cache import SharedCache
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
from nestbed.plan.hostplan import HostPlan


def topology(hosts: int, nodes: int) -> str:
    """`nodes` nodes a host in two LANs, a link from each host to the next (cross-host), one LAN across hosts."""
    half = nodes // 2
    lines = ["name: shr", "nodes:"] + [f"  n{h}-{i}: {{host: emu{h}}}" for h in range(hosts) for i in range(nodes)]
    lines.append("lans:")
    for h in range(hosts):
        for k, members in enumerate((range(half), range(half, nodes))):
            lines.append(f"  l{h}-{k}: {{members: [{', '.join(f'n{h}-{i}' for i in members)}]}}")
    lines.append(f"  across: {{members: [{', '.join(f'n{h}-{nodes - 1}' for h in range(hosts))}]}}")
    lines.append("links:")
    lines += [f"  - {{name: x{h}, ends: [n{h}-0, n{(h + 1) % hosts}-1], bandwidth: 10Mbit, delay: 5ms}}"
              for h in range(hosts)]
    return "\n".join(lines) + "\n"


def multihost(hosts: int = 4, nodes: int = 10) -> dict[str, HostPlan]:
    compiled = plan_for(load_topology_text(topology(hosts, nodes)), load_cluster_text(f"emulate: {hosts}\n"))
    return compiled.plans


def test_split_then_join_is_every_hosts_plan_byte_for_byte_and_the_shared_part_is_written_once() -> None:
    plans = multihost()
    assert all(p.others and p.vxlans for p in plans.values())          # really multi-host: others, tunnels
    cut = sharing.split(plans)
    assert cut.shared is not None and set(cut.parts) == set(plans)
    shared = sharing.parse_shared(cut.shared)
    for host, plan in plans.items():
        assert sharing.join(shared, cut.parts[host]).to_json() == plan.to_json()
        assert json.loads(cut.parts[host])["shared"] == ["segments", "hosts_file", "node_order", "others"]
    whole = sum(len(p.to_json()) for p in plans.values())
    split_bytes = len(cut.shared) + sum(map(len, cut.parts.values()))
    assert split_bytes < whole * 0.6                  # 4 hosts already; the ratio grows with the hosts
    assert all(b"hosts_file\":\"\"" in part for part in cut.parts.values())     # not repeated per host


def test_a_field_that_differs_on_one_host_stays_in_that_hosts_part() -> None:
    plans = multihost(3, 6)
    odd = plans["emu1"]
    plans["emu1"] = replace(odd, hosts_file=odd.hosts_file + "10.9.9.9 extra\n", others=odd.others[1:])
    cut = sharing.split(plans)
    shared = sharing.parse_shared(cut.shared or b"")
    assert json.loads(cut.parts["emu1"])["shared"] == ["segments", "node_order"]
    assert json.loads(cut.parts["emu0"])["shared"] == ["segments", "hosts_file", "node_order", "others"]
    for host, plan in plans.items():
        assert sharing.join(shared, cut.parts[host]).to_json() == plan.to_json()


def test_one_plan_is_published_whole_and_a_part_of_an_unknown_format_is_one_line() -> None:
    plans = multihost(2, 4)
    only = {"emu0": plans["emu0"]}
    cut = sharing.split(only)
    assert cut.shared is None and sharing.join(None, cut.parts["emu0"]).to_json() == plans["emu0"].to_json()
    with pytest.raises(ValueError, match="^plan part of format 2: this agent reads format 1; update nestbed"):
        sharing.join(sharing.SharedDoc(HostPlan("shr", ""), {}), b'{"format":2,"shared":[],"plan":{}}')
    with pytest.raises(ValueError, match="not a shared field"):
        sharing.join(sharing.SharedDoc(HostPlan("shr", ""), {}), b'{"format":1,"shared":["nodes"],"plan":%s}'
                     % plans["emu0"].to_json().encode())


def test_a_manifest_names_the_shared_document_and_an_older_manifest_still_reads() -> None:
    named = Manifest(3, "abc", 1, 900, shared="def", shared_chunks=2)
    assert Manifest.from_bytes(named.to_bytes()) == named
    old = b'{"bytes": 900, "chunks": 1, "empty": false, "generation": 3, "plan": "abc"}'   # before the split
    assert Manifest.from_bytes(old) == Manifest(3, "abc", 1, 900) and not Manifest.from_bytes(old).shared
    assert Manifest(3, "abc", 1, 900).to_bytes() == old          # a whole plan's manifest is written as before


def test_the_cache_fetches_a_shared_document_once_per_sha_and_forgets_a_failed_fetch() -> None:
    async def go() -> None:
        cache = SharedCache(keep=2)
        calls: list[str] = []

        def fetcher(sha: str, fail: bool = False):  # type: ignore[no-untyped-def]
            async def fetch() -> sharing.SharedDoc:
                calls.append(sha)
                await asyncio.sleep(0.01)
                if fail:
                    raise ConnectionError("etcd went away")
                return sharing.SharedDoc(HostPlan("x", sha), {})
            return fetch
        got = await asyncio.gather(*(cache.get("s1", fetcher("s1")) for _ in range(50)))
        assert calls == ["s1"] and {p.plan.host for p in got} == {"s1"} and cache.fetches == 1
        assert (await cache.get("s1", fetcher("s1"))).plan.host == "s1" and calls == ["s1"]
        with pytest.raises(ConnectionError):
            await cache.get("s2", fetcher("s2", fail=True))
        assert "s2" not in cache
        assert (await cache.get("s2", fetcher("s2"))).plan.host == "s2" and calls == ["s1", "s2", "s2"]
        await cache.get("s3", fetcher("s3"))
        assert "s1" not in cache and "s2" in cache and "s3" in cache       # the newest two
    asyncio.run(go())


class FakeEtcd:
    """The reads HostAgent._plan makes: range_prefix of a blob's chunks (at a revision)."""

    def __init__(self) -> None:
        self.kv: dict[bytes, bytes] = {}
        self.reads: list[bytes] = []

    def put_blob(self, exp: str, data: bytes) -> blobs.Blob:
        blob = blobs.pack(data, chunk_bytes=4096)            # small chunks: several per blob
        for k, chunk in enumerate(blob.chunks):
            self.kv[keys.chunk(exp, blob.sha, k)] = chunk
        return blob

    async def range_prefix(self, prefix: bytes, revision: int | None = None, **_: Any) -> SimpleNamespace:
        self.reads.append(prefix)
        found = [SimpleNamespace(key=k, value=v) for k, v in sorted(self.kv.items()) if k.startswith(prefix)]
        return SimpleNamespace(kvs=found)


def test_an_agent_reads_the_shared_document_only_when_its_sha_changes() -> None:
    plans = multihost(3, 6)
    cut = sharing.split(plans)
    etcd = FakeEtcd()
    common = etcd.put_blob("shr", cut.shared or b"")
    parts = {h: etcd.put_blob("shr", p) for h, p in cut.parts.items()}
    cache = SharedCache()
    agents = {h: HostAgent(etcd, h, lambda plan: None, ident="t", shared=cache) for h in plans}  # type: ignore[arg-type]

    async def go() -> None:
        for host, agent in agents.items():
            manifest = Manifest(1, parts[host].sha, len(parts[host].chunks), parts[host].size, shared=common.sha,
                                shared_chunks=len(common.chunks))
            assert (await agent._plan("shr", manifest, 5)).to_json() == plans[host].to_json()
        assert etcd.reads.count(keys.blob("shr", common.sha)) == 1 and cache.fetches == 1
        # a new generation: the shared document changed (a LAN renamed in hosts_file terms): fetched once more
        changed = {h: replace(p, hosts_file=p.hosts_file + "# gen 2\n") for h, p in plans.items()}
        cut2 = sharing.split(changed)
        common2 = etcd.put_blob("shr", cut2.shared or b"")
        part = etcd.put_blob("shr", cut2.parts["emu0"])
        got = await agents["emu0"]._plan("shr", Manifest(2, part.sha, len(part.chunks), part.size,
                                                         shared=common2.sha, shared_chunks=len(common2.chunks)), 9)
        assert got.to_json() == changed["emu0"].to_json() and cache.fetches == 2
        # a manifest from before the split: its plan blob is the whole plan, no shared document read
        whole = etcd.put_blob("shr", plans["emu1"].to_json().encode())
        before = len(etcd.reads)
        got = await agents["emu1"]._plan("shr", Manifest(3, whole.sha, len(whole.chunks), whole.size), 11)
        assert got.to_json() == plans["emu1"].to_json() and etcd.reads[before:] == [keys.blob("shr", whole.sha)]
        # a chunk missing: one line, never half a plan
        del etcd.kv[keys.chunk("shr", whole.sha, 0)]
        with pytest.raises(ValueError, match="chunks in etcd"):
            await agents["emu1"]._plan("shr", Manifest(3, whole.sha, len(whole.chunks), whole.size), 11)
    asyncio.run(go())


def test_a_joined_plan_reuses_the_shared_documents_objects() -> None:
    plans = multihost()
    cut = sharing.split(plans)
    doc = sharing.parse_shared(cut.shared or b"")
    joined = {host: sharing.join(doc, cut.parts[host]) for host in plans}
    for host, plan in joined.items():
        assert plan.segments is doc.plan.segments and plan.node_order is doc.plan.node_order
        assert all(any(node is n for n in doc.plan.others) for node in plan.others)     # references, not copies
        assert plan.others is not doc.plan.others and all(node.host != host for node in plan.others)
        assert plan.to_json() == plans[host].to_json()
