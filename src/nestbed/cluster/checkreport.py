"""What `nestbed cluster check` concludes from the hosts' answers: pure, so every rule is tested on fake answers.

    report = assess(__version__, hosts, probes, underlay_mtu=1500)
    report.verdict          # "ok" | "warnings" | "unusable"; report.findings say why, one line each

Inputs: per host a `HostCheck` (its `check` answer, or the one line saying why there is none) with a clock
estimate, and a `PathProbe` per ordered pair of reached hosts (the `probe_mtu` answers). A pair's path MTU is the
smaller of its two directions. Findings have a level: `unusable` (a host cannot be used, or two hosts cannot
carry a segment between them), `warning` (usable, but something experiments rely on is off), `note` (worth
knowing, changes nothing).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from nestbed.plan.multihost import FULL_MTU, VXLAN_OVERHEAD

NEEDED_MTU = FULL_MTU + VXLAN_OVERHEAD      # 1550: a full inner frame and its VXLAN headers
SMALLEST_INNER_MTU = 576                    # plan/multihost.py refuses a crossing segment below it
CLOCK_LIMIT = 0.5                           # s: records' and reports' times come from the hosts' clocks
LEVELS = ("note", "warning", "unusable")
FEATURES = ("netem", "htb", "vxlan", "nftables", "kvm")
# what a missing feature costs, and how much: vxlan is fatal only with more than one host (checked below)
FEATURE_LEVEL = {"netem": "warning", "htb": "warning", "nftables": "warning", "vxlan": "unusable", "kvm": "note"}


@dataclass(frozen=True)
class ClockSample:
    """One `check` round trip, on the controller's clock (time.time()): sent, received; and the host's answer:
    its time.time() when it answered and the seconds it worked before reading it."""
    sent: float
    received: float
    remote: float
    busy: float = 0.0


@dataclass(frozen=True)
class ClockEstimate:
    offset: float           # s: host's clock - controller's clock
    uncertainty: float      # s: ± half the round trip's network part


def estimate_clock(samples: Iterable[ClockSample]) -> ClockEstimate | None:
    """NTP's way, from the sample with the shortest round trip: the host read its clock halfway through the
    network part of the round trip (the time it worked on the request taken out)."""
    best: ClockEstimate | None = None
    for sample in samples:
        network = max(0.0, (sample.received - sample.sent) - max(0.0, sample.busy))
        estimate = ClockEstimate(offset=sample.remote - (sample.received - network / 2), uncertainty=network / 2)
        if best is None or estimate.uncertainty < best.uncertainty:
            best = estimate
    return best


@dataclass
class HostCheck:
    name: str
    where: str                              # how it is reached: "10.250.0.1" (emulated), "root@192.0.2.10"
    error: str | None = None                # why there is no answer (unreachable, its agent, its version)
    answer: dict[str, Any] | None = None    # the `check` op's answer (agent/hostcheck.py)
    clock: ClockEstimate | None = None
    emulated: bool = False

    @property
    def reached(self) -> bool:
        return self.error is None and self.answer is not None


@dataclass(frozen=True)
class PathProbe:
    """One direction's `probe_mtu` answer."""
    source: str
    target: str
    mtu: int | None                 # None: nothing came back
    exact: bool = True              # False: the probe ran out of time; mtu is a lower bound
    why: str | None = None

    @classmethod
    def from_answer(cls, source: str, target: str, answer: dict[str, Any]) -> PathProbe:
        mtu = answer.get("mtu")
        return cls(source, target, None if mtu is None else int(mtu), bool(answer.get("exact", True)),
                   answer.get("why"))


@dataclass(frozen=True)
class PairMtu:
    hosts: tuple[str, str]
    mtu: int | None                 # the smaller direction's (None: a direction failed or was not probed)
    forward: PathProbe | None
    backward: PathProbe | None

    @property
    def exact(self) -> bool:
        return all(p is None or p.exact for p in (self.forward, self.backward))

    @property
    def why(self) -> str:
        for probe in (self.forward, self.backward):
            if probe is None:
                return "not probed"
            if probe.mtu is None:
                return f"from {probe.source}: {probe.why or 'no answer'}"
        return ""


