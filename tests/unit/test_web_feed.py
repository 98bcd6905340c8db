"""web/feed.py: `GET /api/stream` on a real store in a temporary state directory (no root), read as SSE bytes
through aiohttp's TestClient: counters frames with rates, events with their ids, Last-Event-ID replay, a slow
client, the end of the stream with the server's stop event."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import webcases
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from nestbed import paths
from nestbed.agent.store import CounterRow, Store
from nestbed.cluster import hostcopies
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState
from nestbed.web import feed, planwatch, server
from nestbed.web.auth import new_token

TOKEN = new_token()
LAB = webcases.LAB
WAIT = 10.0          # s: only a guard against a hang, never a measure
Message = dict[str, Any]


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ExperimentState, Store]]:
    """An experiment `lab` with its plan and its agent's store (link0 = a:eth0, r:eth0; lan0 = r:eth1, b:eth0)."""
    state, plan = webcases.running(tmp_path, monkeypatch, LAB)
    assert [(s.name, [m[:2] for m in s.members]) for s in plan.segments] == [
        ("link0", [("a", "eth0"), ("r", "eth0")]), ("lan0", [("r", "eth1"), ("b", "eth0")])]
    store = Store(paths.store(state.directory))
    yield state, store
    store.close()


def sample(store: Store, created: float, a: int, attack: int = 0, b: int = 0) -> None:
    """a:eth0 has sent `a` bytes (`attack` of them DSCP 8), b:eth0 `b`; the rest nothing."""
    def row(node: str, iface: str, tx: int = 0, marked: int = 0) -> CounterRow:
        return CounterRow(node, iface, 0, tx, 0, 0, attack_tx_bytes=marked)
    store.add_counters(created, [row("a", "eth0", a, attack), row("r", "eth0"), row("r", "eth1"),
                                 row("b", "eth0", b), row("r", "ctl0", 10**9)])


async def messages(response: ClientResponse) -> AsyncIterator[Message]:
    """The stream's messages as {field: value}; comments (pings) as {"comment": text}."""
    message: Message = {}
    while True:
        line = (await asyncio.wait_for(response.content.readline(), WAIT)).decode()
        if not line:
            return
        line = line.rstrip("\n")
        if line == "":
            if message:
                yield message
            message = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            message[name] = value


async def next_of(stream: AsyncIterator[Message], kind: str) -> Message:
    async for message in stream:
        if message.get("event") == kind:
            return message
    raise AssertionError(f"the stream ended before an {kind!r} message")


def with_client(state: ExperimentState, check: Any, interval: float = 0.05) -> None:
    async def main() -> None:
        app = server.build_app(state, TOKEN)
        app[feed.FEED].interval = interval
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await check(client, app)
    asyncio.run(main())


def test_counters_frames_carry_each_links_rate_and_attack_share(lab):
    state, store = lab
    sample(store, 100.0, a=0)

    async def check(client: TestClient[Any, Any], app: web.Application) -> None:
        response = await client.get(f"/api/stream?token={TOKEN}")
        assert response.status == 200 and response.content_type == "text/event-stream"
        stream = messages(response)
        first = await next_of(stream, "counters")
        assert "id" not in first                                     # counters never move Last-Event-ID
        plan_now = planwatch.plan_version(state)
        assert json.loads(first["data"]) == {"seq": 1, "t": 100.0, "rate": [None, None], "attack": [None, None],
                                             "down": [], "plan": plan_now, "linkstate": "0"}
        linkstate.save(state, "lan0", "down", None)                 # `nestbed link lan0 down`, then a sample
        sample(store, 102.0, a=500_000, attack=125_000, b=25_000)    # 2 Mbit/s on link0, a quarter attack
        frame = json.loads((await next_of(stream, "counters"))["data"])
        assert frame == {"seq": 2, "t": 102.0, "rate": [2000, 100], "attack": [25, 0], "down": [1],
                         "plan": plan_now, "linkstate": planwatch.links_version(state)}
        assert frame["linkstate"] != "0"                             # the page re-reads the links' shaping
    with_client(state, check)


