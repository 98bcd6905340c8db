"""An experiment's control store: events, agent records and interface counters in one SQLite file.

    store = Store(state.directory / "control.sqlite")
    store.add_event("mailbox", "serverReady", {"node": "b"})
    store.add_record("http_client", host="local", node="a", data={"bytes": 1000, "seconds": 0.01})
    store.add_counters(time.time(), [CounterRow("a", "eth0", rx_bytes=…, …)])

WAL mode: the host agent writes while the CLI (counters, records, plot) reads. Times are Unix seconds (float).
A write that fails (a counter of 2**70 overflows SQLite's integers) is rolled back and raised: it fails alone,
and the next writes go on (the caller reports it: the server's error reply, the sampler's log).

A record names its agent twice, as MAGI does: `agent` is the scenario's name for it (the AAL's `client_agent`),
`kind` the module it runs (`http_client`); either finds it. Records of stores made before `kind` have none.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
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
MIGRATIONS = (("records", "kind", "ALTER TABLE records ADD COLUMN kind TEXT"),)     # stores made before them


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


Sent = tuple[str, str, int, int]        # (node, iface, tx_bytes, attack_tx_bytes) of one interface at one moment
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
        for table, column, statement in MIGRATIONS:
            if column not in self._columns(table):
                try:
                    self._db.execute(statement)
                except sqlite3.OperationalError:        # a read-only store: read it as it is
                    pass
        self._kind = "kind" if "kind" in self._columns("records") else "NULL"

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self._db.close()

    # -- writing ------------------------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed, or rolled back when anything in it fails (then raised),
        so a failed write never leaves a transaction open that swallows the next ones."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add_event(self, source: str, name: str, data: Any = None, created: float | None = None) -> int:
        row = (created or time.time(), source, name, json.dumps(data))
        with self._writing() as db:
            cursor = db.execute("INSERT INTO events (created, source, name, data) VALUES (?, ?, ?, ?)", row)
            return int(cursor.lastrowid or 0)

    def add_record(self, agent: str, host: str, data: Any, node: str | None = None,
                   created: float | None = None, kind: str | None = None) -> int:
        row = (created or time.time(), agent, kind, host, node, json.dumps(data))
        with self._writing() as db:
            cursor = db.execute("INSERT INTO records (created, agent, kind, host, node, data) "
                                "VALUES (?, ?, ?, ?, ?, ?)", row)
            return int(cursor.lastrowid or 0)

    def add_records(self, agent: str, host: str, items: Iterable[tuple[str | None, Any]],
                    kind: str | None = None) -> int:
        """Many records of one agent, (node, data) each, in one transaction; returns how many."""
        now = time.time()
        values = [(now, agent, kind, host, node, json.dumps(data)) for node, data in items]
        with self._writing() as db:
            db.executemany("INSERT INTO records (created, agent, kind, host, node, data) VALUES (?, ?, ?, ?, ?, ?)",
                           values)
        return len(values)

    def add_counters(self, created: float, rows: Iterable[CounterRow]) -> None:
        values = [(created, r.node, r.iface) + tuple(getattr(r, f) for f in COUNTER_FIELDS) for r in rows]
        with self._writing() as db:
            db.executemany(f"INSERT INTO counters (created, node, iface, {', '.join(COUNTER_FIELDS)}) "
                           f"VALUES (?, ?, ?{', ?' * len(COUNTER_FIELDS)})", values)

    # -- reading ------------------------------------------------------------------------------------------
    def events(self, since_id: int = 0) -> list[dict[str, Any]]:
        rows = self._read("SELECT id, created, source, name, data FROM events WHERE id > ? ORDER BY id", (since_id,))
        return [{"id": i, "created": c, "source": s, "name": n, "data": json.loads(d) if d else None}
                for i, c, s, n, d in rows]

    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        """Every record, or those whose agent or kind is `agent`."""
        query = f"SELECT id, created, agent, {self._kind}, host, node, data FROM records"
        query += f" WHERE agent = ? OR {self._kind} = ? ORDER BY id" if agent else " ORDER BY id"
        rows = self._read(query, (agent, agent) if agent else ())
        return [{"id": i, "created": c, "agent": a, "kind": k, "host": h, "node": n, "data": json.loads(d)}
                for i, c, a, k, h, n, d in rows]

    def latest_counters(self) -> tuple[float | None, list[CounterRow]]:
        """The newest sample of every interface."""
        newest = self._read("SELECT MAX(created) FROM counters")
        if not newest or newest[0][0] is None:
            return None, []
        rows = self._read(f"SELECT node, iface, {', '.join(COUNTER_FIELDS)} FROM counters WHERE created = ? "
                          f"ORDER BY node, iface", (newest[0][0],))
        return float(newest[0][0]), [CounterRow(*r) for r in rows]

    def latest_sent(self) -> tuple[float | None, list[Sent]]:
        """The newest sample as (node, iface, tx_bytes, attack_tx_bytes), unordered: what live rates need, at a
        third of latest_counters' cost (no row objects, no sort; 20,000 interfaces in ~20 ms)."""
        newest = self._read("SELECT MAX(created) FROM counters")
        if not newest or newest[0][0] is None:
            return None, []
        rows = self._read("SELECT node, iface, tx_bytes, attack_tx_bytes FROM counters WHERE created = ?",
                          (newest[0][0],))
        return float(newest[0][0]), rows

    def counter_series(self, node: str | None = None) -> list[tuple[float, CounterRow]]:
        """Every sample (optionally of one node), oldest first: for plots and rates."""
        query = f"SELECT created, node, iface, {', '.join(COUNTER_FIELDS)} FROM counters"
        args: tuple[Any, ...] = ()
        if node is not None:
            query += " WHERE node = ?"
            args = (node,)
        return [(r[0], CounterRow(*r[1:])) for r in self._read(query + " ORDER BY created", args)]

    def counter_window(self, node: str, ifaces: Sequence[str], after: float | None = None,
                       seconds: float = 300.0) -> list[tuple[float, CounterRow]]:
        """Samples of some interfaces of one node, oldest first: those taken after `after`, or without it the last
        `seconds` up to the store's newest sample (the web view's node panel, polled every second). One index
        range per interface (node, iface, created): fast however long the store and however many interfaces."""
        if not ifaces:
            return []
        if after is None:
            newest = self._read("SELECT MAX(created) FROM counters")
            if not newest or newest[0][0] is None:
                return []
            after = float(newest[0][0]) - seconds
        marks = ", ".join("?" * len(ifaces))
        rows = self._read(f"SELECT created, node, iface, {', '.join(COUNTER_FIELDS)} FROM counters "
                          f"WHERE node = ? AND iface IN ({marks}) AND created > ? ORDER BY created, iface",
                          (node, *ifaces, after))
        return [(r[0], CounterRow(*r[1:])) for r in rows]

    def _read(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:            # the connection is shared by the agent's threads: one statement at a time
            return self._db.execute(query, args).fetchall()
