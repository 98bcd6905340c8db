"""Per-member LAN settings and simplex settings of an NS file (Emulab's tb_compat.tcl, /work/ns-research.md §4).

Emulab gives every member of a link or LAN a delay/rdelay, bandwidth/rbandwidth and loss/rloss: `delay` from the
member to the switch, `rdelay` back, so X→Y crosses X.delay + Y.rdelay (losses compose, bandwidth the minimum).
The LAN's own delay D is D/2 each way on every member, its loss L is 1−√(1−L) on each; the setters here overwrite
members' values, in file order, and the last command wins (a later tb-set-lan-loss overwrites every member again):

    tb-set-node-lan-delay node lan d        delay = rdelay = d (not halved)
    tb-set-node-lan-bandwidth node lan bw   bandwidth = rbandwidth = bw
    tb-set-node-lan-loss node lan L         loss = rloss = L (raw)
    tb-set-node-lan-params node lan d bw L  the three
    tb-set-lan-simplex-params lan node todelay tobw toloss fromdelay frombw fromloss     raw, each way
    tb-set-link-simplex-params link src d bw L    src→dst is d, bw, L end to end; the other way keeps its own

A LAN with any of them becomes Emulab's model exactly: no LAN-wide shaping, every member its own `egress`
(delay, bandwidth, loss) and `ingress` (rdelay, rbandwidth, rloss). A link with simplex settings: each end's
`egress` is its direction's full values (its delay plus the other end's rdelay, …). Everything else keeps the
segment-wide shaping semantics.py gives it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nestbed.errors import TopologyError
from nestbed.model.located import Located, LocatedList

COMMANDS = ("tb-set-node-lan-delay", "tb-set-node-lan-bandwidth", "tb-set-node-lan-loss", "tb-set-node-lan-params",
            "tb-set-lan-simplex-params", "tb-set-link-simplex-params")
ARGUMENTS = {"tb-set-node-lan-delay": "node lan delay", "tb-set-node-lan-bandwidth": "node lan bandwidth",
             "tb-set-node-lan-loss": "node lan loss", "tb-set-node-lan-params": "node lan delay bandwidth loss",
             "tb-set-lan-simplex-params": "lan node todelay tobw toloss fromdelay frombw fromloss",
             "tb-set-link-simplex-params": "link src delay bandwidth loss"}


@dataclass
class _Member:
    """One member's Emulab values: delay/rdelay in s, bandwidth/rbandwidth in bit/s, loss/rloss as rates."""
    delay: float
    rdelay: float
    bandwidth: int
    rbandwidth: int
    loss: float = 0.0
    rloss: float = 0.0


@dataclass
class Members:
    """What the file said of segments' members, in order, for the segments that have per-member settings."""
    events: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)     # segment → its setters
    lines: dict[str, int] = field(default_factory=dict)                           # segment → first such line

    def segment_loss(self, segment: str, value: float) -> None:
        """tb-set-link-loss / tb-set-lan-loss: every member's loss and rloss, after whatever came before."""
        self.events.setdefault(segment, []).append(("all-loss", value))


def handles(cmd: str) -> bool:
    return cmd in COMMANDS


Parse = Callable[[str, str], Any]


def record(members: Members, cmd: str, args: list[str], line: int, kinds: dict[str, tuple[str, list[str]]],
           at: str, parsers: dict[str, Parse]) -> None:
    """One setter. kinds: segment → (link | lan, its members); parsers: NS's delay, bandwidth and loss (text,
    where) → value, semantics.py's. Bad use: one line, as Emulab's perror."""
    delay, bandwidth, loss = parsers["delay"], parsers["bandwidth"], parsers["loss"]
    want = len(ARGUMENTS[cmd].split())
    if len(args) != want:
        raise TopologyError(f"{cmd} takes {want} arguments ({ARGUMENTS[cmd]}), not {len(args)}", at)
    if cmd == "tb-set-link-simplex-params":
        link, src = args[0], args[1]
        if kinds.get(link, ("", []))[0] != "link":
            raise TopologyError(f"[{cmd}] {link} is not a link.", at)
        if src not in kinds[link][1]:
            raise TopologyError(f"[{cmd}] {src} is not a node of link {link}.", at)
        value: Any = (src, delay(args[2], at), bandwidth(args[3], at), loss(args[4], at))
        segment = link
    else:
        lan, node = (args[0], args[1]) if cmd == "tb-set-lan-simplex-params" else (args[1], args[0])
        if kinds.get(lan, ("", []))[0] != "lan":
            raise TopologyError(f"[{cmd}] {lan} is not a lan.", at)
        if node not in kinds[lan][1]:
            raise TopologyError(f"[{cmd}] {node} is not a member of {lan}.", at)
        rest = args[2:]
        if cmd == "tb-set-lan-simplex-params":
            value = (node, delay(rest[0], at), bandwidth(rest[1], at), loss(rest[2], at),
                     delay(rest[3], at), bandwidth(rest[4], at), loss(rest[5], at))
        else:
            keys = ARGUMENTS[cmd].split()[2:]
            value = (node, {key: parsers[key](text, at) for key, text in zip(keys, rest)})
        segment = lan
    members.events.setdefault(segment, []).append((cmd, value))
    members.lines.setdefault(segment, line)


