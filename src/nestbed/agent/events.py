"""The experiment's store as the host agent serves it: records, events (stored, and to every subscriber as they
come) and the latest counters. Mailbox lines of process nodes and of nodes in VMs arrive through `deliver`.

    record {agent, kind?, node?, data}               → {"id"} (host = this host's name; agent: the scenario's
                                                       name, kind: its module, e.g. client_agent, http_client)
    record_many {agent, kind?, items: [{node, data}]} → {"count"} (one store transaction)
    event {name, data?, source?}              → {"id"}
    subscribe {since?}                        → {"ok"}, then {"event": {id, created, source, name, data}} lines until
                                                the client closes (events after id `since` from the store first)
    counters                                  → {"created", "rows": [{node, iface, rx_bytes, …}]}
    counter_window {node, ifaces, after?, seconds?} → {"rows": [{created, node, iface, rx_bytes, …}]}: one node's
                                                samples after `after` (or the last `seconds`), oldest first; the
                                                web view's node panel, without copying the whole store
"""
from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any

from nestbed.agent.server import Handler, Request
from nestbed.channel import Connection

SUBSCRIBER_CHECK_SECONDS = 5.0      # how often a quiet subscription looks whether its client went away


class Events:
    def __init__(self, store: Any, host: str):
        self.store = store          # nestbed.agent.store.Store
        self.host = host
        self.subscribers: list[queue.SimpleQueue[dict[str, Any]]] = []
        self.lock = threading.Lock()

    def handlers(self) -> dict[str, Handler]:
        return {"record": self._record, "record_many": self._record_many, "event": self._event,
                "subscribe": self._subscribe, "counters": self._counters,
                "counter_window": self._counter_window}

    def publish(self, source: str, name: str, data: Any) -> int:
        created = time.time()
        event_id = self.store.add_event(source, name, data, created=created)
        message = {"event": {"id": event_id, "created": created, "source": source, "name": name, "data": data}}
        with self.lock:
            for subscriber in self.subscribers:
                subscriber.put(message)
        return event_id

    def deliver(self, node: str, kind: str, name: str, data: Any, record_kind: str | None = None) -> None:
        """A mailbox line (host mailboxes, or forwarded by a guest agent)."""
        if kind == "event":
            self.publish(node, name, data)
        else:
            self.store.add_record(name, host=self.host, data=data, node=node, kind=record_kind)

    # -- ops ------------------------------------------------------------------------------------------------
    def _record(self, conn: Connection, request: Request) -> dict[str, Any]:
        return {"id": self.store.add_record(str(request["agent"]), host=self.host, data=request.get("data"),
                                            node=request.get("node"), kind=_kind(request))}

    def _record_many(self, conn: Connection, request: Request) -> dict[str, Any]:
        items = [(item.get("node"), item.get("data")) for item in request.get("items") or []]
        return {"count": self.store.add_records(str(request["agent"]), self.host, items, kind=_kind(request))}

    def _event(self, conn: Connection, request: Request) -> dict[str, Any]:
        return {"id": self.publish(str(request.get("source") or "controller"), str(request["name"]),
                                   request.get("data"))}

    def _counters(self, conn: Connection, request: Request) -> dict[str, Any]:
        from dataclasses import asdict
        created, rows = self.store.latest_counters()
        return {"created": created, "rows": [asdict(r) for r in rows]}

    def _counter_window(self, conn: Connection, request: Request) -> dict[str, Any]:
        from dataclasses import asdict
        after = request.get("after")
        samples = self.store.counter_window(str(request["node"]), [str(i) for i in request.get("ifaces") or []],
                                            None if after is None else float(after),
                                            float(request.get("seconds") or 300.0))
        return {"rows": [{"created": created, **asdict(row)} for created, row in samples]}

    def _subscribe(self, conn: Connection, request: Request) -> None:
        since = request.get("since")
        after = int(since) if since is not None else None       # a bad `since` fails before subscribing
        mine: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        with self.lock:
            self.subscribers.append(mine)
            backlog = self.store.events(after) if after is not None else []
        try:
            conn.send({"ok": True})
            last = 0
            for event in backlog:
                conn.send({"event": event})
                last = event["id"]
            # notice a client that went away while no events come
            conn.sock.setblocking(True)
            while True:
                try:
                    message = mine.get(timeout=SUBSCRIBER_CHECK_SECONDS)
                except queue.Empty:
                    if _peer_closed(conn.sock):
                        return
                    continue
                if message["event"]["id"] <= last:
                    continue
                conn.send(message)
        finally:
            with self.lock:
                self.subscribers.remove(mine)


def _kind(request: Request) -> str | None:
    kind = request.get("kind")
    return None if kind is None else str(kind)


def _peer_closed(sock: socket.socket) -> bool:
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return data == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