def test_an_event_arrives_with_its_id_and_last_event_id_replays_the_rest(lab):
    state, store = lab
    first = store.add_event("scenario", "stream-start", {"stream": "main"})
    second = store.add_event("mailbox", "serverReady", {"node": "b"})

    async def check(client: TestClient[Any, Any], app: web.Application) -> None:
        fresh = messages(await client.get(f"/api/stream?token={TOKEN}"))
        assert [(await next_of(fresh, "event"))["id"] for _ in range(2)] == [str(first), str(second)]
        resumed = messages(await client.get(f"/api/stream?token={TOKEN}", headers={"Last-Event-ID": str(first)}))
        replayed = await next_of(resumed, "event")
        assert replayed["id"] == str(second)
        assert json.loads(replayed["data"])["data"] == {"node": "b"}
        third = store.add_event("scenario", "fired", {"trigger": "t1"})
        for stream in (fresh, resumed):                              # live, after the replay, to both
            live = await next_of(stream, "event")
            assert live["id"] == str(third)
            assert {k: v for k, v in json.loads(live["data"]).items() if k != "created"} == {
                "id": third, "source": "scenario", "name": "fired", "data": {"trigger": "t1"}}
    with_client(state, check)


def test_a_bad_last_event_id_is_one_line_and_no_token_no_stream(lab):
    state, _ = lab

    async def check(client: TestClient[Any, Any], app: web.Application) -> None:
        assert (await client.get("/api/stream")).status == 401
        for wrong in ("seven", "\u00b2", "-1"):                     # ² is a digit to str.isdigit, not to int()
            bad = await client.get(f"/api/stream?token={TOKEN}", headers={"Last-Event-ID": wrong})
            text = await bad.text()
            assert bad.status == 400 and text.count("\n") == 1 and "Last-Event-ID" in text, wrong
    with_client(state, check)


def test_a_slow_client_gets_every_event_and_only_the_newest_frame(lab):
    state, store = lab

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()                                  # no producer task: ticks by hand
        source = feed.Feed(state, stop)
        client = await source.subscribe(0)
        sample(store, 10.0, a=0)
        one = store.add_event("scenario", "stream-start", None)
        await source.tick()
        sample(store, 11.0, a=125_000)
        two = store.add_event("scenario", "stream-end", None)
        await source.tick()
        await source.tick()                         # nothing new: nothing more queued
        taken = [m.decode() for m in client.take()]
        assert [m.split("\n")[0] for m in taken] == [f"id: {one}", f"id: {two}", "event: counters"]
        assert json.loads(taken[-1].split("data: ", 1)[1]) == {
            "seq": 2, "t": 11.0, "rate": [1000, 0], "attack": [0, 0], "down": [],
            "plan": planwatch.plan_version(state), "linkstate": "0"}
        assert client.take() == [] and not client.ready.is_set()
        await source.close()
    asyncio.run(main())


def test_the_stream_ends_when_the_server_stops_and_pings_when_quiet(lab):
    state, store = lab

    async def check(client: TestClient[Any, Any], app: web.Application) -> None:
        app[feed.FEED].ping_seconds = 0.05
        response = await client.get(f"/api/stream?token={TOKEN}")
        stream = messages(response)
        assert await anext(stream) == {"comment": "ping"}             # no sample, no event: only pings
        app[server.STOP].set()
        rest = [m async for m in stream]                             # ends (readline gives b"") instead of hanging
        assert all(m == {"comment": "ping"} for m in rest)
        assert response.content.at_eof()
        assert app[feed.FEED].clients == set()
    with_client(state, check)


def test_a_new_page_gets_the_newest_frame_at_once_and_a_broken_store_is_retried(lab):
    state, store = lab
    sample(store, 50.0, a=0)
    store.close()
    path = paths.store(state.directory)
    good = path.read_bytes()
    path.write_bytes(b"not a database" * 100)

    async def check(client: TestClient[Any, Any], app: web.Application) -> None:
        early = await client.get(f"/api/stream?token={TOKEN}")
        assert early.status == 200 and await early.read() == b""     # ends at once: EventSource will come back
        path.write_bytes(good)                                       # readable again: the next tick reads it
        again = messages(await client.get(f"/api/stream?token={TOKEN}"))
        assert json.loads((await next_of(again, "counters"))["data"])["t"] == 50.0
        late = messages(await client.get(f"/api/stream?token={TOKEN}"))
        assert json.loads((await next_of(late, "counters"))["data"])["seq"] == 1     # no new sample needed
    with_client(state, check)


def clustered(state: ExperimentState, host_of: dict[str, str]) -> None:
    """`lab` as deploy.up leaves a multi-host experiment: the whole plan's nodes name their host, status "cluster"."""
    import dataclasses
    plan = state.load_plan()
    assert plan is not None
    state.plan_path.write_text(dataclasses.replace(
        plan, nodes=[dataclasses.replace(n, host=host_of[n.name]) for n in plan.nodes]).to_json())
    state.set_status("up", cluster={"host_of": host_of, "hosts": sorted(set(host_of.values()))})


