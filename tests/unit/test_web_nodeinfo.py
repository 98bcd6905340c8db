"""web/nodeinfo.py: `GET /api/node/<name>` on a real store in a temporary state directory (no root): the node's
plan, its identity files and its summed experiment-interface rates (resets, attack, `since`), one line for an
unknown node or a bad `since`, empty series before any sample; on emulated hosts the node's host's store."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import webcases
from aiohttp.test_utils import TestClient, TestServer

from nestbed import paths
from nestbed.agent.store import CounterRow, Store
from nestbed.realize.state import ExperimentState
from nestbed.web import feed, nodeinfo, server
from nestbed.web.auth import new_token
from nestbed.web.hostcounters import HostCounters

TOKEN = new_token()


def row(iface: str, tx: int = 0, rx: int = 0, attack_tx: int = 0, attack_rx: int = 0, node: str = "r") -> CounterRow:
    return CounterRow(node, iface, rx, tx, 0, 0, attack_rx_bytes=attack_rx, attack_tx_bytes=attack_tx)


def test_series_sums_the_interfaces_rates_with_resets_and_attack_never_above_the_total():
    samples = [(10.0, row("eth0", tx=1000)), (10.0, row("eth1", rx=0)),
               (11.0, row("eth0", tx=126_000, attack_tx=500_000)), (11.0, row("eth1", rx=250_000, attack_rx=125_000)),
               (13.0, row("eth0", tx=50_000)), (13.0, row("eth1", rx=500_000))]    # eth0 reset; a 2 s interval
    assert nodeinfo.series(samples) == {"t": [11.0, 13.0], "tx": [1000.0, 200.0], "rx": [2000.0, 1000.0],
                                        "attack_tx": [1000.0, 0.0], "attack_rx": [1000.0, 0.0]}
    assert nodeinfo.series(samples, since=11.0)["t"] == [13.0]                    # only what the page lacks
    assert nodeinfo.series([]) == {"t": [], "tx": [], "rx": [], "attack_tx": [], "attack_rx": []}
    long = [(float(t), row("eth0", tx=125 * t)) for t in range(1000)]            # 1 kbit/s for 1000 s
    shown = nodeinfo.series(long)
    assert shown["t"][0] == 999.0 - nodeinfo.SERIES_SECONDS + 1 and shown["t"][-1] == 999.0
    assert set(shown["tx"]) == {1.0}


def run_client(state: ExperimentState, check: Any, counters: HostCounters | None = None) -> None:
    async def main() -> None:
        app = server.build_app(state, TOKEN)
        if counters is not None:
            app[feed.FEED].counters = counters
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await check(client)
    asyncio.run(main())


def test_a_node_is_its_plan_identity_and_rates_of_its_experiment_interfaces(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    state, plan = webcases.running(tmp_path, monkeypatch)
    path = paths.store(state.directory)

    async def check(client: TestClient[Any, Any]) -> None:
        empty = await client.get(f"/api/node/r?token={TOKEN}")           # no store yet: not an error
        assert empty.status == 200 and (await empty.json())["series"]["t"] == []
        store = Store(path)
        for t, sent in ((100.0, 0), (101.0, 250_000), (102.0, 500_000)):  # 2 Mbit/s out of each interface
            store.add_counters(t, [row("eth0", tx=sent), row("eth1", tx=sent), row("ctl0", tx=10 * sent),
                                   row("eth0", tx=7 * sent, node="a")])
        answer = await client.get(f"/api/node/r?token={TOKEN}")
        assert answer.status == 200 and answer.content_type == "application/json"
        node = await answer.json()
        assert {k: node[k] for k in ("name", "kind", "host", "vm")} == {"name": "r", "kind": plan.node("r").kind,
                                                                      "host": plan.host, "vm": None}
        assert node["interfaces"] == [{"name": i.name, "address": i.address, "mac": i.mac, "segment": i.segment}
                                      for i in plan.node("r").interfaces]
        assert [i["segment"] for i in node["interfaces"]] == ["link0", "lan0"]
        assert node["identity"]["nickname"].startswith("r.lab.") and "ifmap" in node["identity"]
        assert node["series"] == {"t": [101.0, 102.0], "tx": [4000.0, 4000.0], "rx": [0.0, 0.0],
                                  "attack_tx": [0.0, 0.0], "attack_rx": [0.0, 0.0]}   # ctl0 and a: not counted
        newer = await (await client.get(f"/api/node/r?token={TOKEN}&since=101.0")).json()
        assert newer["series"]["t"] == [102.0]
        for bad, status in (("/api/node/zz", 404), ("/api/node/plan.json", 404), ("/api/node/r?since=soon", 400),
                            ("/api/node/r?since=nan", 400)):
            wrong = await client.get(f"{bad}{'&' if '?' in bad else '?'}token={TOKEN}")
            text = await wrong.text()
            assert wrong.status == status and text.count("\n") == 1 and text.startswith("nestbed web: "), bad
        client.session.cookie_jar.clear()                                # the tokened loads set the cookie
        assert (await client.get("/api/node/r")).status == 401
        store.close()
    run_client(state, check)


def test_on_emulated_hosts_a_nodes_series_comes_from_its_hosts_store(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    state, plan = webcases.running(tmp_path, monkeypatch)
    host_of = {"a": "emu0", "r": "emu0", "b": "emu1"}
    whole = dataclasses.replace(plan, nodes=[dataclasses.replace(n, host=host_of[n.name]) for n in plan.nodes])
    state.plan_path.write_text(whole.to_json())
    state.set_status("up", cluster={"host_of": host_of, "hosts": ["emu0", "emu1"]})
    stores = {host: tmp_path / f"{host}.sqlite" for host in ("emu0", "emu1")}
    for host, store in ((h, Store(p)) for h, p in stores.items()):
        bytes_out = 125_000 if host == "emu1" else 0                      # only b's host has b's counters
        store.add_counters(5.0, [row("eth0", node="b")])
        store.add_counters(6.0, [row("eth0", tx=bytes_out, node="b")])
        store.close()

    async def check(client: TestClient[Any, Any]) -> None:
        node = await (await client.get(f"/api/node/b?token={TOKEN}")).json()
        assert node["host"] == "emu1" and node["series"]["tx"] == [1000.0]
    run_client(state, check, HostCounters(state, stores_of=lambda name: dict(stores)))
    assert json.loads(state.plan_path.read_text())["nodes"][0]["host"] == "emu0"


def test_on_real_hosts_a_nodes_window_is_asked_of_its_hosts_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from nestbed.cluster import hostcopies
    state, plan = webcases.running(tmp_path, monkeypatch)
    state.set_status("up", cluster={"host_of": {"a": "h0", "r": "h0", "b": "h1"}, "hosts": ["h0", "h1"]})
    monkeypatch.setattr(hostcopies, "real_hosts", lambda state: ["h0", "h1"])
    asked: list[tuple[Any, ...]] = []

    class Cluster:                                  # deploy.control(name): SSH to each host's agent
        def counter_window(self, node: str, ifaces: list[str], after: float | None, seconds: float) -> dict[str, Any]:
            asked.append((node, ifaces, after, seconds))
            fields = {"rx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
            return {"rows": [{"created": 20.0, "node": node, "iface": "eth0", "tx_bytes": 0, **fields},
                             {"created": 21.0, "node": node, "iface": "eth0", "tx_bytes": 1250, **fields}]}

        def close(self) -> None:
            pass
    counters = HostCounters(state, control_of=lambda name: Cluster())
    assert counters.mode() == "real"
    node = nodeinfo.node_info(plan, plan.node("b"), counters, since=20.5)
    assert node == {"name": "b", "series": node["series"]}          # a poll: only the new points
    assert node["series"]["t"] == [21.0] and node["series"]["tx"] == [10.0]
    assert asked == [("b", ["eth0"], 20.5 - nodeinfo.LOOKBACK, nodeinfo.SERIES_SECONDS + nodeinfo.LOOKBACK)]
