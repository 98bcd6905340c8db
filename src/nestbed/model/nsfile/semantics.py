"""What an evaluated NS file means, as Emulab's parser read it (/work/ns-research.md): the topology as the YAML
loader's located raw mapping (so `build_experiment` gives the same one-line errors, at the NS file's lines),
plus what was ignored and why.

Units: bandwidth b/bps, k/kb/kbps/K/Kb/Kbps, M/Mb/Mbps, G/Gb/Gbps (case as Emulab: `100mb` is an error), no unit
= bit/s, from 10 kb to 10 Gb (Emulab 2016's limits). Delay s/ms/ns, no unit = seconds; sub-millisecond delays are
kept (Emulab refused them below 2 ms: a deliberate difference). `ns` is Emulab's, not NS-2's: Emulab's parser
divided the number by 1000 to get ms, so `5000ns` ran as 5 ms; it is read that way here, with a note.
A duplex-link's delay is one way in each direction and a LAN's is between any two members: both are nestbed's own
meaning of `delay`. Loss is end to end, as nestbed's `loss`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestbed.errors import TopologyError
from nestbed.model.located import Located, LocatedList
from nestbed.model.nsfile import lanmembers, queues, routes
from nestbed.model.nsfile.evaluate import Evaluated, NsCall, NsObject

BANDWIDTH_UNITS = {"": 1, "b": 1, "bps": 1, "k": 1000, "kb": 1000, "kbps": 1000, "K": 1000, "Kb": 1000,
                   "Kbps": 1000, "M": 10**6, "Mb": 10**6, "Mbps": 10**6, "G": 10**9, "Gb": 10**9, "Gbps": 10**9}
DELAY_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "ns": 1e-6}     # ns: Emulab's parse_delay made it microseconds
MIN_BANDWIDTH = 10_000          # Emulab: "Bandwidth of N Kbs is too low"
DETER_PACKING = 10              # containerize.py's default --packing: containers per machine
MAX_BANDWIDTH = 10 * 10**9      # Emulab 2016's maximum per link or LAN (2011: 1 Gb)
NUMBER = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*")
NODE_TYPES = {"process": "process", "qemu": "qemu", "embedded_pnode": "physical", "openvz": "process",
              "open_vz": "process"}
# Accepted, without meaning here (a testbed's hardware, images, software, mapper hints, tracing, …).
TESTBED_ONLY = ("tb-set-hardware", "tb-set-node-os", "tb-set-node-loadlist", "tb-set-node-cmdline",
                "tb-set-node-rpms", "tb-set-node-tarfiles", "tb-set-tarfiles", "tb-set-node-failure-action",
                "tb-set-link-failure-action", "tb-fix-node", "tb-bind-parent", "tb-fix-interface",
                "tb-make-soft-vtype", "tb-make-hard-vtype", "tb-make-weighted-vtype", "tb-set-sync-server",
                "tb-set-cpu-usage", "tb-set-mem-usage", "tb-use-endnodeshaping",
                "tb-force-endnodeshaping", "tb-set-endnodeshaping", "tb-set-noshaping", "tb-set-multiplexed",
                "tb-set-useveth", "tb-set-link-encap", "tb-set-vlink-emulation", "tb-set-security-level",
                "tb-set-lan-protocol", "tb-set-link-protocol", "tb-use-ipassign", "tb-set-ipassign-args",
                "tb-set-uselatestwadata", "tb-set-usewatunnels", "tb-set-wasolver-weights", "tb-set-jail-os",
                "tb-set-delay-os", "tb-set-delay-capacity", "tb-use-physnaming", "tb-set-node-id",
                "tb-set-node-memory-size", "tb-set-allowcolocate", "tb-feedback-vnode", "tb-feedback-vlan",
                "tb-feedback-vlink", "tb-set-link-est-bandwidth", "tb-set-lan-est-bandwidth",
                "tb-set-link-backfill", "tb-set-lan-backfill", "tb-set-nonfs", "tb-set-node-routable-ip",
                "tb-set-packing-strategy", "tb-set-switch-fabric", "tb-set-node-usesharednode",
                "tb-set-node-sharingmode", "tb-set-lan-setting", "tb-set-node-lan-setting",
                "tb-set-lan-accesspoint")

# Known to Emulab, with a meaning nestbed does not give yet (listed as not supported, never silently dropped).
NOT_YET = ("tb-set-ip-routing", "tb-set-use-oml",
           "tb-set-oml-server", "tb-set-oml-use-control", "tb-set-oml-mp", "tb-elab-in-elab",
           "tb-set-elabinelab-attribute", "tb-set-node-inner-elab-role", "tb-set-node-plab-role",
           "tb-set-node-plab-plcnet", "tb-set-node-service", "tb-add-node-service-hook", "tb-set-dpdb",
           "tb-use-modelnet", "tb-set-modelnet-physnodes", "tb-fix-current-resources", "tb-set-link-layer",
           "tb-add-ip-alias-node", "tb-add-ip-alias-lan", "tb-request-ip-alias-node", "tb-request-ip-alias-lan")
HANDLED = ("tb-set-colocate-factor", "tb-set-link-loss", "tb-set-lan-loss", "tb-set-ip", "tb-set-ip-link",
           "tb-set-ip-lan", "tb-set-ip-interface", "tb-set-netmask", "tb-set-node-startcmd", "tb-set-node-startup",
           "tb-add-node-attribute") + lanmembers.COMMANDS


# How Emulab's tb_compat procs take their arguments: a wrong count is its Tcl error, here one line.
ARGUMENTS: dict[str, tuple[tuple[int, ...], str]] = {
    "tb-set-link-loss": ((2, 3), "link loss | src dst loss"), "tb-set-lan-loss": ((2,), "lan loss"),
    "tb-set-ip": ((2,), "node ip"), "tb-set-ip-link": ((3,), "node link ip"), "tb-set-ip-lan": ((3,), "node lan ip"),
    "tb-set-ip-interface": ((3,), "node dst ip"), "tb-set-netmask": ((2,), "lanlink netmask"),
    "tb-set-node-startcmd": ((2,), "node command"), "tb-set-node-startup": ((2,), "node command"),
    "tb-set-colocate-factor": ((1,), "factor"), "tb-add-node-attribute": ((3,), "node key value"),
}
ROUTING_PROTOCOLS = {"Static": "static", "Session": "static", "ospf": "static", "Manual": "none",
                     "Static-ddijk": "static", "Static-old": "static"}


class SegmentIndex:
    """Links by node pair (the last one made, as Emulab's find_link) and segments by node, kept as the file makes
    them: tb-* commands look them up once each, so big files stay linear."""

    def __init__(self) -> None:
        self.last_link: dict[frozenset[str], str] = {}
        self.of_node: dict[str, list[str]] = {}

    def add(self, name: str, obj: NsObject) -> None:
        members = obj.args[:2] if obj.kind == "link" else obj.args[0].split()
        if obj.kind == "link":
            self.last_link[frozenset(members)] = name
        for node in dict.fromkeys(members):
            self.of_node.setdefault(node, []).append(name)


@dataclass
class Imported:
    raw: Located
    ignored: list[str] = field(default_factory=list)       # "line N: what" once per kind of line
    notes: list[str] = field(default_factory=list)
    passes: dict[str, tuple[int, int]] = field(default_factory=dict)   # node → (containers:PartitionPass, line)
    packing: int | None = None          # tb-set-colocate-factor: nodes per host
    start_lines: dict[str, int] = field(default_factory=dict)            # node → line of its tb-set-node-startcmd
    startups: dict[str, str] = field(default_factory=dict)               # node → its tb-set-node-startup command
    scenario: dict[str, Any] | None = None                # the events as an AAL mapping (nsfile/aal.py)


def experiment_name(stem: str) -> str:
    """A valid experiment name from the file's name (lowercase letters, digits, '-'; 15 at most)."""
    name = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    name = name if name[:1].isalpha() else f"ns-{name}"
    return name[:15].rstrip("-") or "ns"


def bandwidth(text: str, at: str) -> int:
    match = NUMBER.fullmatch(text)
    if match is None or match.group(2) not in BANDWIDTH_UNITS:
        raise TopologyError(f"bandwidth {text!r} is not NS's", at, "write e.g. 100Mb, 1.5Mbps, 64kb or 1Gb")
    value = int(float(match.group(1)) * BANDWIDTH_UNITS[match.group(2)])
    if value < MIN_BANDWIDTH:
        raise TopologyError(f"bandwidth {text!r} is {value} bit/s, below Emulab's minimum of 10 kb (no unit means "
                            f"bit/s)", at, f"write e.g. {text}kb or {text}Mb")
    if value > MAX_BANDWIDTH:
        raise TopologyError(f"bandwidth {text!r} is above Emulab's maximum of 10 Gb per link or LAN", at,
                            "write 10Gb or less")
    return value


def delay(text: str, at: str) -> float:
    match = NUMBER.fullmatch(text)
    if match is None or match.group(2) not in DELAY_UNITS:
        raise TopologyError(f"delay {text!r} is not NS's", at, "write e.g. 10ms, 0.5ms or 0.01 (seconds)")
    return float(match.group(1)) * DELAY_UNITS[match.group(2)]


def loss(text: str, at: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise TopologyError(f"loss rate {text!r} is not a number from 0 to 1", at, "write e.g. 0.01 for 1 %")
    return value


def _located(line: int, **values: object) -> Located:
    mapping = Located(values)
    mapping.line = line
    mapping.key_lines = dict.fromkeys(values, line)
    return mapping


def lowercased(evaluated: Evaluated) -> list[str]:
    """nestbed's names are lowercase (DNS names): every node, link and LAN named with capitals (nodeA) takes its
    lowercase name everywhere the file names it; two names that become one are an error at the second."""
    renamed: dict[str, str] = {}
    taken: dict[str, NsObject] = {}
    for obj in evaluated.objects:
        if obj.kind not in ("node", "link", "lan"):
            continue
        low = obj.name.lower()
        if low in taken and taken[low].name != obj.name:
            raise TopologyError(f"{obj.name} and {taken[low].name} (line {taken[low].line}) are one name here: "
                                f"nestbed's names are lowercase", evaluated.at(obj.line), "rename one of them")
        taken[low] = obj
        if low != obj.name:
            renamed[obj.name] = low

    def mapped(text: str) -> str:
        if text in renamed:
            return renamed[text]
        words = text.split()
        return " ".join(renamed.get(w, w) for w in words) if len(words) > 1 and any(w in renamed for w in words) \
            else text
    for obj in evaluated.objects:
        obj.name = renamed.get(obj.name, obj.name)
        obj.args = [mapped(a) for a in obj.args]
    for call in evaluated.calls:
        call.target = renamed.get(call.target, call.target)
        call.args = [mapped(a) if i < 3 else a for i, a in enumerate(call.args)]
    return [f"names are lowercase here: {', '.join(f'{a} → {b}' for a, b in list(renamed.items())[:6])}"
            + (" …" if len(renamed) > 6 else "")] if renamed else []


def meaning(evaluated: Evaluated, name: str) -> Imported:
    nodes: dict[str, Located] = {}
    segments: dict[str, tuple[NsObject, Located]] = {}
    ips: dict[tuple[str, str], str] = {}              # (node, segment) → address
    masks: dict[str, int] = {}
    routing = "none"
    index = SegmentIndex()
    out = Imported(Located(), notes=lowercased(evaluated))
    seen_ignored: set[str] = set()
    per_member = lanmembers.Members()          # per-member and simplex settings (lanmembers.py)

    def ignore(call: NsCall, why: str) -> None:
        if call.cmd not in seen_ignored:
            seen_ignored.add(call.cmd)
            out.ignored.append(f"line {call.line}: {call.cmd} ({why})")

    _check_run(evaluated)
    for item in evaluated.in_order():
        if isinstance(item, NsCall) and lanmembers.handles(item.cmd):
            lanmembers.record(per_member, item.cmd, item.args, item.line, _kinds(segments, item.args[:2]),
                              evaluated.at(item.line), {"delay": delay, "bandwidth": bandwidth, "loss": loss})
            continue
        if isinstance(item, NsCall):
            routing = _call(item, evaluated, nodes, segments, ips, masks, routing, out, ignore, per_member, index)
            continue
        obj = item
        at = evaluated.at(obj.line)
        if obj.kind == "node":
            nodes[obj.name] = _located(obj.line)
        elif obj.kind == "link":
            a, b, bw, dl = obj.args[:4]
            spec = _located(obj.line, name=obj.name, bandwidth=bandwidth(bw, at), delay=_delay(dl, at, obj.line, out))
            spec["ends"] = _list(obj.line, [a, b])
            segments[obj.name] = (obj, spec)
            index.add(obj.name, obj)
        elif obj.kind == "lan":
            members, bw, dl = obj.args[:3]
            spec = _located(obj.line, bandwidth=bandwidth(bw, at), delay=_delay(dl, at, obj.line, out))
            spec["members"] = _list(obj.line, members.split())
            if len(spec["members"]) < 2:
                raise TopologyError(f"LAN {obj.name} has only a single node", at,
                                    "LANs need at least 2 nodes, as in Emulab: add a member or use no LAN")
            segments[obj.name] = (obj, spec)
            index.add(obj.name, obj)
    for (node, segment), address in ips.items():
        spec = segments[segment][1]
        key = "ends" if "ends" in spec else "members"
        length = masks.get(segment, 24)
        spec[key] = _list(spec.line, [{"node": m, "ip": f"{address}/{length}"} if m == node else m
                                      for m in spec[key]])
    out.notes += routes.routing_notes(evaluated, routing)
    lanmembers.convert(per_member, {name: spec for name, (_, spec) in segments.items()})
    _queue_limits(evaluated, segments, out)
    for line, message in evaluated.warnings:
        out.ignored.append(f"line {line}: {message}")
    once: dict[str, str] = {}                 # each kind of ignored line once, at its first line
    for entry in out.ignored:
        once.setdefault(entry.split(": ", 1)[1], entry)
    out.ignored = sorted(once.values(), key=_line_number)
    raw = out.raw
    raw.line, raw.key_lines = 1, {}
    raw["name"] = experiment_name(name)
    raw["routing"] = routing
    raw["nodes"] = Located(nodes)
    raw["nodes"].line, raw["nodes"].key_lines = 1, {n: spec.line for n, spec in nodes.items()}
    links = [spec for obj, spec in segments.values() if obj.kind == "link"]
    raw["links"] = _list(1, links)
    raw["links"].item_lines = [spec.line for spec in links]
    lans = {obj.name: spec for obj, spec in segments.values() if obj.kind == "lan"}
    raw["lans"] = Located(lans)
    raw["lans"].line, raw["lans"].key_lines = 1, {n: spec.line for n, spec in lans.items()}
    raw.key_lines = {"name": 1, "routing": 1, "nodes": 1, "links": 1, "lans": 1}
    _pack_passes(out, nodes)
    if out.packing is not None:
        raw["embed"] = _located(1, per_host=out.packing)
        raw.key_lines["embed"] = 1
    return out


def _pack_passes(out: Imported, nodes: dict[str, Located]) -> None:
    """DETER's containers:PartitionPass: a pass's nodes are packed together, a machine holding one pass's nodes,
    `--pass-pack`'s factor of them (containerize's default 10, or the file's tb-set-colocate-factor). nestbed says it
    with co-location groups: each pass, in the file's order (its locality), cut into partitions of that many. A node
    the file gives its own containers:partition keeps it."""
    factor = out.packing or DETER_PACKING
    by_pass: dict[int, list[str]] = {}
    for node in nodes:
        if node in out.passes and "partition" not in nodes[node]:
            by_pass.setdefault(out.passes[node][0], []).append(node)
    for number, members in sorted(by_pass.items()):
        for i, node in enumerate(members):
            nodes[node]["partition"] = f"pass{number}-{i // factor}"
            nodes[node].key_lines["partition"] = out.passes[node][1]
    if by_pass:
        first = min(line for _, line in out.passes.values())
        out.notes.append(f"line {first}: containers:PartitionPass: each pass packed in partitions of {factor} "
                         f"node(s) (pass<N>-<k>), as containerize.py packs a pass")


def _call(call: NsCall, evaluated: Evaluated, nodes: dict[str, Located],
          segments: dict[str, tuple[NsObject, Located]], ips: dict[tuple[str, str], str], masks: dict[str, int],
          routing: str, out: Imported, ignore: Callable[[NsCall, str], None],
          per_member: lanmembers.Members | None = None, index: SegmentIndex | None = None) -> str:
    """One call's meaning, in file order (what it names must exist by then); returns the routing."""
    at = evaluated.at(call.line)
    index = index or SegmentIndex()
    if call.target == "" and call.cmd in ARGUMENTS:
        counts, usage = ARGUMENTS[call.cmd]
        if len(call.args) not in counts:
            raise TopologyError(f"{call.cmd} takes {usage}, not {len(call.args)} argument(s)", at,
                                f"write {call.cmd} {usage.split(' | ')[0]}")
    if call.cmd == "rtproto":
        protocol = call.args[0] if call.args else ""
        if protocol not in ROUTING_PROTOCOLS:
            out.ignored.append(f"line {call.line}: rtproto {protocol} (not a protocol Emulab knows: Static, "
                               f"Session, ospf or Manual; routing stays as it was)")
            return routing
        routing = ROUTING_PROTOCOLS[protocol]
    elif call.cmd == "add-route" and call.target in nodes:
        routes.add_route(call, evaluated, nodes, segments)
    elif call.cmd in ("tb-set-link-loss", "tb-set-lan-loss"):
        target = call.args[0] if len(call.args) == 2 else _link_between(index, call.args[0], call.args[1])
        if target not in segments:
            raise TopologyError(f"{call.cmd}: {target!r} is not a link or LAN", at)
        segments[target][1]["loss"] = loss(call.args[-1], at)
        if per_member is not None:
            per_member.segment_loss(target, segments[target][1]["loss"])
    elif call.cmd in ("tb-set-ip", "tb-set-ip-link", "tb-set-ip-lan", "tb-set-ip-interface"):
        node, segment, address = _ip_target(call, segments, index, at)
        ips[(node, segment)] = address
    elif call.cmd == "tb-set-netmask":
        if call.args[0] not in segments:
            raise TopologyError(f"tb-set-netmask: {call.args[0]!r} is not a link or LAN", at)
        masks[call.args[0]] = _prefix_length(call.args[1], at)
    elif call.cmd in ("tb-set-node-startcmd", "tb-set-node-startup"):
        _start_command(call, nodes, out, at)
    elif call.cmd == "tb-set-colocate-factor":
        try:
            out.packing = int(call.args[0])
        except (ValueError, IndexError):
            out.packing = 0
        if out.packing < 1:
            raise TopologyError("tb-set-colocate-factor needs a positive integer", at, "write e.g. 10")
    elif call.cmd == "tb-add-node-attribute":
        _attribute(nodes, call, out, at)
    elif call.cmd in TESTBED_ONLY:
        ignore(call, "testbed-only")
    elif call.cmd in NOT_YET:
        ignore(call, "not supported yet")
    elif call.target == "":
        raise TopologyError(f"unknown command {call.cmd!r}", at, "Emulab's parser stops here too: remove the line")
    return routing


def _queue_limits(evaluated: Evaluated, segments: dict[str, tuple[NsObject, Located]], out: Imported) -> None:
    """Each queue's `limit_` as the queue of its end's egress (the end's own shaping, made if it has none)."""
    found = queues.queue_limits(evaluated, {frozenset(obj.args[:2]): name for name, (obj, _) in segments.items()
                                            if obj.kind == "link"})
    out.ignored += found.ignored
    out.notes += found.notes
    for (segment, node), (packets, line) in found.limits.items():
        spec = segments[segment][1]
        key = "ends" if "ends" in spec else "members"
        members = spec[key]
        for i, member in enumerate(members):
            if (member["node"] if isinstance(member, dict) else member) != node:
                continue
            entry = member if isinstance(member, Located) else _located(line, **(member if isinstance(member, dict)
                                                                                  else {"node": member}))
            egress = entry.get("egress")
            if not isinstance(egress, Located):
                egress = entry["egress"] = _located(line)
                entry.key_lines["egress"] = line
            egress["queue"] = packets
            egress.key_lines["queue"] = line
            members[i] = entry


def _line_number(entry: str) -> int:
    match = re.match(r"line (\d+):", entry)
    return int(match.group(1)) if match else 0


def _check_run(evaluated: Evaluated) -> None:
    """Emulab's parser needs exactly one `$ns run`: none is an error at the end, a second one at its line."""
    simulators = {o.name for o in evaluated.objects if o.kind == "simulator"}
    runs = [c for c in evaluated.calls if c.cmd == "run" and c.target in simulators]
    if len(runs) > 1:
        raise TopologyError("the Simulator 'run' statement can only be run once "
                            f"(first at line {runs[0].line})", evaluated.at(runs[1].line), "remove this line")
    if not runs and simulators:
        try:
            last = max(1, len(Path(evaluated.path).read_text(errors="replace").splitlines()))
        except OSError:
            last = 1
        raise TopologyError("no '$ns run' statement found", evaluated.at(last),
                            "end the file with $ns run, as Emulab requires")


def _delay(text: str, at: str, line: int, out: Imported) -> str:
    if text.rstrip().endswith("ns"):
        out.notes.append(f"line {line}: delay {text!r} read as Emulab read it: 'ns' is microseconds there")
    return _seconds(delay(text, at))


def _kinds(segments: dict[str, tuple[NsObject, Located]], names: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Of the segments among `names`: (link | lan, its members' names), for lanmembers' checks."""
    return {name: (segments[name][0].kind, segments[name][0].args[:2] if segments[name][0].kind == "link"
                   else segments[name][0].args[0].split()) for name in names if name in segments}


def _seconds(value: float) -> str:
    return f"{value:.9g}s"


def _list(line: int, items: Sequence[object]) -> LocatedList:
    located = LocatedList(items)
    located.line = line
    located.item_lines = [line] * len(items)
    return located


def _start_command(call: NsCall, nodes: dict[str, Located], out: Imported, at: str) -> None:
    """tb-set-node-startcmd: one per node (Emulab's second is a Tcl error: its `<node>_startcmd` Program exists);
    tb-set-node-startup: the node's boot command, the last one wins. Both run as the node's commands."""
    node, command = call.args
    if node not in nodes:
        raise TopologyError(f"{call.cmd}: {node!r} is not a node", at)
    commands = nodes[node].setdefault("commands", LocatedList())
    if call.cmd == "tb-set-node-startcmd":
        if node in out.start_lines:
            raise TopologyError(f"{node} has a start command already (line {out.start_lines[node]}); Emulab takes "
                                f"one per node", at, "join the commands with ';' in one tb-set-node-startcmd")
        out.start_lines[node] = call.line
        commands.append(command)
        return
    previous = out.startups.get(node)
    if previous is not None:
        commands.remove(previous)
    out.startups[node] = command
    commands.append(command)


def _link_between(index: SegmentIndex, a: str, b: str) -> str:
    """The last link made between a and b (Emulab's find_link); f"{a}-{b}" when there is none."""
    return index.last_link.get(frozenset((a, b)), f"{a}-{b}")


def _ip_target(call: NsCall, segments: dict[str, tuple[NsObject, Located]], index: SegmentIndex,
               at: str) -> tuple[str, str, str]:
    if call.cmd == "tb-set-ip":
        node, address = call.args
        mine = index.of_node.get(node, [])
        if len(mine) != 1:
            raise TopologyError(f"tb-set-ip: {node} does not have a single connection", at,
                                "use tb-set-ip-link or tb-set-ip-lan")
        return node, mine[0], address
    if call.cmd == "tb-set-ip-interface":
        node, other, address = call.args
        link = _link_between(index, node, other)
        if link not in segments:
            raise TopologyError(f"tb-set-ip-interface: no connection between {node} and {other}", at,
                                "tb-set-ip-interface names a link's two ends; for a LAN use tb-set-ip-lan")
        return node, link, address
    node, segment, address = call.args
    if segment not in segments or segment not in index.of_node.get(node, []):
        raise TopologyError(f"{call.cmd}: {node} is not connected to {segment}", at)
    return node, segment, address


def _prefix_length(mask: str, at: str) -> int:
    try:
        bits = "".join(f"{int(octet):08b}" for octet in mask.split("."))
    except ValueError:
        bits = ""
    if len(bits) != 32 or "01" in bits:
        raise TopologyError(f"tb-set-netmask: {mask!r} is not a netmask", at, "write e.g. 255.255.255.0")
    return bits.count("1")


def _attribute(nodes: dict[str, Located], call: NsCall, out: Imported, at: str) -> None:
    node, key, value = (call.args + ["", "", ""])[:3]
    if node not in nodes:
        raise TopologyError(f"tb-add-node-attribute: {node!r} is not a node", at)
    if key == "containers:node_type":
        if value not in NODE_TYPES:
            raise TopologyError(f"containers:node_type {value!r} is not known", at,
                                "use process, qemu, embedded_pnode or openvz")
        nodes[node]["kind"] = NODE_TYPES[value]
        if value in ("openvz", "open_vz"):
            out.notes.append(f"line {call.line}: {node} is an openvz container in DETER: a process node here")
    elif key == "containers:partition":
        nodes[node]["partition"] = value
    elif key in ("containers:PartitionPass", "containers:PackingPass"):
        try:
            out.passes[node] = (int(value), call.line)
        except ValueError:
            raise TopologyError(f"{key} {value!r} is not an integer", at, "write e.g. 0, 1, 2") from None
    else:
        out.ignored.append(f"line {call.line}: tb-add-node-attribute {key} (not used here)")
