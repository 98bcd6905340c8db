"""`GET /api/stream`: the page's one Server-Sent Events stream of counters frames and store events.

One producer task per server (started by the first stream) wakes every `interval` seconds, or at once when the
server's stop event is set (then every stream ends). In the executor it reads each host's newest counters sample
(web/hostcounters.py: one host's store, emulated hosts' stores, real hosts' agents), the events after the last id
it saw in the experiment's own store (the scenario engine writes its events straight into the table, so the
table is tailed by id; on a cluster node events stay in each host's store and are not shown), and which links
are down. Each host's samples go to a RateTracker of its own; their frames are merged (web/mergedrates.py).
Each SSE message is encoded once and handed to every client:

- `event: counters` (web/rates.py's frame) has no `id:` field, so it never moves the browser's Last-Event-ID;
  a client that has not taken the previous frame yet gets the newest instead (a slow client skips frames);
- `event: event` has `id: <events.id>` and is never dropped; a reconnecting browser sends `Last-Event-ID` and
  gets the events after it replayed (a new page gets every event so far, for its log).

A `: ping` comment every `PING_SECONDS` of silence lets the server notice a client that went away.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from nestbed.agent.store import Store
from nestbed.control.traffic import segments_of
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState
from nestbed.web.hostcounters import HostCounters
from nestbed.web.mergedrates import merged
from nestbed.web.planwatch import PlanWatch, links_version
from nestbed.web.rates import Frame, RateTracker

INTERVAL = 0.5                  # s: half the agent's 1 s sampling, so a sample reaches pages ≤ 1.5 s after it is taken
PING_SECONDS = 15.0
REPLAY_NEW_PAGE = 2000        # events replayed to a new page (app.js's log keeps as many)
PING = b": ping\n\n"
# a busy or broken store, a real host not answering: read again later
STORE_ERRORS = (sqlite3.Error, OSError, ValueError, ExperimentError)
log = logging.getLogger(__name__)
HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def counters_message(frame_json: str) -> bytes:
    return f"event: counters\ndata: {frame_json}\n\n".encode()


def event_message(event: dict[str, Any]) -> bytes:
    return f"id: {event['id']}\nevent: event\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


@dataclass(eq=False)
class Client:
    """What one stream has still to write: every event, and only the newest counters frame."""
    events: deque[bytes] = field(default_factory=deque)
    counters: bytes | None = None
    closed: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> list[bytes]:
        messages = list(self.events)
        self.events.clear()
        if self.counters is not None:
            messages.append(self.counters)
            self.counters = None
        self.ready.clear()
        return messages


@dataclass
class Reading:
    frame: str | None                   # a new counters frame's JSON; None: no sample newer than the last one
    events: list[dict[str, Any]]


class Feed:
    def __init__(self, state: ExperimentState, stop: asyncio.Event, interval: float = INTERVAL,
                 ping_seconds: float = PING_SECONDS):
        self.state = state
        self.stop = stop
        self.interval = interval
        self.ping_seconds = ping_seconds
        self.clients: set[Client] = set()
        self.last_id = 0                     # the newest event handed to the clients
        self.frame: bytes | None = None      # the newest counters message: a new page draws it at once
        self.counters = HostCounters(state)  # where each host's samples are (shared with node requests)
        self._trackers: dict[str, RateTracker] = {}     # per host: hosts sample at their own moments
        self._frames: dict[str, Frame] = {}
        self.plans = PlanWatch(state)          # the plan, re-read when modify rewrites it
        self._plan_version = ""                # of the plan the trackers index links by
        self._created: dict[str, float] = {}    # per host, the newest sample made into a frame (read() only)
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    # -- reading (in the executor) -------------------------------------------------------------------------
    def store(self) -> Store | None:
        """The experiment's own store (its events) once its agent has made it (never created here)."""
        return self.counters.local_store()

    def plan(self) -> HostPlan | None:
        """The experiment's plan (None until `up` wrote it), re-read when plan.json changed."""
        return self.plans.current()

    def read(self, since_id: int) -> Reading:
        """The events after `since_id`, and a frame if some host has a newer sample (the frame is built here too:
        ~50 ms at 10,000 links, kept off the event loop)."""
        plan = self.plan()
        if plan is None:
            return Reading(None, [])
        if self.plans.version != self._plan_version:        # another plan: its links, its order
            self._trackers, self._frames, self._created = {}, {}, {}
            self._plan_version = self.plans.version
        store = self.store()
        events = store.events(since_id) if store is not None else []
        fresh = {host: sample for host, sample in self.counters.latest().items()
                 if sample[0] is not None and sample[0] != self._created.get(host)}
        if not fresh:
            return Reading(None, events)
        for host, (created, rows) in fresh.items():
            assert created is not None
            tracker = self._trackers.get(host)
            if tracker is None:
                tracker = self._trackers[host] = RateTracker(segments_of(plan))
            self._frames[host] = tracker.update_sent(created, rows)
            self._created[host] = created
        down = {name for name, (now, _) in linkstate.current(self.state, plan).items() if now == "down"}
        self._seq += 1
        indexes = [i for i, segment in enumerate(plan.segments) if segment.name in down]
        seen = self.counters.seen_at(list(self._frames))      # hosts' clocks need not agree: ours says stale
        frame = replace(merged(list(self._frames.values()), self._seq, indexes, seen), plan=self._plan_version,
                        linkstate=links_version(self.state))
        return Reading(frame.json(), events)

    def replay(self, since_id: int, until_id: int) -> list[dict[str, Any]]:
        """The events a client has not seen: after `since_id` (its Last-Event-ID); a new page (0) gets the newest
        REPLAY_NEW_PAGE only, what its log keeps."""
        store = self.store()
        events = [] if store is None else [e for e in store.events(since_id) if e["id"] <= until_id]
        return events[-REPLAY_NEW_PAGE:] if since_id == 0 else events

    # -- producing -----------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """One read, fanned out to every client."""
        reading = await asyncio.get_running_loop().run_in_executor(None, self.read, self.last_id)
        messages = [event_message(e) for e in reading.events if e["id"] > self.last_id]
        if reading.events:
            self.last_id = max(self.last_id, reading.events[-1]["id"])
        frame = None if reading.frame is None else counters_message(reading.frame)
        if not messages and frame is None:
            return
        for client in self.clients:
            client.events.extend(messages)
            if frame is not None:
                client.counters = frame          # an unsent older frame is replaced: newest wins
            client.ready.set()
        if frame is not None:
            self.frame = frame

    async def produce(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    await self.tick()
                except STORE_ERRORS as error:
                    log.warning("web feed: cannot read the store: %s", error)
                except Exception:               # a bug or an agent of another version: the next tick tries again
                    log.exception("web feed: a tick failed")
                try:
                    await asyncio.wait_for(self.stop.wait(), self.interval)
                except TimeoutError:
                    pass
        finally:
            for client in self.clients:
                client.closed = True
                client.ready.set()

    def start(self) -> None:
        """The producer, started again if it ended (only the stop event should end it, but a dead producer would
        leave every page with pings and no frames)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.produce())

    async def close(self) -> None:
        self.stop.set()
        if self._task is not None:
            await self._task
        await asyncio.get_running_loop().run_in_executor(None, self.counters.close)

    # -- a client ------------------------------------------------------------------------------------------
    async def subscribe(self, since_id: int) -> Client:
        """A new client, with the events after `since_id` up to the producer's own replayed ahead of any live."""
        client = Client(counters=self.frame, closed=self.stop.is_set())
        self.clients.add(client)
        until = self.last_id                     # the producer hands out every event after this one
        self.start()
        try:
            older = await asyncio.get_running_loop().run_in_executor(None, self.replay, since_id, until)
        except BaseException:
            self.clients.discard(client)
            raise
        client.events.extendleft(event_message(e) for e in reversed(older))
        if client.events or client.counters is not None:
            client.ready.set()
        return client

    async def serve(self, request: web.Request, since_id: int) -> web.StreamResponse:
        response = web.StreamResponse(headers=HEADERS)
        await response.prepare(request)
        try:
            client = await self.subscribe(since_id)
        except STORE_ERRORS as error:            # the stream ends; the browser's EventSource comes back later
            log.warning("web feed: cannot replay the events: %s", error)
            return response
        try:
            while not client.closed:
                try:
                    await asyncio.wait_for(client.ready.wait(), self.ping_seconds)
                except TimeoutError:
                    await response.write(PING)
                    continue
                for message in client.take():
                    await response.write(message)
        except ConnectionResetError:            # the page went away
            pass
        finally:
            self.clients.discard(client)
        return response


FEED = web.AppKey("feed", Feed)


def attach(app: web.Application, state: ExperimentState, stop: asyncio.Event) -> None:
    """Give the app its feed (before it starts); the feed's task ends with the app."""
    app[FEED] = Feed(state, stop)

    async def closing(app: web.Application) -> None:
        await app[FEED].close()

    app.on_cleanup.append(closing)


async def stream_route(request: web.Request) -> web.StreamResponse:
    header = request.headers.get("Last-Event-ID", "0").strip() or "0"
    if not (header.isascii() and header.isdigit()):
        return web.Response(status=400, text=f"nestbed web: Last-Event-ID {header[:40]!r} is not an event id\n",
                            content_type="text/plain")
    return await request.app[FEED].serve(request, int(header))
