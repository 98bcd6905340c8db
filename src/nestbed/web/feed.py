"""`GET /api/stream`: the page's one Server-Sent Events stream of counters frames and store events.

One producer task per server (started by the first stream) wakes every `interval` seconds, or at once when the
server's stop event is set (then every stream ends). In the executor it reads the store's newest counters sample,
the events after the last id it saw (the scenario engine writes its events straight into the table, so the
table is tailed by id), and which links are down. Each SSE message is encoded once and handed to every client:

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
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nestbed import paths
from nestbed.agent.store import Store
from nestbed.control.traffic import segments_of
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState
from nestbed.web.rates import RateTracker

INTERVAL = 1.0                  # s: the agent samples counters once a second
PING_SECONDS = 15.0
PING = b": ping\n\n"
SQLITE_HEADER = b"SQLite format 3\x00"
STORE_ERRORS = (sqlite3.Error, OSError, ValueError)    # a busy or broken store: read it again later
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
        self._store: Store | None = None
        self._opening = threading.Lock()
        self._tracker: RateTracker | None = None
        self._plan: Any = None
        self._created: float | None = None   # the newest counters sample made into a frame (read() only)
        self._task: asyncio.Task[None] | None = None

    # -- reading (in the executor) -------------------------------------------------------------------------
    def store(self) -> Store | None:
        """The experiment's store once its agent has made it (never created here). A file that is not SQLite is
        refused before it is opened: a connection whose setup failed would linger and hold its lock."""
        with self._opening:                       # the producer and a replay may both get here first
            if self._store is None:
                path = paths.store(self.state.directory)
                try:
                    with path.open("rb") as file:
                        header = file.read(len(SQLITE_HEADER))
                except FileNotFoundError:
                    return None
                if len(header) < len(SQLITE_HEADER):
                    return None                   # the agent is making it
                if header != SQLITE_HEADER:
                    raise ValueError(f"{path} is not an SQLite file")
                self._store = Store(path)
            return self._store

    def read(self, since_id: int) -> Reading:
        """The events after `since_id`, and a frame if the store has a newer sample (the frame is built here too:
        ~50 ms at 10,000 links, kept off the event loop)."""
        if self._plan is None:
            self._plan = self.state.load_plan()
        store = self.store()
        if store is None or self._plan is None:
            return Reading(None, [])
        events = store.events(since_id)
        created, rows = store.latest_counters()
        if created is None or created == self._created:
            return Reading(None, events)
        if self._tracker is None:
            self._tracker = RateTracker(segments_of(self._plan))
        self._created = created
        down = [name for name, (now, _) in linkstate.current(self.state, self._plan).items() if now == "down"]
        return Reading(self._tracker.update(created, rows, down).json(), events)

    def replay(self, since_id: int, until_id: int) -> list[dict[str, Any]]:
        store = self.store()
        return [] if store is None else [e for e in store.events(since_id) if e["id"] <= until_id]

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
                try:
                    await asyncio.wait_for(self.stop.wait(), self.interval)
                except TimeoutError:
                    pass
        finally:
            for client in self.clients:
                client.closed = True
                client.ready.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.produce())

    async def close(self) -> None:
        self.stop.set()
        if self._task is not None:
            await self._task
        if self._store is not None:
            self._store.close()

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