def frames_of(source: feed.Feed, client: feed.Client) -> list[dict[str, Any]]:
    return [json.loads(m.decode().split("data: ", 1)[1]) for m in client.take() if m.startswith(b"event: counters")]


def test_on_emulated_hosts_each_hosts_own_samples_make_one_frame(lab, tmp_path):
    state, controller = lab
    clustered(state, {"a": "emu0", "r": "emu0", "b": "emu1"})      # lan0 = r:eth1 (emu0) + b:eth0 (emu1)
    stores = {host: Store(tmp_path / f"{host}.sqlite") for host in ("emu0", "emu1")}

    def on_emu0(created: float, a: int, r_lan: int) -> None:
        stores["emu0"].add_counters(created, [CounterRow("a", "eth0", 0, a, 0, 0), CounterRow("r", "eth0", 0, 0, 0, 0),
                                              CounterRow("r", "eth1", 0, r_lan, 0, 0)])

    def on_emu1(created: float, b: int, attack: int = 0) -> None:
        stores["emu1"].add_counters(created, [CounterRow("b", "eth0", 0, b, 0, 0, attack_tx_bytes=attack)])

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()                                  # no producer task: ticks by hand
        source = feed.Feed(state, stop)
        source.counters = feed.HostCounters(state, stores_of=lambda name: {h: s.path for h, s in stores.items()})
        client = await source.subscribe(0)
        on_emu0(100.0, 0, 0)
        on_emu1(100.4, 0)
        await source.tick()
        assert frames_of(source, client) == [{"seq": 1, "t": 100.4, "rate": [None, None], "attack": [None, None],
                                              "down": [], "plan": planwatch.plan_version(state), "linkstate": "0"}]
        on_emu0(101.0, 125_000, 62_500)             # 1 Mbit/s on link0, 0.5 Mbit/s of r into lan0
        await source.tick()
        assert frames_of(source, client)[0]["rate"] == [1000, 500]    # emu1 has no second sample yet
        on_emu1(102.4, 250_000, attack=250_000)     # b: 1 Mbit/s over 2 s, all of it attack
        controller.add_event("scenario", "fired", None)              # the scenario's events: the controller's store
        await source.tick()
        taken = client.take()
        assert taken[0].startswith(b"id: ") and b'"fired"' in taken[0]
        frame = json.loads(taken[-1].decode().split("data: ", 1)[1])
        assert frame == {"seq": 3, "t": 102.4, "rate": [1000, 1500], "attack": [0, 67], "down": [],
                         "plan": planwatch.plan_version(state), "linkstate": "0"}
        await source.tick()
        assert client.take() == []                  # no host has a newer sample
        await source.close()
        for store in stores.values():
            store.close()
    asyncio.run(main())


class Clock:
    """The controller's monotonic clock, moved by hand."""
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def sent(node: str, tx: int) -> list[dict[str, Any]]:
    return [{"node": node, "iface": "eth0", "rx_bytes": 0, "tx_bytes": tx, "rx_packets": 0, "tx_packets": 0}]


class Cluster:
    """deploy.control(name): a ClusterControl over the hosts' agents, answering `counters` from a script."""
    def __init__(self, answers: list[Any]):
        self.answers = answers
        self.skipped: list[list[str]] = []
        self.closed = False

    def counters(self, skip: Any = ()) -> dict[str, Any]:
        self.skipped.append(sorted(skip))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return {host: sample for host, sample in answer.items() if host not in skip}

    def close(self) -> None:
        self.closed = True


def controls_answering(answers: list[Any]) -> tuple[list[Cluster], Callable[[str], Cluster]]:
    """A `control_of` that makes a Cluster answering from the one shared script, and the list of those it made."""
    made: list[Cluster] = []

    def connect(name: str) -> Cluster:
        made.append(Cluster(answers))
        return made[-1]
    return made, connect


def on_real_hosts(state: ExperimentState, monkeypatch: pytest.MonkeyPatch) -> None:
    clustered(state, {"a": "h0", "r": "h0", "b": "h1"})           # lan0 = r:eth1 (h0) + b:eth0 (h1)
    monkeypatch.setattr(hostcopies, "real_hosts", lambda state: ["h0", "h1"])       # status names real hosts