def convert(members: Members, specs: dict[str, Located]) -> None:
    """Rewrite each segment with per-member settings (its located raw mapping, as the YAML loader reads it)."""
    for segment, events in members.events.items():
        if segment not in members.lines:        # only LAN-wide loss: the segment's own shaping says it
            continue
        spec = specs[segment]
        key = "ends" if "ends" in spec else "members"
        names = [m["node"] if isinstance(m, dict) else m for m in spec[key]]
        values = _replayed(spec, names, events)
        line = members.lines[segment]
        for wide in ("bandwidth", "delay", "loss"):
            spec.pop(wide, None)
            spec.key_lines.pop(wide, None)
        own: dict[str, tuple[Located | None, Located | None]]
        if key == "ends":
            a, b = names
            own = {a: (_toward(values[a], values[b], line), None), b: (_toward(values[b], values[a], line), None)}
        else:
            own = {n: (_shaping(line, values[n].delay, values[n].bandwidth, values[n].loss),
                       _shaping(line, values[n].rdelay, values[n].rbandwidth, values[n].rloss)) for n in names}
        rewritten = LocatedList()
        for member, name in zip(spec[key], names):
            entry = dict(member) if isinstance(member, dict) else {"node": name}
            egress, ingress = own[name]
            if egress:
                entry["egress"] = egress
            if ingress:
                entry["ingress"] = ingress
            rewritten.append(_located(line, **entry) if len(entry) > 1 else name)
        rewritten.line, rewritten.item_lines = spec[key].line, list(spec[key].item_lines)
        spec[key] = rewritten


def _replayed(spec: Located, names: list[str], events: list[tuple[str, Any]]) -> dict[str, _Member]:
    """Every member's values after the file's setters, in order, from the segment's own (D/2 each way, bw)."""
    from nestbed.model import units
    half = units.parse_time(spec["delay"]) / 2 if spec.get("delay") else 0.0
    rate = int(spec.get("bandwidth") or 0)
    values = {n: _Member(half, half, rate, rate) for n in names}
    for cmd, value in events:
        if cmd == "all-loss":
            each = _each_way(float(value))
            for member in values.values():
                member.loss = member.rloss = each
        elif cmd == "tb-set-link-simplex-params":
            src, d, bw, lost = value
            other = values[next(n for n in names if n != src)]
            values[src].delay = other.rdelay = d / 2
            values[src].bandwidth = other.rbandwidth = bw
            values[src].loss = other.rloss = _each_way(lost)
        elif cmd == "tb-set-lan-simplex-params":
            node, to_d, to_bw, to_loss, from_d, from_bw, from_loss = value
            m = values[node]
            m.delay, m.bandwidth, m.loss, m.rdelay, m.rbandwidth, m.rloss = \
                to_d, to_bw, to_loss, from_d, from_bw, from_loss
        else:
            node, settings = value
            m = values[node]
            if "delay" in settings:
                m.delay = m.rdelay = settings["delay"]
            if "bandwidth" in settings:
                m.bandwidth = m.rbandwidth = settings["bandwidth"]
            if "loss" in settings:
                m.loss = m.rloss = settings["loss"]
    return values


def _each_way(end_to_end: float) -> float:
    """Emulab's share of a segment-wide loss on each member's side: two of them make `end_to_end`."""
    return float(1.0 - (1.0 - end_to_end) ** 0.5)


def _toward(sender: _Member, receiver: _Member, line: int) -> Located | None:
    """A link's direction in full: the sender's side and the receiver's, composed."""
    bandwidth = min(b for b in (sender.bandwidth, receiver.rbandwidth) if b) if sender.bandwidth or \
        receiver.rbandwidth else 0
    lost = 1.0 - (1.0 - sender.loss) * (1.0 - receiver.rloss)
    return _shaping(line, sender.delay + receiver.rdelay, bandwidth, lost)


def _shaping(line: int, delay: float, bandwidth: int, lost: float) -> Located | None:
    values: dict[str, object] = {}
    if bandwidth:
        values["bandwidth"] = bandwidth
    if delay:
        values["delay"] = f"{delay:.9g}s"
    if lost > 1e-12:
        values["loss"] = round(lost, 9)
    return _located(line, **values) if values else None


def _located(line: int, **values: object) -> Located:
    mapping = Located(values)
    mapping.line = line
    mapping.key_lines = dict.fromkeys(values, line)
    return mapping
