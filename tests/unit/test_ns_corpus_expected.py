"""Each corpus file imports with what Emulab's own parser made of it: the `topology:` blocks of
tests/data/ns/SOURCES.md, recorded by running Emulab's real 2011 parser (see that file's header). Checked: the
nodes, the routing, every link and LAN with its members, the addresses the file fixed, and the shaping of every
path through each link and LAN (member X to member Y: X's delay + Y's rdelay, the lower bandwidth, the losses
composed), against the nestbed topology the file imports as.

Emulab rounds delays down to whole ms per member and bandwidths to kbit/s; its automatic addresses follow Tcl's
hash order of link names (nestbed's follow the file's order), so only the addresses the file gives are compared.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nestbed.model import load_topology
from nestbed.model.topology import Experiment, Segment, Shaping

pytestmark = pytest.mark.needs("tclsh")

CORPUS = Path(__file__).parent.parent / "data" / "ns"
SOURCES = CORPUS / "SOURCES.md"
ROUTING = {"none": "none", "static": "static", "ospf": "static", "manual": "none", "-": "none"}


@dataclass
class Leg:
    """One member of an Emulab link or LAN: its port, address, and the shaping of its two legs."""
    ip: str
    delay: float            # ms, member → switch
    rdelay: float           # ms, switch → member
    bandwidth: int          # kbit/s
    rbandwidth: int
    loss: float
    rloss: float


@dataclass
class Expected:
    file: str
    nodes: int = 0
    names: list[str] = field(default_factory=list)
    routing: str = "none"
    segments: dict[str, tuple[str, int | None, dict[str, Leg], bool]] = field(default_factory=dict)
    segments_total: int | None = None


SHAPING = re.compile(r"d=([\d.]+)/([\d.]+) bw=(\d+)/(\d+) loss=([\d.e-]+)/([\d.e-]+)")
MEMBER = re.compile(r"([^\s:;]+):\d+=([\d.]+)")


def _prefix(mask: str | None) -> int | None:
    return None if mask is None else sum(bin(int(octet)).count("1") for octet in mask.split("."))


def _legs(text: str) -> dict[str, Leg]:
    if text.startswith("[") or "]: " in text:                    # one shaping for every member
        shaping, members = text.split("]: ", 1)
        values = SHAPING.search(shaping)
        assert values is not None, text
        return {m.group(1).lower(): _leg(m.group(2), values) for m in MEMBER.finditer(members)}
    legs: dict[str, Leg] = {}
    for part in text.split("; "):                                 # per member
        member, values = MEMBER.match(part), SHAPING.search(part)
        assert member is not None and values is not None, part
        legs[member.group(1).lower()] = _leg(member.group(2), values)
    return legs


def _leg(ip: str, values: re.Match[str]) -> Leg:
    d, rd, bw, rbw, loss, rloss = values.groups()
    return Leg(ip, float(d), float(rd), int(bw), int(rbw), float(loss), float(rloss))


def expectations() -> list[Expected]:
    found: list[Expected] = []
    current: Expected | None = None
    in_block, fences = False, 0
    for line in SOURCES.read_text().splitlines():
        if line.startswith("### "):
            current = Expected(line[4:].strip())
            in_block = False
        elif line == "- topology:" and current is not None:
            in_block, fences = True, 0
            found.append(current)
        elif in_block and current is not None and line.startswith("nodes ("):
            head, names = line.split("): ", 1) if "): " in line else (line.rstrip(":)"), "")
            count, routing = re.match(r"nodes \((\d+), routing=([\w-]+)", head).groups()  # type: ignore[union-attr]
            current.nodes, current.routing = int(count), ROUTING[routing]
            cut = names.rstrip().endswith(("...", "…"))
            words = re.sub(r"\((?:[^()']|'[^']*')*\)", "", names.rstrip(" .…")).split()   # attributes dropped
            current.names = [w.lower() for w in (words[:-1] if cut else words)]       # the last may be cut
        elif in_block and current is not None and line.startswith(("link ", "LAN ")):
            match = re.match(r"(link|LAN) ([^\s:]+)(?: mask=([\d.]+))?:? ?(.*)", line)
            assert match is not None, line
            kind, name, mask, rest = match.groups()
            cut = rest.rstrip().endswith(("...", "…"))          # a long member list, cut in SOURCES.md
            rest = rest.rstrip(" .…")
            legs = _legs(rest)
            if cut:
                legs.pop(list(legs)[-1], None)                     # the last one may be cut mid-address
            current.segments[name.lower()] = (kind.lower(), _prefix(mask), legs, cut)
        elif in_block and current is not None and line.startswith("... ("):
            total = re.search(r"(\d+) links/LANs total", line)
            current.segments_total = int(total.group(1)) if total else None
        elif line.startswith("```") and in_block:
            fences += 1
            in_block = fences < 2                                   # the block's closing fence ends it
    return found


def _compose(*parts: Shaping | None) -> tuple[float, float | None, float]:
    """(delay ms, bandwidth kbit/s or None, loss) of shapings in a row."""
    delay, bandwidth, keep = 0.0, None, 1.0
    for part in parts:
        if part is None:
            continue
        delay += (part.delay or 0.0) * 1000
        if part.bandwidth:
            bandwidth = part.bandwidth / 1000 if bandwidth is None else min(bandwidth, part.bandwidth / 1000)
        keep *= 1.0 - (part.loss or 0.0)
    return delay, bandwidth, 1.0 - keep


def path_of(segment: Segment, x: str, y: str) -> tuple[float, float | None, float]:
    """nestbed's shaping from member x to member y: the segment's, x's own egress, y's own ingress."""
    ends = {e.node: e for e in segment.endpoints}
    return _compose(segment.shaping, getattr(ends[x], "egress", None), getattr(ends[y], "ingress", None))


CASES = expectations()


def test_the_expectations_were_read() -> None:
    assert len(CASES) >= 45 and sum(len(c.segments) for c in CASES) >= 150


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_imports_as_emulab_parsed_it(case: Expected) -> None:
    exp: Experiment = load_topology(CORPUS / case.file)
    assert len(exp.nodes) == case.nodes
    assert set(case.names) <= set(exp.nodes)
    assert exp.routing == case.routing
    if case.segments_total is None:
        assert set(exp.segments) == set(case.segments)
    else:
        assert len(exp.segments) == case.segments_total and set(case.segments) <= set(exp.segments)
    fixed = [e for s in exp.segments.values() for e in s.endpoints if e.ip is not None]
    assert bool(fixed) == bool(re.search(r"^\s*tb-set-ip", (CORPUS / case.file).read_text(), re.M))
    for name, (kind, prefix, legs, cut) in case.segments.items():
        segment = exp.segments[name]
        assert segment.kind == ("lan" if kind == "lan" else "link"), name
        members = {e.node for e in segment.endpoints}
        assert (set(legs) <= members) if cut else (members == set(legs)), name
        for end in segment.endpoints:
            if end.ip is not None and end.node in legs:      # an address the file fixed: Emulab's, with the mask
                assert str(end.ip.ip) == legs[end.node].ip, (name, end.node)
                assert end.ip.network.prefixlen == (prefix or 24), (name, end.node)
        for x in legs:
            for y in legs:
                if x == y:
                    continue
                delay, bandwidth, loss = path_of(segment, x, y)
                want_delay = legs[x].delay + legs[y].rdelay
                want_bw = min(legs[x].bandwidth, legs[y].rbandwidth)
                want_loss = 1 - (1 - legs[x].loss) * (1 - legs[y].rloss)
                assert want_delay <= delay + 1e-6 < want_delay + 2, (name, x, y, delay, want_delay)  # Emulab: int ms
                assert bandwidth is not None and int(bandwidth) == want_bw, (name, x, y, bandwidth, want_bw)
                assert loss == pytest.approx(want_loss, abs=2e-6), (name, x, y, loss, want_loss)