def test_on_real_hosts_an_unreachable_host_costs_only_its_own_links_and_is_said_once(lab, monkeypatch, caplog):
    state, _ = lab
    on_real_hosts(state, monkeypatch)
    lost = {"error": "host h1: lost the connection to its agent"}
    answers: list[Any] = [{"h0": {"created": 1.0, "rows": sent("a", 0)}, "h1": {"created": None, "rows": []}},
                          {"h0": {"created": 2.0, "rows": sent("a", 250_000)}, "h1": lost},
                          {"h0": {"created": 3.0, "rows": sent("a", 500_000)}, "h1": lost},
                          {"h0": {"created": 4.0, "rows": sent("a", 750_000)}, "h1": lost},
                          {"h0": {"created": 5.0, "rows": sent("a", 1_000_000)}, "h1": {"created": 9.0, "rows": []}}]
    clock = Clock()
    made, connect = controls_answering(answers)

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()                                  # no producer task: ticks by hand
        source = feed.Feed(state, stop)
        source.counters = feed.HostCounters(state, control_of=connect, clock=clock)
        client = await source.subscribe(0)
        await source.tick()
        assert frames_of(source, client)[0]["rate"] == [None, None]
        for tx_rate in (2000, 2000, 2000):          # h1 lost: h0's link still comes, every tick
            clock.now += 1.0
            await source.tick()
            assert frames_of(source, client)[0]["rate"][0] == tx_rate
        assert made[0].skipped == [[], [], ["h1"], ["h1"]]        # asked again only after the wait
        clock.now += 10.0
        await source.tick()
        assert made[0].skipped[-1] == [] and frames_of(source, client)[0]["rate"][0] == 2000
        assert len(made) == 1 and not made[0].closed              # one host's failure is not the control's
        said = [r.getMessage() for r in caplog.records if "h1" in r.getMessage()]
        assert said == ["web view: no counters from h1: host h1: lost the connection to its agent",
                        "web view: counters from h1 again"]
        await source.close()
        assert made[0].closed
    with caplog.at_level("INFO", logger="nestbed.web.hostcounters"):
        asyncio.run(main())


def test_on_real_hosts_a_broken_control_is_made_again_at_most_every_retry_seconds(lab, monkeypatch, caplog):
    state, _ = lab
    on_real_hosts(state, monkeypatch)
    answers: list[Any] = [{"h0": {"created": 1.0, "rows": sent("a", 0)}, "h1": {"created": None, "rows": []}},
                          OSError("the control's pool is gone"),
                          {"h0": {"error": "lost"}, "h1": {"error": "lost"}},          # every host failing
                          {"h0": {"created": 2.0, "rows": sent("a", 250_000)}}]
    clock = Clock()
    made, connect = controls_answering(answers)

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        source = feed.Feed(state, stop)
        source.counters = feed.HostCounters(state, control_of=connect, clock=clock)
        client = await source.subscribe(0)
        await source.tick()
        assert frames_of(source, client)[0]["rate"] == [None, None]
        await source.tick()                         # broken: no frame, and it is closed (no one else uses it)
        assert frames_of(source, client) == [] and made[0].closed
        for _ in range(19):                         # 9.5 s of ticks: not connected again
            clock.now += 0.5
            await source.tick()
        assert len(made) == 1
        clock.now += 0.5
        await source.tick()                         # connected again; every host failing breaks it again
        assert len(made) == 2 and made[1].closed
        clock.now += 10.0
        await source.tick()
        assert len(made) == 3 and frames_of(source, client)[0]["rate"] == [2000, None]
        assert sum("no counters from the cluster" in r.getMessage() for r in caplog.records) == 1
        await source.close()
    with caplog.at_level("INFO", logger="nestbed.web.hostcounters"):
        asyncio.run(main())


def test_on_real_hosts_a_node_request_under_way_keeps_the_control_the_feed_found_broken(lab, monkeypatch):
    state, _ = lab
    on_real_hosts(state, monkeypatch)
    counters: list[feed.HostCounters] = []

    class Both(Cluster):
        def counter_window(self, node: str, ifaces: list[str], after: float | None, seconds: float) -> dict[str, Any]:
            assert counters[0].latest() == {}       # the feed's tick, meanwhile, finds the control broken
            assert not self.closed                  # ... yet the request under way still has it
            return {"rows": [{"created": 7.0, "node": node, "iface": "eth0", "tx_bytes": 5, "rx_bytes": 0,
                              "rx_packets": 0, "tx_packets": 0}]}
    made: list[Cluster] = []

    def connect(name: str) -> Cluster:
        made.append(Both([OSError("broken")]))
        return made[-1]
    counters.append(feed.HostCounters(state, control_of=connect, clock=Clock()))
    window = counters[0].window("b", "h1", ["eth0"], None, 60.0)
    assert [(t, row.tx_bytes) for t, row in window] == [(7.0, 5)]
    assert len(made) == 1 and made[0].closed        # closed by its last user
    counters[0].close()


