"""The etcd engine against a real etcd (started by the test on loopback): generation CAS, publishing chunked plans
and reading them back at the manifest's revision, waiting for statuses, failures, lost hosts, rerun = nothing new."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from etcd_server import EtcdServer
from nestbed.cluster.etcd import generation, keys, publish
from nestbed.cluster.etcd.agent import HostAgent
from nestbed.cluster.etcd.client import Etcd, KeepAlive
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, NodePlan

pytestmark = pytest.mark.needs("etcd")


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    with EtcdServer() as etcd:
        yield etcd
    assert not etcd.running()


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def plan(exp: str, host: str, nodes: int = 3, pad: int = 0) -> HostPlan:
    return HostPlan(exp, host, nodes=[NodePlan(f"n{k}", "process", f"nb-{exp}.n{k}", False,
                                               commands=[os.urandom(pad).hex()] if pad else [])
                                      for k in range(nodes)])


def test_the_generation_moves_by_cas_only_when_the_spec_changes(server: EtcdServer) -> None:
    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            assert await generation.advance(etcd, "cas", "s1") == (1, True)
            assert await generation.advance(etcd, "cas", "s1") == (1, False)
            assert await generation.advance(etcd, "cas", "s2") == (2, True)
            # another controller moves it between our read and our write: the CAS refuses, in one line
            real_current = generation.current

            async def stale(etcd_: Etcd, exp: str) -> tuple[int, str]:
                found = await real_current(etcd_, exp)
                await etcd_.put(keys.generation(exp), b"7")
                return found
            generation.current = stale     # type: ignore[assignment]
            try:
                with pytest.raises(ExperimentError, match="another controller"):
                    await generation.advance(etcd, "cas", "s3")
            finally:
                generation.current = real_current     # type: ignore[assignment]
            assert (await etcd.get(keys.generation("cas"))).value == b"7"
            await etcd.delete_prefix(keys.experiment("cas"))
    run(go())


def test_plans_over_the_request_limit_reach_agents_whole_and_a_rerun_writes_nothing(server: EtcdServer) -> None:
    seen: dict[str, HostPlan] = {}

    def realize(p: HostPlan) -> None:
        seen[p.host] = p

    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            keepalive = KeepAlive(etcd, 5)
            agents = [HostAgent(etcd, h, realize, ident="test") for h in ("a1", "a2")]
            for agent in agents:
                await agent.announce(keepalive)
            keepalive.start()
            tasks = [asyncio.create_task(a.serve()) for a in agents]
            plans = {"a1": plan("big", "a1", 4, pad=1_000_000), "a2": plan("big", "a2", 2)}  # a1: 8 MB of hex
            first = await publish.publish(etcd, "big", {h: p.to_json().encode() for h, p in plans.items()})
            assert first.generation == 1 and sorted(first.written) == ["a1", "a2"] and first.bytes > 1_600_000
            done = await publish.wait(etcd, "big", ["a1", "a2"], 1, 30)
            assert all(s.phase == "ready" and s.observed == 1 for s in done.values())
            assert seen["a1"] == plans["a1"] and seen["a2"] == plans["a2"]
            again = await publish.publish(etcd, "big", {h: p.to_json().encode() for h, p in plans.items()})
            assert again.generation == 1 and not again.raised and again.written == [] and again.bytes == 0
            plans["a2"] = plan("big", "a2", 3)           # one host changes: only its manifest is written
            third = await publish.publish(etcd, "big", {h: p.to_json().encode() for h, p in plans.items()})
            assert third.generation == 2 and sorted(third.written) == ["a1", "a2"] and third.bytes < 10_000
            await publish.wait(etcd, "big", ["a1", "a2"], 2, 30)
            assert seen["a2"] == plans["a2"]
            assert await publish.collect_garbage(etcd, "big", ["a1", "a2"]) == 1    # a2's first plan
            gone = await publish.publish(etcd, "big", {"a1": None, "a2": None})
            removed = await publish.wait(etcd, "big", ["a1", "a2"], gone.generation, 30)
            assert {s.phase for s in removed.values()} == {"removed"}
            assert seen["a1"].nodes == []
            await publish.forget(etcd, "big", ["a1", "a2"])
            assert (await etcd.range_prefix(keys.experiment("big"), count_only=True)).count == 0
            for task in tasks:
                task.cancel()
            await keepalive.stop()
    run(go())


def test_a_failed_host_is_one_line_with_its_error(server: EtcdServer) -> None:
    def realize(p: HostPlan) -> None:
        if p.host == "f2" and p.nodes:
            raise ExperimentError("namespace nb-x.n0 exists\nsecond line")

    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            keepalive = KeepAlive(etcd, 5)
            agents = [HostAgent(etcd, h, realize) for h in ("f1", "f2")]
            for agent in agents:
                await agent.announce(keepalive)
            keepalive.start()
            tasks = [asyncio.create_task(a.serve()) for a in agents]
            out = await publish.publish(etcd, "fail", {h: plan("fail", h).to_json().encode() for h in ("f1", "f2")})
            with pytest.raises(publish.HostsFailed, match=r"^host f2: namespace nb-x.n0 exists$"):
                await publish.wait(etcd, "fail", ["f1", "f2"], out.generation, 30)
            await publish.forget(etcd, "fail", ["f1", "f2"])
            for task in tasks:
                task.cancel()
            await keepalive.stop()
    run(go())


def test_a_host_whose_lease_runs_out_is_reported_lost_within_ttl_plus_2_s(server: EtcdServer) -> None:
    ttl = 2

    async def go() -> float:
        async with Etcd([server.url]) as etcd:
            keepalive = KeepAlive(etcd, ttl)
            dying = HostAgent(etcd, "l1", lambda p: time.sleep(60))   # never finishes
            await dying.announce(keepalive, ttl)
            out = await publish.publish(etcd, "lost", {"l1": plan("lost", "l1").to_json().encode()})
            started = time.monotonic()            # the lease is never refreshed: the agent as if killed now
            with pytest.raises(publish.HostsFailed, match="host l1 lost") as raised:
                await publish.wait(etcd, "lost", ["l1"], out.generation, 30)
            assert raised.value.lost == ["l1"]
            await publish.forget(etcd, "lost", ["l1"])
            return time.monotonic() - started
    assert run(go()) <= ttl + 2


def test_an_agent_restarted_relists_and_sees_what_was_published_while_it_was_away(server: EtcdServer) -> None:
    seen: list[int] = []

    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            out = await publish.publish(etcd, "relist", {"r1": plan("relist", "r1").to_json().encode()})
            keepalive = KeepAlive(etcd, 5)
            agent = HostAgent(etcd, "r1", lambda p: seen.append(len(p.nodes)))
            await agent.announce(keepalive)
            keepalive.start()
            task = asyncio.create_task(agent.serve())
            await publish.wait(etcd, "relist", ["r1"], out.generation, 30)
            newer = await publish.publish(etcd, "relist", {"r1": plan("relist", "r1", 5).to_json().encode()})
            await publish.wait(etcd, "relist", ["r1"], newer.generation, 30)
            assert seen == [3, 5]
            task.cancel()
            await publish.forget(etcd, "relist", ["r1"])
            await keepalive.stop()
    run(go())


def test_after_up_the_history_older_than_the_generation_is_compacted(server: EtcdServer) -> None:
    from nestbed.cluster.etcd import engine
    seen: list[HostPlan] = []

    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            keepalive = KeepAlive(etcd, 5)
            agents = [HostAgent(etcd, h, seen.append) for h in ("c1", "c2")]
            for agent in agents:
                await agent.announce(keepalive)
            keepalive.start()
            tasks = [asyncio.create_task(a.serve()) for a in agents]
            first = await engine.converge(etcd, "cmp", {h: plan("cmp", h) for h in ("c1", "c2")}, 30)
            second = await engine.converge(etcd, "cmp", {h: plan("cmp", h, 4) for h in ("c1", "c2")}, 30)
            assert first["generation"] == 1 and second["generation"] == 2
            assert second["compacted"] > first["compacted"]
            for task in tasks:
                task.cancel()
            with pytest.raises(Exception, match="compacted"):       # generation 1's history is gone
                await etcd.range_prefix(keys.experiment("cmp"), revision=second["compacted"] - 1)
            at = await etcd.range_prefix(keys.statuses("cmp"), revision=second["compacted"])
            assert len(at.kvs) == 2                                  # and what generation 2 reached is kept
            # an agent started now re-lists; its manifest's revision is compacted: it reads the current chunks
            manifest = await etcd.get(keys.manifest("c1", "cmp"))
            assert manifest.mod_revision < second["compacted"]
            fresh: list[HostPlan] = []
            task = asyncio.create_task(HostAgent(etcd, "c1", fresh.append).serve())
            for _ in range(200):
                if fresh:
                    break
                await asyncio.sleep(0.02)
            task.cancel()
            assert [len(p.nodes) for p in fresh] == [4]
            await keepalive.stop()
            await publish.forget(etcd, "cmp", ["c1", "c2"])
    run(go())
    assert sorted(len(p.nodes) for p in seen) == [3, 3, 4, 4]


def test_an_agent_rides_out_an_etcd_outage_and_converges_to_what_is_published_after(capsys) -> None:  # type: ignore[no-untyped-def]
    import threading

    from nestbed.cluster.etcd import agent as etcd_agent
    applying, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def realize(p: HostPlan) -> None:
        applying.set()
        release.wait(30)                  # the first apply is under way when etcd goes
        seen.append(len(p.nodes))

    async def go(server: EtcdServer) -> None:
        agent = asyncio.create_task(etcd_agent.run([server.url], "o1", realize, backoff=(0.05, 0.4)))
        async with Etcd([server.url]) as etcd:
            for _ in range(500):
                if await etcd.get(keys.alive("o1")) is not None:
                    break
                await asyncio.sleep(0.02)
            await publish.publish(etcd, "out", {"o1": plan("out", "o1", 2).to_json().encode()})
        assert await asyncio.to_thread(applying.wait, 15)
        await asyncio.to_thread(server.halt)                 # publish nothing while it is away
        release.set()                                        # the apply finishes during the outage
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.start)                # the same data dir and ports
        async with Etcd([server.url]) as etcd:
            done = await publish.wait(etcd, "out", ["o1"], 1, 30)         # the status the outage swallowed
            assert done["o1"].phase == "ready"
            newer = await publish.publish(etcd, "out", {"o1": plan("out", "o1", 5).to_json().encode()})
            assert newer.generation == 2
            await publish.wait(etcd, "out", ["o1"], 2, 30)
            alive = await etcd.get(keys.alive("o1"))
            assert alive is not None and alive.lease != 0                # a new lease, granted after the outage
            assert not agent.done()                                      # never restarted
            agent.cancel()
            with pytest.raises(asyncio.CancelledError):
                await agent
            assert await etcd.get(keys.alive("o1")) is None              # its lease revoked on the way out
            await publish.forget(etcd, "out", ["o1"])
    with EtcdServer() as server:
        run(go(server))
    assert seen[-1] == 5 and 2 in seen
    lines = [line for line in capsys.readouterr().err.splitlines() if "o1" in line]
    assert len(lines) == 1 and "lost" in lines[0] and "reconnecting" in lines[0], lines


def test_status_shows_a_host_whose_alive_key_is_gone_as_lost(server: EtcdServer) -> None:
    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            keepalive = KeepAlive(etcd, 5)
            agents = [HostAgent(etcd, h, lambda p: None) for h in ("s1", "s2")]
            for agent in agents:
                await agent.announce(keepalive)
            keepalive.start()
            tasks = [asyncio.create_task(a.serve()) for a in agents]
            plans = {h: plan("st", h).to_json().encode() for h in ("s1", "s2", "s3")}   # s3 has no agent
            out = await publish.publish(etcd, "st", plans)
            await publish.wait(etcd, "st", ["s1", "s2"], out.generation, 30)
            found = await publish.summary(etcd, "st")
            assert found["lost"] == {"s3": None} and found["hosts"] == 3
            await etcd.client.revoke_lease(keepalive.leases[1])          # s2's agent as if its lease ran out
            await asyncio.sleep(1.2)
            found = await publish.summary(etcd, "st")
            lost = found["lost"]
            assert isinstance(lost, dict) and sorted(lost) == ["s2", "s3"] and lost["s3"] is None
            assert 1.0 <= lost["s2"] < 10
            for task in tasks:
                task.cancel()
            await keepalive.stop()
            await publish.forget(etcd, "st", ["s1", "s2", "s3"])
    run(go())


def test_a_watch_refused_as_compacted_lists_again_in_the_agent_and_in_wait(server: EtcdServer) -> None:
    seen: list[int] = []

    async def go() -> None:
        async with Etcd([server.url]) as etcd:
            real_watch = etcd.watch_prefix
            refused: list[bytes] = []

            async def compacting_first(prefix: bytes, start_revision: int | None = None):  # type: ignore[no-untyped-def]
                if prefix not in refused:        # another controller compacts between our listing and our watch
                    refused.append(prefix)
                    await etcd.put(b"/nestbed/test/bump", b"x")        # twice: past the watch's start
                    await etcd.put(b"/nestbed/test/bump", b"y")
                    await etcd.compact((await etcd.range_prefix(b"/nestbed/test/")).header.revision)
                return await real_watch(prefix, start_revision)
            etcd.watch_prefix = compacting_first          # type: ignore[method-assign]
            keepalive = KeepAlive(etcd, 5)
            agent = HostAgent(etcd, "w1", lambda p: seen.append(len(p.nodes)))
            await agent.announce(keepalive)
            keepalive.start()
            task = asyncio.create_task(agent.serve())
            await asyncio.wait_for(agent.ready.wait(), 10)
            out = await publish.publish(etcd, "wc", {"w1": plan("wc", "w1", 2).to_json().encode()})
            done = await publish.wait(etcd, "wc", ["w1"], out.generation, 20)
            assert done["w1"].phase == "ready" and seen == [2]
            assert keys.desired("w1") in refused and keys.statuses("wc") in refused    # both were refused once
            task.cancel()
            await keepalive.stop()
            await publish.forget(etcd, "wc", ["w1"])
            await etcd.delete_prefix(b"/nestbed/test/")
    run(go())


def test_an_agent_whose_lease_ran_out_grants_a_new_one_and_is_alive_again(server: EtcdServer) -> None:
    from nestbed.cluster.etcd import agent as etcd_agent

    async def go() -> None:
        agent = asyncio.create_task(etcd_agent.run([server.url], "x1", lambda p: None, backoff=(0.05, 0.4)))
        async with Etcd([server.url]) as etcd:
            async def alive_lease() -> int:
                for _ in range(250):
                    found = await etcd.get(keys.alive("x1"))
                    if found is not None:
                        return int(found.lease)
                    await asyncio.sleep(0.02)
                raise AssertionError("no alive key")
            first = await alive_lease()
            await etcd.client.revoke_lease(first)       # as if the agent had been paused past its TTL
            assert await etcd.get(keys.alive("x1")) is None
            second = await alive_lease()                # within a keep-alive period (TTL/3) and a backoff
            assert second != first and not agent.done()
            agent.cancel()
            with pytest.raises(asyncio.CancelledError):
                await agent
    run(go())
