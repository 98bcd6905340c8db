"""Parse an AAL file (MAGI's Agent Activation Language, ../shared/reference/aal.md) into a validated Scenario.

Raw located YAML (nestbed.model.loader.parse_yaml) first, then typed items cross-checked against each other:
groups, agents (built-in or importable), methods of built-in agents and their arguments, streams, trigger
shapes, targets. Every mistake is one ScenarioError line: `file:line: stream 'x' item 3: what; hint`.
Nodes are checked against the experiment when the scenario runs (Scenario.resolve_nodes).
"""
from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Any, NoReturn

from nestbed.errors import TopologyError
from nestbed.model.loader import parse_yaml
from nestbed.scenario import agents as agent_registry
from nestbed.scenario.model import EXIT, Agent, EventItem, Item, Scenario, ScenarioError, Stream, Trigger, WaitItem

TOP_KEYS = ("groups", "agents", "streamstarts", "eventstreams")
AGENT_KEYS = ("group", "path", "execargs", "code", "dock", "description")
EVENT_KEYS = ("type", "agent", "method", "args", "trigger", "execargs", "description")
WAIT_KEYS = ("type", "triggers", "description")
COMBINERS = ("AND", "OR")
# Agent names label records, spawned programs and their log files: whole strings (fullmatch), no "x\n"
AGENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _hint(name: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known {what}: {', '.join(known)}" if known else f"there are no {what}"


def _kind_of(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return type(value).__name__


class _Parser:
    def __init__(self, path: str):
        self.path = path
        self.base = Path(path).resolve().parent
        self.methods_of: dict[str, list[str] | None] = {}
        self.classes: dict[str, Any] = {}

    def at(self, line: int) -> str:
        return f"{self.path}:{line}"

    @staticmethod
    def line(mapping: Any, key: str | None = None, default: int = 1) -> int:
        if key is not None and getattr(mapping, "key_lines", None) and key in mapping.key_lines:
            return int(mapping.key_lines[key])
        return int(getattr(mapping, "line", default))

    def fail(self, message: str, line: int, hint: str | None = None) -> NoReturn:
        raise ScenarioError(message, self.at(line), hint)

    def only_keys(self, spec: dict[str, Any], allowed: tuple[str, ...], shown: int, at: int, where: str,
                  within: str = "") -> None:
        """Fail on the first key of spec not in allowed, saying `{where}: unknown key K{within}` (the hint offers
        the first `shown` of them)."""
        for key in spec:
            if key not in allowed:
                self.fail(f"{where}: unknown key {key!r}{within}", self.line(spec, key, at),
                          _hint(key, list(allowed[:shown]), "keys"))

    def defined(self, name: Any, known: Any, message: str, line: int, what: str) -> None:
        """Fail unless name is one of known (names of groups, agents, streams …)."""
        if str(name) not in known:
            self.fail(message, line, _hint(str(name), list(known), what))

    # -- top level ------------------------------------------------------------------------------------------
    def parse(self, raw: Any) -> Scenario:
        if not isinstance(raw, dict):
            self.fail(f"an AAL file is a mapping with {', '.join(TOP_KEYS)}, not {_kind_of(raw)}", self.line(raw))
        for key in raw:
            if key not in TOP_KEYS:
                self.fail(f"unknown top-level key {key!r}", self.line(raw, key), _hint(key, list(TOP_KEYS), "keys"))
        for key in ("groups", "agents", "eventstreams"):
            if key not in raw:
                self.fail(f"the scenario has no {key}", self.line(raw), f"an AAL file has {', '.join(TOP_KEYS)}")
        groups, group_locations = self.groups(raw["groups"], self.line(raw, "groups"))
        agents = self.agents(raw["agents"], self.line(raw, "agents"), groups)
        streams_raw = raw["eventstreams"]
        if not isinstance(streams_raw, dict) or not streams_raw:
            self.fail("eventstreams must be a mapping of stream names to lists of items",
                      self.line(raw, "eventstreams"))
        names = [str(n) for n in streams_raw]
        streams = {str(name): self.stream(str(name), items, self.line(streams_raw, str(name)), agents, names)
                   for name, items in streams_raw.items()}
        starts = self.streamstarts(raw.get("streamstarts"), self.line(raw, "streamstarts"), names)
        scenario = Scenario(self.path, groups, group_locations, agents, starts, streams)
        self.warn_undeclared(scenario)
        return scenario

    def groups(self, raw: Any, line: int) -> tuple[dict[str, list[str]], dict[str, str]]:
        if not isinstance(raw, dict) or not raw:
            self.fail("groups must map group names to lists of nodes", line, "write groups: {clients: [a, b]}")
        groups, locations = {}, {}
        for name, members in raw.items():
            at = self.line(raw, name, line)
            if isinstance(members, str):
                members = [members]
            if not isinstance(members, list) or not members:
                self.fail(f"group {name!r} must be a list of node names, not {_kind_of(members)}", at,
                          f"write {name}: [a, b]")
            for member in members:
                if not isinstance(member, (str, int)) or isinstance(member, bool):
                    self.fail(f"group {name!r}: {member!r} is not a node name", at)
            groups[str(name)] = [str(m) for m in members]
            locations[str(name)] = self.at(at)
        return groups, locations

    def agents(self, raw: Any, line: int, groups: dict[str, list[str]]) -> dict[str, Agent]:
        if not isinstance(raw, dict) or not raw:
            self.fail("agents must map agent names to {group, path, execargs}", line)
        result = {}
        for name, spec in raw.items():
            at = self.line(raw, name, line)
            name = str(name)
            if not AGENT_NAME.fullmatch(name):
                self.fail(f"agent name {name!r} is not valid", at,
                          "use up to 64 letters, digits, '_', '.' and '-', starting with a letter or '_'")
            if not isinstance(spec, dict):
                self.fail(f"agent {name!r} must be a mapping with group and path, not {_kind_of(spec)}", at)
            self.only_keys(spec, AGENT_KEYS, 3, at, f"agent {name!r}")
            group = spec.get("group")
            if group is None:
                self.fail(f"agent {name!r} has no group", at, "add group: NAME (one of groups)")
            self.defined(group, groups, f"agent {name!r}: group {group!r} is not defined",
                         self.line(spec, "group", at), "groups")
            path = spec.get("path", spec.get("code"))
            if not isinstance(path, str) or not path:
                self.fail(f"agent {name!r} has no path", at,
                          f"give path: naming a built-in agent ({', '.join(agent_registry.BUILTIN)}) or your module")
            execargs = spec.get("execargs")
            if execargs in (None, [], ""):
                execargs = {}
            if not isinstance(execargs, dict):
                self.fail(f"agent {name!r}: execargs must be a mapping, not {_kind_of(execargs)}",
                          self.line(spec, "execargs", at), "write execargs: {servers: [b], interval: 1}")
            kind, builtin = self.resolve_path(name, path, self.line(spec, "path" if "path" in spec else "code", at))
            result[name] = Agent(name, str(group), path, kind, builtin, dict(execargs), self.at(at))
        return result

    def resolve_path(self, name: str, path: str, line: int) -> tuple[str, bool]:
        kind = agent_registry.agent_kind(path)
        cls = agent_registry.builtin_of(kind)
        if cls is not None:
            self.methods_of[name] = list(cls.methods)
            self.classes[name] = cls
            return cls.kind, True
        try:
            module = agent_registry.import_user_module(path, kind, self.base)
        except Exception as error:     # the user's module failed while importing: say where
            self.fail(f"agent {name!r}: importing module {kind!r} failed: {type(error).__name__}: {error}", line)
        if module is None:
            self.fail(f"agent {name!r}: path {path!r} names no built-in agent and no importable module {kind!r}",
                      line, _hint(kind, list(agent_registry.BUILTIN), "built-in agents"))
        self.methods_of[name] = agent_registry.user_methods(module)
        cls = getattr(module, "Agent", None)
        if inspect.isclass(cls):
            self.classes[name] = cls
        return kind, False

    def streamstarts(self, raw: Any, line: int, names: list[str]) -> list[str]:
        if raw is None:
            self.fail("the scenario has no streamstarts", 1, f"write streamstarts: [{names[0]}] at the top")
        starts = [raw] if isinstance(raw, str) else raw
        if not isinstance(starts, list) or not starts:
            self.fail("streamstarts must be a list of stream names", line)
        for i, stream in enumerate(starts):
            self.defined(stream, names, f"streamstarts: stream {stream!r} is not defined",
                         getattr(starts, "item_lines", [line] * len(starts))[i], "streams")
        return [str(s) for s in starts]

    # -- streams and items ----------------------------------------------------------------------------------
    def stream(self, name: str, raw: Any, line: int, agents: dict[str, Agent], names: list[str]) -> Stream:
        if not isinstance(raw, list) or not raw:
            self.fail(f"stream {name!r} must be a list of items (type: event | type: trigger)", line)
        lines = getattr(raw, "item_lines", [line] * len(raw))
        items: list[Item] = []
        for index, spec in enumerate(raw, 1):
            where = f"stream {name!r} item {index}"
            at = lines[index - 1]
            if not isinstance(spec, dict):
                self.fail(f"{where}: an item must be a mapping with type: event or type: trigger, not "
                          f"{_kind_of(spec)}", at)
            kind = spec.get("type")
            if kind == "event":
                items.append(self.event(spec, index, where, at, agents))
            elif kind == "trigger":
                items.append(self.wait(spec, index, where, at, names))
            elif kind is None:
                self.fail(f"{where}: no type", at, "write type: event or type: trigger")
            else:
                self.fail(f"{where}: type {kind!r} is not event or trigger", self.line(spec, "type", at),
                          _hint(str(kind), ["event", "trigger"], "types"))
        return Stream(name, tuple(items), self.at(line))

    def event(self, spec: dict[str, Any], index: int, where: str, at: int, agents: dict[str, Agent]) -> EventItem:
        self.only_keys(spec, EVENT_KEYS, 5, at, where, " in an event")
        agent = spec.get("agent")
        if agent is None:
            self.fail(f"{where}: the event names no agent", at, "add agent: NAME")
        self.defined(agent, agents, f"{where}: agent {agent!r} is not defined", self.line(spec, "agent", at),
                     "agents")
        agent = str(agent)
        method = spec.get("method")
        if not isinstance(method, str) or not method:
            self.fail(f"{where}: the event names no method", at, "add method: NAME")
        args = spec.get("args")
        args = {} if args in (None, [], "") else args
        if not isinstance(args, dict):
            self.fail(f"{where}: args must be a mapping, not {_kind_of(args)}", self.line(spec, "args", at))
        known = self.methods_of.get(agent)
        if known is not None and method not in known:
            what = agents[agent].kind
            self.fail(f"{where}: agent {agent!r} ({what}) has no method {method!r}", self.line(spec, "method", at),
                      _hint(method, [m for m in known], "methods"))
        self.check_args(agent, agents[agent], method, args, where, self.line(spec, "args", at))
        trigger = spec.get("trigger")
        if trigger is not None and (not isinstance(trigger, str) or not trigger):
            self.fail(f"{where}: trigger must be a name, not {_kind_of(trigger)}", self.line(spec, "trigger", at))
        return EventItem(index, agent, method, {str(k): v for k, v in args.items()}, trigger, self.at(at))

    def check_args(self, agent: str, spec: Agent, method: str, args: dict[str, Any], where: str, line: int) -> None:
        cls = self.classes.get(agent)
        function = getattr(cls, method, None) if cls is not None else None
        if function is None:
            return
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return
        params = [p for p in signature.parameters.values() if p.name != "self"]
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in args:
            if key not in names:
                takes = f"it takes {', '.join(names)}" if names else "it takes no arguments"
                close = difflib.get_close_matches(str(key), names, n=1)
                self.fail(f"{where}: {spec.kind} method {method} has no argument {key!r}", line,
                          f"did you mean {close[0]!r}?" if close else takes)

    def wait(self, spec: dict[str, Any], index: int, where: str, at: int, names: list[str]) -> WaitItem:
        self.only_keys(spec, WAIT_KEYS, 2, at, where, " in a trigger item")
        raw = spec.get("triggers")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            self.fail(f"{where}: triggers must be a list of {{event: NAME}} / {{timeout: MS}} / {{type: AND|OR, "
                      f"triggers: [...]}}", self.line(spec, "triggers", at))
        lines = getattr(raw, "item_lines", [self.line(spec, "triggers", at)] * len(raw))
        triggers = tuple(self.trigger(t, where, lines[i], names, top=True) for i, t in enumerate(raw))
        return WaitItem(index, triggers, self.at(at))

    def trigger(self, raw: Any, where: str, line: int, names: list[str], top: bool) -> Trigger:
        line = self.line(raw, None, line) if isinstance(raw, dict) else line
        if not isinstance(raw, dict):
            self.fail(f"{where}: a trigger must be a mapping like {{event: NAME}} or {{timeout: MS}}, not "
                      f"{_kind_of(raw)}", line)
        target = raw.get("target")
        if target is not None:
            if not top:
                self.fail(f"{where}: target inside {'AND/OR'} has no effect", self.line(raw, "target", line),
                          "put target: on the entry of the triggers list")
            if str(target) != EXIT and str(target) not in names:
                self.fail(f"{where}: target {target!r} is not a stream or exit", self.line(raw, "target", line),
                          _hint(str(target), names + [EXIT], "targets"))
            target = str(target)
        at = self.at(line)
        combiner = raw.get("type")
        if combiner is not None:
            if str(combiner).upper() not in COMBINERS:
                self.fail(f"{where}: trigger type {combiner!r} is not AND or OR", self.line(raw, "type", line))
            extra = [k for k in raw if k not in ("type", "triggers", "target")]
            if extra:
                self.fail(f"{where}: an {str(combiner).upper()} trigger takes type, triggers and target, not "
                          f"{extra[0]!r}", self.line(raw, extra[0], line))
            children = raw.get("triggers")
            if not isinstance(children, list) or not children:
                self.fail(f"{where}: an {str(combiner).upper()} trigger needs triggers: [ ... ]",
                          self.line(raw, "triggers", line))
            child_lines = getattr(children, "item_lines", [line] * len(children))
            kids = tuple(self.trigger(c, where, child_lines[i], names, top=False) for i, c in enumerate(children))
            return Trigger(str(combiner).lower(), at, children=kids, target=target)
        if "event" in raw and "timeout" in raw:
            self.fail(f"{where}: a trigger waits on an event or a timeout, not both", line,
                      "combine them with {type: AND, triggers: [{event: X}, {timeout: 1000}]}")
        if "timeout" in raw:
            timeout = raw["timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
                self.fail(f"{where}: timeout {timeout!r} is not a number of milliseconds",
                          self.line(raw, "timeout", line), "write e.g. timeout: 5000")
            extra = [k for k in raw if k not in ("timeout", "target")]
            if extra:
                self.fail(f"{where}: a timeout trigger takes timeout and target, not {extra[0]!r}",
                          self.line(raw, extra[0], line))
            return Trigger("timeout", at, timeout=float(timeout), target=target)
        if "event" in raw:
            event = raw["event"]
            if not isinstance(event, str) or not event:
                self.fail(f"{where}: event must be a trigger name, not {_kind_of(event)}",
                          self.line(raw, "event", line))
            count = raw.get("count")
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
                self.fail(f"{where}: count {count!r} must be a positive integer", self.line(raw, "count", line))
            nodes = raw.get("nodes")
            if nodes is not None:
                nodes = [nodes] if isinstance(nodes, str) else nodes
                if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
                    self.fail(f"{where}: nodes must be a list of node names", self.line(raw, "nodes", line))
            match = tuple((str(k), v) for k, v in raw.items() if k not in ("event", "count", "nodes", "target"))
            return Trigger("event", at, event=event, count=count, nodes=tuple(nodes) if nodes else None,
                           match=match, target=target)
        keys = ", ".join(repr(k) for k in raw) or "nothing"
        self.fail(f"{where}: a trigger needs event, timeout or type: AND|OR (it has {keys})", line,
                  "write {event: serverStarted} or {timeout: 5000}")
        raise AssertionError("unreachable")

    def warn_undeclared(self, scenario: Scenario) -> None:
        declared = list(scenario.declared_triggers())
        for stream in scenario.streams.values():
            for item in stream.items:
                if isinstance(item, WaitItem):
                    for trigger in item.triggers:
                        for name in trigger.events():
                            if name not in declared:
                                close = difflib.get_close_matches(name, declared, n=1)
                                hint = f"; did you mean {close[0]!r}?" if close else ""
                                scenario.warnings.append(
                                    f"{item.location}: stream {stream.name!r} item {item.index}: no event of this "
                                    f"scenario fires {name!r}: it must come from a node (nestbed-event {name}){hint}")


def load_scenario_text(text: str, path: str = "<scenario>") -> Scenario:
    try:
        raw = parse_yaml(text, path)
    except TopologyError as error:
        raise ScenarioError(error.message, error.location, error.hint) from None
    return _Parser(path).parse(raw)


def load_scenario(path: str | Path) -> Scenario:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"cannot read scenario file {str(path)!r}: {error}") from None
    return load_scenario_text(text, str(path))
