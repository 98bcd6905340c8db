"""The control store: a failed write fails alone (rolled back, the next writes and readers go on); records carry
the scenario's agent name and its kind, and stores made before the kind column still read."""
from __future__ import annotations

import sqlite3

import pytest

from nestbed.agent.store import CounterRow, Store


def test_a_counter_sqlite_cannot_hold_fails_alone_and_the_store_goes_on(tmp_path):
    writer = Store(tmp_path / "control.sqlite")
    writer.add_counters(1.0, [CounterRow("a", "eth0", 1, 2, 3, 4)])
    with pytest.raises(OverflowError):          # a guest's answer with a counter of 2**70
        writer.add_counters(2.0, [CounterRow("a", "eth0", 5, 6, 7, 8), CounterRow("b", "eth0", 2**70, 0, 0, 0)])
    assert not writer._db.in_transaction
    writer.add_counters(3.0, [CounterRow("a", "eth0", 9, 9, 9, 9)])
    event = writer.add_event("mailbox", "serverReady", {"node": "b"})
    writer.add_records("sh", "local", [("a", {"exit": 0}), ("b", {"exit": 1})], kind="runshell")
    reader = Store(tmp_path / "control.sqlite")          # another process's view: the CLI
    assert [e["id"] for e in reader.events()] == [event]
    assert [t for t, _ in reader.counter_series()] == [1.0, 3.0]     # the failed batch left no half of itself
    assert reader.latest_counters()[0] == 3.0
    assert [r["node"] for r in reader.records("sh")] == ["a", "b"]
    with pytest.raises(OverflowError):
        writer.add_counters(4.0, [CounterRow("c", "eth0", -2**70, 0, 0, 0)])
    writer.add_event("mailbox", "after", None)
    assert [e["name"] for e in reader.events()] == ["serverReady", "after"]


def test_records_carry_the_agent_name_and_its_kind_and_either_finds_them(tmp_path):
    store = Store(tmp_path / "control.sqlite")
    store.add_record("client_agent", "local", {"bytes": 1000}, node="a", kind="http_client")
    store.add_record("nodeStats", "local", {"load1": 0.1}, node="b")
    (by_name,) = store.records("client_agent")
    assert (by_name["agent"], by_name["kind"], by_name["node"]) == ("client_agent", "http_client", "a")
    assert store.records("http_client") == [by_name]
    assert [r["kind"] for r in store.records()] == ["http_client", None]
    assert store.records("nodeStats")[0]["agent"] == "nodeStats"


def old_store(path):
    """A store as nestbed made it before records had a kind."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE events (id INTEGER PRIMARY KEY, created REAL NOT NULL, source TEXT NOT NULL,
                             name TEXT NOT NULL, data TEXT);
        CREATE TABLE records (id INTEGER PRIMARY KEY, created REAL NOT NULL, agent TEXT NOT NULL,
                              host TEXT NOT NULL, node TEXT, data TEXT NOT NULL);
        INSERT INTO records (created, agent, host, node, data) VALUES (1.0, 'http_client', 'local', 'a', '{"b": 1}');
    """)
    db.commit()
    db.close()


def test_a_store_made_before_kinds_is_migrated_and_keeps_its_records(tmp_path):
    old_store(tmp_path / "control.sqlite")
    store = Store(tmp_path / "control.sqlite")
    (old,) = store.records("http_client")
    assert (old["agent"], old["kind"], old["data"]) == ("http_client", None, {"b": 1})
    store.add_record("client_agent", "local", {"b": 2}, kind="http_client")
    assert [r["agent"] for r in store.records("http_client")] == ["http_client", "client_agent"]



def test_counter_window_reads_one_nodes_interfaces_after_a_time_through_the_index(tmp_path):
    store = Store(tmp_path / "control.sqlite")
    for t in (1.0, 2.0, 3.0):
        store.add_counters(t, [CounterRow("a", "eth0", int(t), 0, 0, 0), CounterRow("a", "eth1", 0, 0, 0, 0),
                               CounterRow("a", "ctl0", 0, 0, 0, 0), CounterRow("b", "eth0", 0, 0, 0, 0)])
    window = store.counter_window("a", ["eth0", "eth1"], after=1.0)
    assert [(t, r.node, r.iface) for t, r in window] == [(2.0, "a", "eth0"), (2.0, "a", "eth1"),
                                                         (3.0, "a", "eth0"), (3.0, "a", "eth1")]
    assert [t for t, _ in store.counter_window("a", ["eth0"], seconds=1.5)] == [2.0, 3.0]   # up to the newest
    assert store.counter_window("a", []) == [] and store.counter_window("zz", ["eth0"]) == []
    assert Store(tmp_path / "empty.sqlite").counter_window("a", ["eth0"]) == []
    plan = " ".join(row[3] for row in store._db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM counters WHERE node = ? AND iface IN (?, ?) AND created > ? "
        "ORDER BY created, iface", ("a", "eth0", "eth1", 1.0)))
    assert "counters_by_node (node=? AND iface=? AND created>?)" in plan      # a range per interface, no scan


def test_latest_sent_is_the_newest_samples_tx_and_attack_tx_of_every_interface(tmp_path):
    store = Store(tmp_path / "control.sqlite")
    assert store.latest_sent() == (None, [])
    store.add_counters(1.0, [CounterRow("a", "eth0", 1, 2, 3, 4, 5, 6)])
    store.add_counters(2.0, [CounterRow("b", "eth1", 10, 20, 30, 40, 50, 60, 70, 80),
                             CounterRow("a", "eth0", 11, 21, 31, 41, 51, 61)])
    created, sent = store.latest_sent()
    assert created == 2.0
    assert sorted(sent) == [("a", "eth0", 21, 61), ("b", "eth1", 20, 60)]
    latest = store.latest_counters()
    assert sorted(sent) == [(r.node, r.iface, r.tx_bytes, r.attack_tx_bytes) for r in latest[1]]
