"""Whether a scenario's triggers hold (the engine asks, scenario/engine.py): the trigger cache and the rules.

- Fired triggers are kept for the whole run (MAGI's trigger cache): a trigger fired earlier holds at once.
- {event: NAME} holds when one event item's firing had a true value from every node of its group, or a node
  sent NAME; with `count: N`, when N distinct nodes returned true; with `nodes: [...]`, when each of them did;
  further keys must equal the keys of the returned mapping (or the value itself for retVal/value/result).
- {timeout: MS} holds MS milliseconds after the wait began; and/or combine their children.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nestbed.scenario.model import Trigger

RESULT_KEYS = ("retVal", "value", "result")


@dataclass
class Fire:
    values: dict[str, Any]        # per node
    external: bool                # sent by a node (an event), not returned by an event item
    at: float                     # loop time


def truthy(value: Any) -> bool:
    """An agent's return as a yes or no: a mapping's retVal/value/result, else the value itself."""
    if isinstance(value, dict):
        for key in RESULT_KEYS:
            if key in value:
                return bool(value[key])
    return bool(value)


def matches(trigger: Trigger, value: Any, external: bool) -> bool:
    if not trigger.match:
        return external or truthy(value)
    for key, wanted in trigger.match:
        if isinstance(value, dict):
            if value.get(key) != wanted:
                return False
        elif key not in RESULT_KEYS or value != wanted:
            return False
    return True


class TriggerCache:
    """Every firing of the run, by trigger name; asked whether a trigger holds now."""

    def __init__(self) -> None:
        self.fired: dict[str, list[Fire]] = {}
        self.last_fire: dict[str, float] = {}

    def fire(self, name: str, values: dict[str, Any], external: bool, now: float) -> None:
        self.fired.setdefault(name, []).append(Fire(values, external, now))
        self.last_fire[name] = now

    def last_fired(self, trigger: Trigger) -> float | None:
        """When the latest of the events the trigger waits on fired; None if none has."""
        fires = [self.last_fire[name] for name in trigger.events() if name in self.last_fire]
        return max(fires) if fires else None

    def holds(self, trigger: Trigger, started: float, now: float) -> bool:
        """Whether the trigger holds at `now` for a wait that began at `started` (loop times)."""
        if trigger.kind == "timeout":
            return (now - started) * 1000.0 >= (trigger.timeout or 0.0) - 0.5
        if trigger.kind == "and":
            return all(self.holds(c, started, now) for c in trigger.children)
        if trigger.kind == "or":
            return any(self.holds(c, started, now) for c in trigger.children)
        fires = self.fired.get(trigger.event or "", [])
        if not fires:
            return False
        if trigger.count is None and trigger.nodes is None:
            return any(all(matches(trigger, v, f.external) for v in f.values.values()) for f in fires)
        good = {node for f in fires for node, v in f.values.items() if matches(trigger, v, f.external)}
        if trigger.nodes is not None and not set(trigger.nodes) <= good:
            return False
        return trigger.count is None or len(good) >= trigger.count


def next_deadline(triggers: Iterable[Trigger], started: float, now: float) -> float | None:
    """The soonest time ahead at which a timeout among these triggers (or their children) expires."""
    deadlines = []
    for trigger in triggers:
        if trigger.kind == "timeout":
            at = started + (trigger.timeout or 0.0) / 1000.0
            if at > now:
                deadlines.append(at)
        elif trigger.children:
            child = next_deadline(trigger.children, started, now)
            if child is not None:
                deadlines.append(child)
    return min(deadlines) if deadlines else None


def has_timeout(trigger: Trigger) -> bool:
    return trigger.kind == "timeout" or any(has_timeout(c) for c in trigger.children)