def test_on_real_hosts_staleness_is_judged_by_the_controllers_clock_not_the_hosts(lab, monkeypatch):
    state, _ = lab
    on_real_hosts(state, monkeypatch)
    answers: list[Any] = [{"h0": {"created": 1000.0 + k, "rows": sent("a", 125_000 * k)},
                           "h1": {"created": 900.0 + k, "rows": sent("b", 250_000 * k)}}    # 100 s behind
                          for k in range(12)]
    answers += [{"h0": {"created": 1000.0 + k, "rows": sent("a", 125_000 * k)},
                 "h1": {"created": 911.0, "rows": sent("b", 250_000 * 11)}} for k in range(12, 19)]   # h1 stops
    clock = Clock()

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        source = feed.Feed(state, stop)
        source.counters = feed.HostCounters(state, control_of=lambda name: Cluster(answers), clock=clock)
        client = await source.subscribe(0)
        rates = []
        for _ in range(19):
            await source.tick()
            rates.append(frames_of(source, client)[0]["rate"])
            clock.now += 1.0
        assert rates[0] == [None, None]
        assert rates[1:12] == [[1000, 2000]] * 11                  # h1 kept: its samples keep coming
        assert rates[12:17] == [[1000, 2000]] * 5                  # h1 silent for up to 5 s: its last rate
        assert rates[17:] == [[1000, None]] * 2                    # then its link is a gap
        await source.close()
    asyncio.run(main())


def test_a_tick_that_fails_unexpectedly_is_logged_and_the_producer_goes_on(lab, caplog):
    state, store = lab
    sample(store, 100.0, a=0)

    async def main() -> None:
        source = feed.Feed(state, asyncio.Event(), interval=0.01)
        reads = []
        read = source.read

        def failing_once(since_id: int) -> feed.Reading:
            reads.append(since_id)
            if len(reads) == 1:                     # e.g. CounterRow(**row) of an agent of another version
                raise TypeError("CounterRow.__init__() got an unexpected keyword argument 'tx_drops'")
            return read(since_id)
        source.read = failing_once                  # type: ignore[method-assign]
        client = await source.subscribe(0)
        await asyncio.wait_for(client.ready.wait(), WAIT)
        assert frames_of(source, client)[0]["t"] == 100.0 and len(reads) >= 2
        await source.close()
    with caplog.at_level("ERROR", logger="nestbed.web.feed"):
        asyncio.run(main())
    failed = [r for r in caplog.records if r.getMessage() == "web feed: a tick failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None and failed[0].exc_info[0] is TypeError


def test_a_producer_that_ended_is_started_again_by_the_next_stream(lab):
    state, store = lab
    sample(store, 100.0, a=0)

    async def main() -> None:
        source = feed.Feed(state, asyncio.Event(), interval=0.01)

        async def ended() -> None:
            return None
        source._task = asyncio.get_running_loop().create_task(ended())
        await source._task
        client = await source.subscribe(0)
        await asyncio.wait_for(client.ready.wait(), WAIT)
        assert frames_of(source, client)[0]["t"] == 100.0
        await source.close()
    asyncio.run(main())


def test_a_new_page_gets_only_the_newest_events_a_resuming_one_all_it_missed(lab, monkeypatch):
    state, store = lab
    monkeypatch.setattr(feed, "REPLAY_NEW_PAGE", 3)
    ids = [store.add_event("scenario", f"e{k}", None) for k in range(5)]

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()                                  # no producer task: ticks by hand
        source = feed.Feed(state, stop)
        source.last_id = ids[-1]                    # the producer has handed out every event
        new_page = await source.subscribe(0)
        assert [m.split(b"\n")[0] for m in new_page.take()] == [f"id: {i}".encode() for i in ids[-3:]]
        resuming = await source.subscribe(ids[0])    # Last-Event-ID: it saw e0, it missed four
        assert [m.split(b"\n")[0] for m in resuming.take()] == [f"id: {i}".encode() for i in ids[1:]]
        await source.close()
    asyncio.run(main())
