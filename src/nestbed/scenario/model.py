"""The scenario model: what an AAL file says, validated (see ../shared/reference/aal.md and scenario.aal).

Scenario ── groups (name → node names) · agents (name → Agent) · streamstarts · streams (name → Stream)
Stream  ── items: EventItem (call a method on every node of an agent's group) | WaitItem (a list of Triggers)
Trigger ── kind "event" | "timeout" | "and" | "or", with an optional target (a stream name or "exit")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nestbed.errors import NestbedError

EXIT = "exit"


class ScenarioError(NestbedError):
    """A scenario (AAL file) is wrong, or cannot run on this experiment: one line, `file:line: what; hint`."""

    def __init__(self, message: str, location: str | None = None, hint: str | None = None):
        self.message, self.location, self.hint = message, location, hint
        text = f"{location}: {message}" if location else message
        super().__init__(f"{text}; {hint}" if hint else text)


@dataclass(frozen=True)
class Agent:
    name: str
    group: str
    path: str
    kind: str                 # the built-in agent's name, or the user's module name
    builtin: bool
    execargs: dict[str, Any]
    location: str


@dataclass(frozen=True)
class Trigger:
    kind: str                                   # event | timeout | and | or
    location: str
    event: str | None = None                    # kind event: the trigger's name
    timeout: float | None = None                # kind timeout: milliseconds
    count: int | None = None                    # kind event: this many distinct nodes
    nodes: tuple[str, ...] | None = None        # kind event: exactly these nodes
    match: tuple[tuple[str, Any], ...] = ()     # kind event: keys the returned value must have
    children: tuple[Trigger, ...] = ()          # kind and / or
    target: str | None = None                   # a stream, "exit", or None: go on with the next item

    def describe(self) -> str:
        if self.kind == "timeout":
            text = f"timeout {self.timeout:g} ms"
        elif self.kind == "event":
            extra = [f"count {self.count}"] if self.count else []
            extra += [f"nodes {','.join(self.nodes)}"] if self.nodes else []
            extra += [f"{k}={v!r}" for k, v in self.match]
            text = f"event {self.event}" + (f" ({', '.join(extra)})" if extra else "")
        else:
            text = f" {self.kind.upper()} ".join(f"({c.describe()})" for c in self.children)
        return f"{text} → {self.target}" if self.target else text

    def events(self) -> list[str]:
        if self.kind == "event":
            return [self.event or ""]
        return [name for child in self.children for name in child.events()]


@dataclass(frozen=True)
class EventItem:
    index: int                 # 1-based, as errors and progress name it
    agent: str
    method: str
    args: dict[str, Any]
    trigger: str | None
    location: str

    def describe(self) -> str:
        return f"{self.agent}.{self.method}" + (f" → {self.trigger}" if self.trigger else "")


@dataclass(frozen=True)
class WaitItem:
    index: int
    triggers: tuple[Trigger, ...]
    location: str

    def describe(self) -> str:
        return " | ".join(t.describe() for t in self.triggers)


Item = EventItem | WaitItem


@dataclass(frozen=True)
class Stream:
    name: str
    items: tuple[Item, ...]
    location: str


@dataclass
class Scenario:
    path: str
    groups: dict[str, list[str]]
    group_locations: dict[str, str]
    agents: dict[str, Agent]
    streamstarts: list[str]
    streams: dict[str, Stream]
    warnings: list[str] = field(default_factory=list)

    def nodes_of(self, agent: str) -> list[str]:
        return self.groups[self.agents[agent].group]

    def declared_triggers(self) -> dict[str, list[str]]:
        """Trigger name → the nodes whose event items fire it."""
        found: dict[str, list[str]] = {}
        for stream in self.streams.values():
            for item in stream.items:
                if isinstance(item, EventItem) and item.trigger:
                    found.setdefault(item.trigger, []).extend(self.nodes_of(item.agent))
        return found

    def resolve_nodes(self, experiment_nodes: list[str]) -> None:
        """Check every group against the experiment's nodes (a name given with count: N stands for name-0 …
        name-(N-1)); expands such names in place. Raises ScenarioError naming the group's line."""
        import difflib
        known = set(experiment_nodes)
        for group, members in self.groups.items():
            expanded: list[str] = []
            for node in members:
                if node in known:
                    expanded.append(node)
                    continue
                family = sorted((n for n in experiment_nodes if n.startswith(node + "-")
                                 and n[len(node) + 1:].isdigit()), key=lambda n: int(n.rsplit("-", 1)[1]))
                if not family:
                    close = difflib.get_close_matches(node, experiment_nodes, n=1)
                    hint = f"did you mean {close[0]!r}?" if close else \
                        f"its nodes: {', '.join(experiment_nodes[:12])}{' …' if len(experiment_nodes) > 12 else ''}"
                    raise ScenarioError(f"group {group!r}: node {node!r} is not in the experiment",
                                        self.group_locations[group], hint)
                expanded.extend(family)
            self.groups[group] = list(dict.fromkeys(expanded))
