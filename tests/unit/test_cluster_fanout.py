"""cluster/fanout.py: a multi-host experiment's control sends each call to the node's host, splits batches per
host keeping the caller's order, merges records by time, and ends the event stream when one host's ends."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nestbed.cluster.fanout import ClusterControl
from nestbed.errors import ExperimentError
from nestbed.model.loader import load_topology_text
from nestbed.plan import compile_plan

TOPOLOGY = """
name: fan
nodes: {a: {}, b: {}, c: {}}
lans: {lan0: {members: [a, b, c]}}
links: [{name: l1, ends: [a, b]}]
"""


class HostControl:
    def __init__(self, host: str, records: list[dict[str, Any]] | None = None, events: list[Any] | None = None):
        self.host, self.calls = host, []
        self._records, self._events = records or [], events
        self.closed = False

    def run(self, node, argv, timeout=None):
        self.calls.append(("run", node))
        return 0, f"{self.host}:{node}", ""

    def run_many(self, items, timeout=None):
        self.calls.append(("run_many", [n for n, _ in items]))
        return [{"node": n, "rc": 0, "out": f"{self.host}:{n}", "err": ""} for n, _ in items]

    def spawn_many(self, items):
        self.calls.append(("spawn_many", [n for n, _, _ in items]))
        return [f"h-{n}" for n, _, _ in items]

    def stop_many(self, handles):
        self.calls.append(("stop_many", list(handles)))

    def records(self, agent=None):
        return self._records

    def event(self, name, data=None):
        self.calls.append(("event", name))

    def link(self, segment, action, **shaping):
        self.calls.append(("link", segment, action))

    def subscribe(self, since=None) -> Iterator[dict[str, Any]]:
        yield from self._events or []

    def close(self):
        self.closed = True


@pytest.fixture
def cluster():
    whole = compile_plan(load_topology_text(TOPOLOGY, "fan.yaml"))
    hosts = {"h0": HostControl("h0", [{"created": 2.0, "id": 1}], [{"name": "x"}]),
             "h1": HostControl("h1", [{"created": 1.0, "id": 1}, {"created": 3.0, "id": 2}])}
    return ClusterControl("fan", whole, {"a": "h0", "b": "h1", "c": "h0"}, hosts), hosts


def test_a_node_goes_to_its_host_and_batches_keep_the_callers_order(cluster):
    control, hosts = cluster
    assert control.run("b", ["true"]) == (0, "h1:b", "")
    answers = control.run_many([("c", ["x"]), ("b", ["y"]), ("a", ["z"])])
    assert [a["out"] for a in answers] == ["h0:c", "h1:b", "h0:a"]
    assert ("run_many", ["c", "a"]) in hosts["h0"].calls and ("run_many", ["b"]) in hosts["h1"].calls
    handles = control.spawn_many([("b", ["s"], "p"), ("a", ["s"], "p")])
    assert handles == ["h1/h-b", "h0/h-a"]
    control.stop_many(handles)
    assert ("stop_many", ["h-a"]) in hosts["h0"].calls and ("stop_many", ["h-b"]) in hosts["h1"].calls
    with pytest.raises(ExperimentError, match="has no node 'zz'"):
        control.run("zz", ["true"])


def test_records_merge_in_time_order_and_events_go_everywhere(cluster):
    control, hosts = cluster
    assert [(r["host"], r["created"]) for r in control.records()] == [("h1", 1.0), ("h0", 2.0), ("h1", 3.0)]
    control.event("go")
    assert ("event", "go") in hosts["h0"].calls and ("event", "go") in hosts["h1"].calls
    control.link("l1", "down")                          # a on h0, b on h1: both hold a member
    assert ("link", "l1", "down") in hosts["h0"].calls and ("link", "l1", "down") in hosts["h1"].calls
    with pytest.raises(ExperimentError, match="no link or LAN 'nope'"):
        control.link("nope", "up")


def test_the_event_stream_ends_when_one_hosts_ends(cluster):
    control, _ = cluster
    assert list(control.subscribe()) in ([{"name": "x"}], [])   # h1's stream ends at once; h0's may come first
    assert control.nodes() == ["a", "b", "c"] and len(control.subnets()) == 2
    control.close()


class CountingHost(HostControl):
    def __init__(self, host: str, created: float):
        super().__init__(host)
        self.created = created

    def counters(self):
        return {"created": self.created, "rows": [{"node": "x", "iface": "eth0"}]}

    def counter_window(self, node, ifaces, after=None, seconds=300.0):
        self.calls.append(("counter_window", node, ifaces, after, seconds))
        return {"rows": [{"created": self.created, "node": node, "iface": ifaces[0]}]}


def test_counters_are_each_hosts_own_and_a_nodes_window_comes_from_its_host():
    whole = compile_plan(load_topology_text(TOPOLOGY, "fan.yaml"))
    hosts = {"h0": CountingHost("h0", 10.0), "h1": CountingHost("h1", 10.5), "h2": HostControl("h2")}
    control = ClusterControl("fan", whole, {"a": "h0", "b": "h1", "c": "h2"}, hosts)
    assert control.counters() == {"h0": {"created": 10.0, "rows": [{"node": "x", "iface": "eth0"}]},
                                  "h1": {"created": 10.5, "rows": [{"node": "x", "iface": "eth0"}]}}
    assert control.counter_window("b", ["eth0"], 9.0) == {"rows": [{"created": 10.5, "node": "b", "iface": "eth0"}]}
    assert hosts["h1"].calls == [("counter_window", "b", ["eth0"], 9.0, 300.0)] and hosts["h0"].calls == []
    assert control.counter_window("c", ["eth0"]) == {"rows": []}        # a host that cannot say
    with pytest.raises(ExperimentError, match="has no node 'zz'"):
        control.counter_window("zz", ["eth0"])


class UnreachableHost(HostControl):
    def counters(self):
        raise ExperimentError(f"host {self.host}: lost the connection to its agent")


def test_a_host_that_cannot_answer_its_counters_costs_only_its_own_sample():
    whole = compile_plan(load_topology_text(TOPOLOGY, "fan.yaml"))
    hosts = {"h0": CountingHost("h0", 10.0), "h1": UnreachableHost("h1"), "h2": CountingHost("h2", 11.0)}
    control = ClusterControl("fan", whole, {"a": "h0", "b": "h1", "c": "h2"}, hosts)
    assert control.counters() == {"h0": {"created": 10.0, "rows": [{"node": "x", "iface": "eth0"}]},
                                  "h1": {"error": "host h1: lost the connection to its agent"},
                                  "h2": {"created": 11.0, "rows": [{"node": "x", "iface": "eth0"}]}}
    assert control.counters(skip=["h1", "h2"]) == {"h0": {"created": 10.0, "rows": [{"node": "x", "iface": "eth0"}]}}
