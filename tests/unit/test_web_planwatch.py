"""A server outlives its plan: `nestbed modify` rewrites plan.json while `nestbed web` runs. The feed's frames then
follow the new plan (its links, in its order, from fresh trackers), carry its version so a page drawn from the
old one reloads, and the node API finds the new nodes (web/planwatch.py)."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import webcases

from nestbed import paths
from nestbed.agent.store import CounterRow, Store
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize import linkstate
from nestbed.web import feed, planwatch

MORE = webcases.LAB.replace("nodes:\n", "nodes:\n  c: {}\n").replace(      # lab with c, and a link a–c
    "lans:", "  - {ends: [a, c], bandwidth: 5Mbit}\nlans:")


def _rewrite(state, text: str) -> None:
    """What modify does to plan.json (a new file, a newer mtime)."""
    before = state.plan_path.stat().st_mtime_ns
    state.plan_path.write_text(compile_plan(load_topology_text(text, "lab.yaml")).to_json())
    os.utime(state.plan_path, ns=(before + 1_000_000, before + 1_000_000))


def test_the_watch_rereads_a_rewritten_plan_and_indexes_its_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state, plan = webcases.running(tmp_path, monkeypatch)
    plans = planwatch.PlanWatch(state)
    first = plans.current()
    assert first is not None and plans.version == planwatch.plan_version(state) != "0"
    assert plans.current() is first and plans.node("c") is None and plans.node("a") is not None
    _rewrite(state, MORE)
    assert plans.current() is not first and plans.node("c") is not None
    assert plans.version == planwatch.plan_version(state)
    state.plan_path.unlink()
    assert plans.current() is None and plans.version == "0" and plans.node("a") is None


def test_links_version_changes_when_a_link_is_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state, _ = webcases.running(tmp_path, monkeypatch)
    assert planwatch.links_version(state) == "0"
    linkstate.save(state, "link0", "down", None)
    assert planwatch.links_version(state) != "0"


def _sample(store: Store, created: float, tx: int) -> None:
    store.add_counters(created, [CounterRow(node, iface, 0, tx, 0, 0) for node, iface in
                                 (("a", "eth0"), ("r", "eth0"), ("r", "eth1"), ("b", "eth0"), ("a", "eth1"),
                                  ("c", "eth0"))])


def test_after_a_modify_frames_index_the_new_plans_links_with_its_version(tmp_path, monkeypatch):
    state, _ = webcases.running(tmp_path, monkeypatch)
    store = Store(paths.store(state.directory))

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()                                   # no producer task: ticks by hand
        source = feed.Feed(state, stop)
        client = await source.subscribe(0)
        _sample(store, 10.0, 0)
        await source.tick()
        _sample(store, 11.0, 125_000)
        await source.tick()
        old = [json.loads(m.decode().split("data: ", 1)[1]) for m in client.take()][-1]
        assert len(old["rate"]) == 2 and old["rate"][0] == 2000 and old["plan"] == planwatch.plan_version(state)
        _rewrite(state, MORE)
        _sample(store, 12.0, 250_000)
        await source.tick()
        new = json.loads(client.take()[-1].decode().split("data: ", 1)[1])
        assert new["plan"] == planwatch.plan_version(state) != old["plan"]
        assert len(new["rate"]) == 3                  # link0, link1 (a–c), lan0: the new plan's order
        assert new["rate"] == [None, None, None]      # fresh trackers: no rate across two plans
        _sample(store, 13.0, 375_000)
        await source.tick()
        assert json.loads(client.take()[-1].decode().split("data: ", 1)[1])["rate"][1] == 2000     # a–c now (both ends)
        await source.close()
    asyncio.run(main())
    store.close()