@dataclass(frozen=True)
class Finding:
    level: str                      # note | warning | unusable
    text: str


@dataclass
class CheckReport:
    version: str                            # the controller's nestbed
    hosts: list[HostCheck]
    pairs: list[PairMtu] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        levels = {f.level for f in self.findings}
        return "unusable" if "unusable" in levels else "warnings" if "warning" in levels else "ok"

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "unusable" else 0

    def peers_of(self, host: str) -> list[tuple[str, int | None]]:
        return [(pair.hosts[1] if pair.hosts[0] == host else pair.hosts[0], pair.mtu) for pair in self.pairs
                if host in pair.hosts]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "verdict": self.verdict,
                "hosts": [_host_json(h) for h in self.hosts],
                "pairs": [{"hosts": list(p.hosts), "mtu": p.mtu, "exact": p.exact,
                           "directions": {f"{d.source}>{d.target}": d.mtu for d in (p.forward, p.backward)
                                          if d is not None},
                           **({"why": p.why} if p.mtu is None else {})} for p in self.pairs],
                "findings": [asdict(f) for f in self.findings]}


def _host_json(host: HostCheck) -> dict[str, Any]:
    answer = host.answer or {}
    return {"name": host.name, "where": host.where, "emulated": host.emulated, "reached": host.reached,
            "error": host.error,
            **{key: answer.get(key) for key in ("version", "python", "kernel", "features", "addresses",
                                                "ssh_address")},
            "clock": asdict(host.clock) if host.clock is not None else None}


def pair_mtus(hosts: list[str], probes: Iterable[PathProbe]) -> list[PairMtu]:
    """Every pair of `hosts` (in their order) with the smaller of its two directions."""
    by_direction = {(p.source, p.target): p for p in probes}
    pairs = []
    for a, b in itertools.combinations(hosts, 2):
        forward, backward = by_direction.get((a, b)), by_direction.get((b, a))
        measured = [p.mtu for p in (forward, backward) if p is not None and p.mtu is not None]
        mtu = min(measured) if len(measured) == 2 else None
        pairs.append(PairMtu((a, b), mtu, forward, backward))
    return pairs


def assess(version: str, hosts: list[HostCheck], probes: Iterable[PathProbe] = (),
           underlay_mtu: int | None = None, clock_limit: float = CLOCK_LIMIT) -> CheckReport:
    """The report: findings host by host, then pair by pair. `underlay_mtu`: what the cluster file says the
    emulated hosts' underlay carries (plans are compiled for it), compared with what was measured."""
    findings: list[Finding] = []
    for host in hosts:
        if host.error is not None:
            findings.append(Finding("unusable", f"host {host.name} ({host.where}): {host.error}"))
        elif host.answer is None:
            findings.append(Finding("unusable", f"host {host.name} ({host.where}): no answer to the check"))
        elif host.answer.get("version") != version:
            findings.append(Finding("unusable", f"host {host.name} runs nestbed {host.answer.get('version')}, this "
                                                f"controller runs nestbed {version}: install nestbed {version} there"))
    reached = [h for h in hosts if h.reached and (h.answer or {}).get("version") == version]
    findings += _feature_findings(reached, several=len(hosts) > 1)
    findings += _clock_findings(reached, clock_limit)
    pairs = pair_mtus([h.name for h in reached], probes)
    findings += _mtu_findings(pairs, underlay_mtu)
    order = {level: i for i, level in enumerate(reversed(LEVELS))}
    findings.sort(key=lambda f: order[f.level])        # the worst first; stable within a level
    return CheckReport(version, hosts, pairs, findings)


