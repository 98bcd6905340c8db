"""An experiment's control store: events, agent records and interface counters in one SQLite file.

    store = Store(state.directory / "control.sqlite")
    store.add_event("mailbox", "serverReady", {"node": "b"})
    store.add_record("http_client", host="local", node="a", data={"bytes": 1000, "seconds": 0.01})
    store.add_counters(time.time(), [CounterRow("a", "eth0", rx_bytes=…, …)])

WAL mode: the host agent writes while the CLI (counters, records, plot) reads. Times are Unix seconds (float).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, created REAL NOT NULL, source TEXT NOT NULL, name TEXT NOT NULL, data TEXT);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, created REAL NOT NULL, agent TEXT NOT NULL, host TEXT NOT NULL, node TEXT,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    created REAL NOT NULL, node TEXT NOT NULL, iface TEXT NOT NULL,
    rx_bytes INTEGER, tx_bytes INTEGER, rx_packets INTEGER, tx_packets INTEGER,
    attack_rx_bytes INTEGER DEFAULT 0, attack_tx_bytes INTEGER DEFAULT 0,
    attack_rx_packets INTEGER DEFAULT 0, attack_tx_packets INTEGER DEFAULT 0);
CREATE INDEX IF NOT EXISTS counters_by_time ON counters (created);
CREATE INDEX IF NOT EXISTS counters_by_node ON counters (node, iface, created);
"""


@dataclass(frozen=True)
class CounterRow:
    """Cumulative counters of one interface at one moment (as the kernel reports them)."""
    node: str
    iface: str
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    attack_rx_bytes: int = 0
    attack_tx_bytes: int = 0
    attack_rx_packets: int = 0
    attack_tx_packets: int = 0


COUNTER_FIELDS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "attack_rx_bytes", "attack_tx_bytes",
                  "attack_rx_packets", "attack_tx_packets")


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        if not self.path.exists():       # the file is root's alone; SQLite gives its -wal and -shm its mode
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- writing ------------------------------------------------------------------------------------------
    def add_event(self, source: str, name: str, data: Any = None, created: float | None = None) -> int:
        with self._lock:
            cursor = self._db.execute("INSERT INTO events (created, source, name, data) VALUES (?, ?, ?, ?)",
                                      (created or time.time(), source, name, json.dumps(data)))
            return int(cursor.lastrowid or 0)

    def add_record(self, agent: str, host: str, data: Any, node: str | None = None,
                   created: float | None = None) -> int:
        with self._lock:
            cursor = self._db.execute("INSERT INTO records (created, agent, host, node, data) VALUES (?, ?, ?, ?, ?)",
                                      (created or time.time(), agent, host, node, json.dumps(data)))
            return int(cursor.lastrowid or 0)

    def add_records(self, agent: str, host: str, items: Iterable[tuple[str | None, Any]]) -> int:
        """Many records of one agent, (node, data) each, in one transaction; returns how many."""
        now = time.time()
        values = [(now, agent, host, node, json.dumps(data)) for node, data in items]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO records (created, agent, host, node, data) VALUES (?, ?, ?, ?, ?)",
                                 values)
            self._db.execute("COMMIT")
        return len(values)

    def add_counters(self, created: float, rows: Iterable[CounterRow]) -> None:
        values = [(created, r.node, r.iface) + tuple(getattr(r, f) for f in COUNTER_FIELDS) for r in rows]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT INTO counters (created, node, iface, {', '.join(COUNTER_FIELDS)}) "
                                 f"VALUES (?, ?, ?{', ?' * len(COUNTER_FIELDS)})", values)
            self._db.execute("COMMIT")

    # -- reading ------------------------------------------------------------------------------------------
    def events(self, since_id: int = 0) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, created, source, name, data FROM events WHERE id > ? ORDER BY id",
                                (since_id,)).fetchall()
        return [{"id": i, "created": c, "source": s, "name": n, "data": json.loads(d) if d else None}
                for i, c, s, n, d in rows]

    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT id, created, agent, host, node, data FROM records"
        rows = self._db.execute(query + (" WHERE agent = ? ORDER BY id" if agent else " ORDER BY id"),
                                (agent,) if agent else ()).fetchall()
        return [{"id": i, "created": c, "agent": a, "host": h, "node": n, "data": json.loads(d)}
                for i, c, a, h, n, d in rows]

    def latest_counters(self) -> tuple[float | None, list[CounterRow]]:
        """The newest sample of every interface."""
        row = self._db.execute("SELECT MAX(created) FROM counters").fetchone()
        if not row or row[0] is None:
            return None, []
        rows = self._db.execute(f"SELECT node, iface, {', '.join(COUNTER_FIELDS)} FROM counters WHERE created = ? "
                                f"ORDER BY node, iface", (row[0],)).fetchall()
        return float(row[0]), [CounterRow(*r) for r in rows]

    def counter_series(self, node: str | None = None) -> list[tuple[float, CounterRow]]:
        """Every sample (optionally of one node), oldest first: for plots and rates."""
        query = f"SELECT created, node, iface, {', '.join(COUNTER_FIELDS)} FROM counters"
        args: tuple[Any, ...] = ()
        if node is not None:
            query += " WHERE node = ?"
            args = (node,)
        return [(r[0], CounterRow(*r[1:])) for r in self._db.execute(query + " ORDER BY created", args)]
