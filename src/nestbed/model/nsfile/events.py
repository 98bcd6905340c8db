"""The event system of an NS file as Emulab read it (/work/ns-research.md §8): `$ns at T "obj cmd args; …"`,
Programs (`new Program $ns`, `$node program-agent`), UDP CBR traffic (Agent/UDP + Application/Traffic/CBR +
attach-agent + connect), `event-sequence` (its lines in order) and `event-timeline` (its times from its start).
The result is plain data — what to do, when, through which of nestbed's scenario agents — that nsfile/aal.py
writes as a MAGI AAL scenario; what those agents cannot do is listed as ignored, once, at its line, and never
makes the topology fail.

Emulab's meanings kept: times are seconds (`1.5`, `.5`) or `XhYmZs`; a CBR starts with packetSize_ 210 and rate_
100Mbps; the last of rate_ / interval_ set decides the packet rate (NS-2's CBR); agents of one node get ports
5001, 5002, … in attach order, and a source sends to its sink's port on the sink's node.
Every event of one moment fires at that time (Emulab's event scheduler): only inside an event-sequence does a
`run` (a Program's, a sequence's) wait for its end before the next line. So each sequence started at top level, and
each top-level Program `run`, plays in its own lane (`Action.lane`), apart from the moment's other events.
A Program's `run` has no time limit unless the Program has `-timeout` (Emulab's meaning).
Link bandwidth/delay/plr events change a segment's shaping as a whole: on a segment whose members have their own
shaping (queue limit_, simplex or per-member LAN settings) `nestbed run` cannot, so they are listed as ignored.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from nestbed.errors import TopologyError
from nestbed.model.nsfile.evaluate import Evaluated, NsEvent, NsObject
from nestbed.model.nsfile.semantics import bandwidth, delay, loss

DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?|\.[0-9]+")
HMS = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
CBR_SIZE, CBR_RATE = 210, 100_000_000          # Emulab's Application/Traffic/CBR defaults
FIRST_PORT = 5001
LINK_AGENT = "ns_links"


@dataclass
class Action:
    """One call of a scenario agent at `time` seconds after the scenario starts."""
    time: float
    agent: str
    method: str
    args: dict[str, Any]
    line: int
    text: str                   # the NS event, for the scenario's description
    restart: bool = False       # a running flooder started again to take new settings
    lane: str = ""              # "": the moment's shared stream; else its own (a sequence, a top-level run)


@dataclass
class AgentSpec:
    name: str
    path: str                   # the built-in agent: runshell, flooder, link_up_down
    node: str
    execargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Events:
    actions: list[Action] = field(default_factory=list)
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Program:
    name: str
    node: str = ""
    command: str = ""
    dir: str = ""
    timeout: str = ""


@dataclass
class _Agent:                   # Agent/UDP, Agent/TCP, Agent/Null, Agent/TCPSink
    name: str
    cls: str
    node: str = ""
    port: int = 0
    peer: str = ""


@dataclass
class _Cbr:
    name: str
    agent: str = ""
    size: int = CBR_SIZE
    rate: int = CBR_RATE        # bit/s
    interval: float | None = None
    running: bool = False

    def pps(self) -> float:
        return round(1 / self.interval if self.interval else self.rate / (8 * self.size), 3)


def seconds(text: str) -> float | None:
    """An `at` time in seconds (None: not one of Emulab's forms)."""
    text = text.strip()
    if DECIMAL.fullmatch(text):
        return float(text)
    match = HMS.fullmatch(text)
    if match and text:
        h, m, s = (int(g or 0) for g in match.groups())
        return h * 3600.0 + m * 60.0 + s
    return None


class _Reader:
    def __init__(self, evaluated: Evaluated, nodes: list[str], segments: list[str],
                 member_shaped: Collection[str] = ()):
        self.evaluated = evaluated
        self.nodes, self.segments, self.member_shaped = nodes, set(segments), set(member_shaped)
        self.lanes: dict[str, int] = {}         # lane name → times used (each use its own lane)
        self.kinds: dict[str, NsObject] = {o.name: o for o in evaluated.objects}
        self.lower = {name.lower(): name for name in self.kinds}
        self.programs: dict[str, _Program] = {}
        self.agents: dict[str, _Agent] = {}
        self.cbrs: dict[str, _Cbr] = {}
        self.out = Events()

    def name(self, word: str) -> str:
        """An object's name as the topology has it (node, link and LAN names are lowercased there)."""
        return word if word in self.kinds else self.lower.get(word.lower(), word)

    def ignore(self, line: int, what: str, why: str) -> None:
        self.out.ignored.append(f"line {line}: {what} ({why})")

    # -- what the file built ---------------------------------------------------------------------------------
    def objects(self) -> None:
        ports: dict[str, int] = {}
        for obj in self.evaluated.objects:
            if obj.kind == "program":
                program = self.programs[obj.name] = _Program(obj.name)
                if obj.args[:1] == ["program-agent"]:
                    program.node = self.name(obj.args[1])
                    options = obj.args[2:]
                    for key, value in zip(options[::2], options[1::2]):
                        self._program_option(program, key.lstrip("-"), value)
            elif obj.kind == "agent":
                self.agents[obj.name] = _Agent(obj.name, obj.args[0] if obj.args else "Agent")
            elif obj.kind == "application" and obj.args[:1] == ["Application/Traffic/CBR"]:
                self.cbrs[obj.name] = _Cbr(obj.name)
            elif obj.kind == "application":
                self.ignore(obj.line, f"new {obj.args[0] if obj.args else obj.kind}",
                            "only CBR traffic is played here")
        for call in self.evaluated.calls:
            target, args = self.name(call.target), [self.name(a) for a in call.args]
            if target in self.programs and call.cmd == "set" and len(args) == 2:
                self._program_option(self.programs[target], args[0], call.args[1])
            elif call.cmd == "attach-agent" and len(args) == 2 and args[1] in self.agents:
                agent = self.agents[args[1]]
                agent.node = args[0]
                ports[agent.node] = agent.port = ports.get(agent.node, FIRST_PORT - 1) + 1
            elif call.cmd == "attach-agent" and target in self.cbrs and args:
                self.cbrs[target].agent = args[0]
            elif call.cmd == "connect" and len(args) == 2 and args[0] in self.agents:
                self.agents[args[0]].peer = args[1]
            elif target in self.cbrs and call.cmd == "set" and len(args) == 2:
                self._cbr_set(self.cbrs[target], args[0], args[1], call.line, initial=True)

    def _program_option(self, program: _Program, key: str, value: str) -> None:
        if key == "node":
            program.node = self.name(value)
        elif key in ("command", "dir", "timeout"):
            setattr(program, key, value)

    def _cbr_set(self, cbr: _Cbr, key: str, value: str, line: int, initial: bool = False) -> dict[str, Any]:
        """A CBR parameter; returns the flooder settings it changes ({} when none)."""
        at = self.evaluated.at(line)
        try:
            if key == "packetSize_":
                cbr.size = int(float(value))
            elif key == "rate_":
                cbr.rate, cbr.interval = bandwidth(value, at), None
            elif key == "interval_":
                cbr.interval = float(value) if value.strip() else None
            else:
                self.ignore(line, f"{cbr.name} set {key}", "not a CBR setting nestbed's flooder has")
                return {}
        except (TopologyError, ValueError):
            self.ignore(line, f"{cbr.name} set {key} {value}", "not a value NS reads")
            return {}
        return {} if initial else {"length": cbr.size, "rate": cbr.pps()}

    # -- the agents ------------------------------------------------------------------------------------------
    def flooder(self, cbr: _Cbr, line: int) -> str | None:
        """The flooder agent of a CBR (None, and ignored, when it cannot be one)."""
        source = self.agents.get(cbr.agent)
        sink = self.agents.get(source.peer) if source else None
        if source is None or sink is None or not source.node or not sink.node:
            self.ignore(line, f"{cbr.name}", "a CBR needs an attached Agent/UDP connected to an attached sink")
            return None
        for agent in (source, sink):
            if agent.node not in self.nodes:
                self.ignore(line, f"{cbr.name}", f"its agent {agent.name} is attached to {agent.node!r}, not a node "
                                                 f"of the file: attach agents to nodes")
                return None
        if source.cls != "Agent/UDP":
            self.ignore(line, f"{cbr.name} over {source.cls}", "nestbed has no rate-limited TCP source")
            return None
        if cbr.name not in self.out.agents:
            self.out.agents[cbr.name] = AgentSpec(cbr.name, "flooder", source.node, {
                "dst": sink.node, "proto": "udp", "length": cbr.size, "rate": cbr.pps(), "dport": sink.port,
                "sport": source.port})
        return cbr.name

    def program_agent(self, program: _Program, line: int) -> str | None:
        if program.node not in self.nodes or not program.command:
            self.ignore(line, f"{program.name}", "a Program needs `set node` (a node) and `set command`")
            return None
        self.out.agents.setdefault(program.name, AgentSpec(program.name, "runshell", program.node))
        return program.name

    def link_agent(self) -> str:
        self.out.agents.setdefault(LINK_AGENT, AgentSpec(LINK_AGENT, "link_up_down", self.nodes[0]))
        return LINK_AGENT

    # -- the events ------------------------------------------------------------------------------------------
    def lane(self, name: str) -> str:
        """A lane of its own, named after what plays in it (a second use of the name gets a number)."""
        name = re.sub(r"[^A-Za-z0-9_]", "_", name)
        self.lanes[name] = used = self.lanes.get(name, 0) + 1
        return name if used == 1 else f"{name}_{used}"

    def timed(self) -> list[tuple[float, NsEvent, str]]:
        """Every event that runs, at its absolute time, in time then file order, with its lane: a sequence
        started at top level plays its lines (nested sequences inline) one after the other in a lane of its own;
        a timeline's events are top-level events at their times."""
        timed: list[tuple[float, int, NsEvent, str]] = []
        by_parent: dict[str, list[NsEvent]] = {}
        for event in self.evaluated.events:
            by_parent.setdefault(event.parent, []).append(event)
        started: set[str] = set()

        def place(at: float, event: NsEvent, lane: str, depth: int = 0) -> None:
            target = self.name(event.words[0]) if event.words else ""
            kind = self.kinds[target].kind if target in self.kinds else ""
            if kind in ("sequence", "timeline") and event.words[1:2] in (["start"], ["run"]) and depth < 8:
                started.add(target)
                inner = (lane or self.lane(target)) if kind == "sequence" else lane
                for child in by_parent.get(target, []):
                    offset = 0.0 if kind == "sequence" else seconds(child.time)
                    if offset is None:
                        self.ignore(child.line, f"at {child.time}", "not a time: seconds or XhYmZs")
                        continue
                    place(at + offset, child, inner, depth + 1)
                return
            timed.append((at, len(timed), event, lane))

        simulator = [o.name for o in self.evaluated.objects if o.kind == "simulator"]
        for event in self.evaluated.events:
            if event.parent not in simulator:
                continue
            at = seconds(event.time)
            if event.time.strip() == "swapout":
                self.ignore(event.line, f"at swapout {' '.join(event.words)}", "nestbed has no swapout")
            elif at is None:
                self.ignore(event.line, f"at {event.time}", "not a time: seconds or XhYmZs (Emulab: Invalid "
                                                            "time spec)")
            else:
                place(at, event, "")
        for parent, children in by_parent.items():
            if parent not in simulator and parent not in started:
                first = children[0]
                self.ignore(first.line, f"{parent} {'at ' + first.time + ' ' if first.time else ''}"
                                        f"\"{' '.join(first.words)}\"",
                            f"{self.kinds[parent].kind if parent in self.kinds else 'its'} {parent} is never "
                            f"started in the file")
        return [(at, event, lane) for at, _, event, lane in sorted(timed, key=lambda t: (t[0], t[1]))]

    def action(self, at: float, event: NsEvent, lane: str = "") -> None:
        words = [self.name(w) for w in event.words]
        text = " ".join(event.words)
        if len(words) < 2:
            self.ignore(event.line, f"at {event.time} {text}", "Emulab: missing event type")
            return
        target, verb, rest = words[0], words[1], words[2:]

        def act(agent: str | None, method: str, restart: bool = False, own_lane: bool = False, **args: Any) -> None:
            if agent is not None:
                where = self.lane(f"{agent}_run") if own_lane and not lane else lane
                self.out.actions.append(Action(at, agent, method, args, event.line, text, restart, where))

        if target in self.programs:
            program = self.programs[target]
            if verb == "set" and len(rest) >= 2 and rest[0] in ("-command", "command", "-dir", "dir"):
                self._program_option(program, rest[0].lstrip("-"), " ".join(event.words[3:]))
            elif verb == "start":
                act(self.program_agent(program, event.line), "startCommand", cmd=self._command(program))
            elif verb == "run":
                # Emulab: no limit unless the Program has -timeout (runshell's timeout 0: no limit). At top level
                # a run waits only in its own lane: the moment's other events fire at their time.
                limit = float(program.timeout) if _number(program.timeout) else 0.0
                act(self.program_agent(program, event.line), "runCommand", own_lane=True, cmd=self._command(program),
                    timeout=limit)
            elif verb == "stop":
                act(self.program_agent(program, event.line), "stopCommand")
            else:
                self.ignore(event.line, f"Program {verb}", "nestbed plays start, run and stop")
        elif target in self.cbrs:
            cbr = self.cbrs[target]
            if verb == "start":
                cbr.running = True
                act(self.flooder(cbr, event.line), "startFlood")
            elif verb == "stop":
                cbr.running = False
                act(self.flooder(cbr, event.line), "stopFlood")
            elif verb == "set" and len(rest) == 2:
                changes = self._cbr_set(cbr, rest[0], event.words[3], event.line)
                agent = self.flooder(cbr, event.line) if changes else None
                act(agent, "setConfiguration", **changes)
                if cbr.running:                 # a running flooder takes new settings when started again
                    act(agent, "startFlood", restart=True)
            else:
                self.ignore(event.line, f"CBR {verb}", "nestbed plays start, stop and set")
        elif target in self.segments:
            self._link(target, verb, rest, event, act)
        elif target in self.kinds:
            kind = self.kinds[target].kind
            self.ignore(event.line, f"{kind} {verb}" if kind != "simulator" else f"$ns {verb}",
                        "an event nestbed's agents do not play")
        else:
            self.ignore(event.line, f"at {event.time} {text}", f"{event.words[0]!r} names no object of the file")

    def _link(self, link: str, verb: str, rest: list[str], event: NsEvent, act: Any) -> None:
        at = self.evaluated.at(event.line)
        try:
            if verb in ("up", "down"):
                act(self.link_agent(), "linkUp" if verb == "up" else "linkDown", link=link)
            elif verb in ("bandwidth", "delay", "plr") and link in self.member_shaped:
                self.ignore(event.line, f"{link} {verb} {' '.join(rest)}".rstrip(),
                            "the segment has per-member shaping: set it in the file")
            elif verb == "bandwidth" and rest:
                act(self.link_agent(), "setLink", link=link, bandwidth=bandwidth(rest[0], at))
            elif verb == "delay" and rest:
                act(self.link_agent(), "setLink", link=link, delay=f"{delay(rest[0], at):.9g}s")
            elif verb == "plr" and rest:
                act(self.link_agent(), "setLink", link=link, loss=loss(rest[0], at))
            else:
                self.ignore(event.line, f"link {verb}", "nestbed plays up, down, bandwidth, delay and plr")
        except TopologyError as error:
            self.ignore(event.line, f"{link} {verb} {' '.join(rest)}", error.message)

    def _command(self, program: _Program) -> str:
        return f"cd {shlex.quote(program.dir)} && {program.command}" if program.dir else program.command


def _number(text: str) -> bool:
    return bool(DECIMAL.fullmatch(text.strip()))


def member_shaped(raw: Mapping[str, Any]) -> set[str]:
    """The segments of an imported topology (semantics.py's raw mapping) where a member has its own egress or
    ingress: `nestbed link set` refuses them (realize/links.py), so their shaping events cannot play."""
    found = set()
    segments = [(str(spec.get("name", "")), spec.get("ends", [])) for spec in raw.get("links", [])]
    segments += [(name, spec.get("members", [])) for name, spec in raw.get("lans", {}).items()]
    for name, members in segments:
        if any(isinstance(m, Mapping) and ("egress" in m or "ingress" in m) for m in members):
            found.add(name)
    return found


def read_events(evaluated: Evaluated, nodes: list[str], segments: list[str],
                member_shaped: Collection[str]) -> Events:
    """The file's events as timed calls of nestbed's scenario agents (nodes, segments: the topology's names;
    member_shaped: the segments whose members have their own shaping, see member_shaped())."""
    reader = _Reader(evaluated, nodes, segments, member_shaped)
    if not evaluated.events:
        return reader.out
    reader.objects()
    for at, event, lane in reader.timed():
        reader.action(at, event, lane)
    actions = reader.out.actions
    reader.out.actions = [a for i, a in enumerate(actions) if not (a.restart and any(   # one restart a moment
        b.restart and b.agent == a.agent and b.time == a.time and b.lane == a.lane for b in actions[i + 1:]))]
    return reader.out