def _feature_findings(hosts: list[HostCheck], several: bool) -> list[Finding]:
    """One line per (feature, what its hosts said), naming the hosts."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for host in hosts:
        features = (host.answer or {}).get("features") or {}
        for name in FEATURES:
            feature = features.get(name)
            if feature is None:
                grouped.setdefault((name, "not reported (an older agent?)"), []).append(host.name)
            elif feature.get("ok") is not True:
                grouped.setdefault((name, str(feature.get("detail") or "unusable")), []).append(host.name)
    findings = []
    for (name, detail), names in grouped.items():
        level = FEATURE_LEVEL[name]
        if name == "vxlan" and not several:
            level = "note"              # one host: nothing crosses hosts
        where = f"every host ({len(names)})" if len(names) == len(hosts) > 6 else _hosts(names)
        findings.append(Finding(level, f"{name} on {where}: {detail}"))
    return findings


def _clock_findings(hosts: list[HostCheck], limit: float) -> list[Finding]:
    findings = []
    for host in hosts:
        clock = host.clock
        if clock is not None and abs(clock.offset) - clock.uncertainty > limit:
            findings.append(Finding("warning", f"host {host.name}'s clock is {clock.offset:+.3f} s (± "
                                               f"{clock.uncertainty:.3f} s) off this controller's, more than "
                                               f"{limit:g} s: records' times and reports use the hosts' clocks; "
                                               f"synchronize it (NTP, chrony)"))
    return findings


def _mtu_findings(pairs: list[PairMtu], underlay_mtu: int | None) -> list[Finding]:
    findings = []
    for pair in pairs:
        if pair.mtu is None:
            findings.append(Finding("unusable", f"no underlay path between {_pair(pair)} ({pair.why}): segments "
                                                f"cannot cross these hosts"))
    by_mtu: dict[int, list[PairMtu]] = {}
    for pair in pairs:
        if pair.mtu is not None and pair.mtu < NEEDED_MTU:
            by_mtu.setdefault(pair.mtu, []).append(pair)
    for mtu, group in sorted(by_mtu.items()):
        inner = mtu - VXLAN_OVERHEAD
        between = f"every pair ({len(group)})" if len(group) == len(pairs) > 6 else _pairs(group)
        if inner < SMALLEST_INNER_MTU:
            findings.append(Finding("unusable", f"underlay path MTU {mtu} between {between} leaves {inner} bytes "
                                                f"for a segment's frames (VXLAN takes {VXLAN_OVERHEAD}), below "
                                                f"{SMALLEST_INNER_MTU}: segments cannot cross these hosts"))
        else:
            findings.append(Finding("warning", f"underlay path MTU {mtu} between {between} (< {NEEDED_MTU}): "
                                               f"cross-host segments there run at MTU {inner}"))
    if underlay_mtu is not None:
        short = [p for p in pairs if p.mtu is not None and p.mtu < underlay_mtu]
        if short:
            least = min(p.mtu for p in short if p.mtu is not None)
            findings.append(Finding("warning", f"the cluster file's underlay_mtu {underlay_mtu} is more than the "
                                               f"path carries between {_pairs(short)} (down to {least}): plans "
                                               f"made for {underlay_mtu} would lose frames above "
                                               f"{least - VXLAN_OVERHEAD}"))
    for pair in pairs:
        if pair.mtu is not None and not pair.exact:
            findings.append(Finding("note", f"path MTU between {_pair(pair)}: at least {pair.mtu} (the probe ran "
                                            f"out of time before it was exact)"))
        elif pair.mtu is not None and pair.forward is not None and pair.backward is not None \
                and pair.forward.mtu != pair.backward.mtu:
            findings.append(Finding("note", f"path MTU between {_pair(pair)} differs by direction: "
                                            f"{pair.forward.mtu} to {pair.forward.target}, {pair.backward.mtu} to "
                                            f"{pair.backward.target} (the smaller counts)"))
    return findings


def _pair(pair: PairMtu) -> str:
    return f"{pair.hosts[0]} and {pair.hosts[1]}"


def _pairs(pairs: list[PairMtu]) -> str:
    return _hosts([f"{p.hosts[0]}–{p.hosts[1]}" for p in pairs])


def _hosts(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
