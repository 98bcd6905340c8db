"""When a scenario's trigger holds (scenario/triggers.py), without an engine: the trigger cache and its rules."""
from __future__ import annotations

from nestbed.scenario.model import Trigger
from nestbed.scenario.triggers import TriggerCache, has_timeout, next_deadline, truthy


def event(name: str, **options: object) -> Trigger:
    return Trigger("event", "t.aal:1", event=name, **options)  # type: ignore[arg-type]


def test_an_event_holds_when_every_node_of_one_firing_was_true_or_a_node_sent_it():
    cache = TriggerCache()
    assert not cache.holds(event("up"), 0.0, 1.0) and cache.last_fired(event("up")) is None
    cache.fire("up", {"a": True, "b": {"retVal": False}}, False, 1.0)
    assert not cache.holds(event("up"), 0.0, 1.0)
    cache.fire("up", {"a": {"result": 1}, "b": "yes"}, False, 2.0)
    assert cache.holds(event("up"), 0.0, 2.0) and cache.last_fired(event("up")) == 2.0
    cache.fire("go", {"c": False}, True, 3.0)                # sent by a node: holds whatever its data
    assert cache.holds(event("go"), 0.0, 3.0)


def test_count_nodes_and_match_are_over_distinct_nodes_of_every_firing():
    cache = TriggerCache()
    cache.fire("done", {"a": True, "b": False}, False, 1.0)
    cache.fire("done", {"b": True}, False, 2.0)
    assert cache.holds(event("done", count=2), 0.0, 2.0) and not cache.holds(event("done", count=3), 0.0, 2.0)
    assert cache.holds(event("done", nodes=("a", "b")), 0.0, 2.0)
    assert not cache.holds(event("done", nodes=("a", "c")), 0.0, 2.0)
    cache.fire("rate", {"a": {"mbit": 5}}, False, 3.0)
    assert cache.holds(event("rate", match=(("mbit", 5),)), 0.0, 3.0)
    assert not cache.holds(event("rate", match=(("mbit", 6),)), 0.0, 3.0)


def test_timeouts_and_their_deadlines_inside_and_or():
    timeout = Trigger("timeout", "t.aal:2", timeout=500.0)
    either = Trigger("or", "t.aal:3", children=(event("never"), timeout))
    cache = TriggerCache()
    assert not cache.holds(either, 10.0, 10.4) and cache.holds(either, 10.0, 10.5)
    assert not cache.holds(Trigger("and", "t.aal:4", children=(event("never"), timeout)), 10.0, 11.0)
    assert next_deadline([either], 10.0, 10.2) == 10.5 and next_deadline([either], 10.0, 10.6) is None
    assert has_timeout(either) and not has_timeout(event("never"))


def test_truthy_reads_the_result_keys_first():
    assert truthy({"retVal": True, "x": 0}) and not truthy({"value": 0}) and truthy({"other": 0}) and not truthy([])
