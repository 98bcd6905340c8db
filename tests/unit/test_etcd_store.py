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
