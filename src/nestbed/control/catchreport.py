"""The CATCH demo's report (issue 12): its figures and the issue's checks ("It worked when"), computed from what
the experiment's store holds (control/catchrun.py reads it), never from what the scenario expected.

    run = catchrun.load(store, plan)            # or catchrun.open_store(path) first
    summary = summarize(run, seconds_total=…)   # Summary: .to_dict() → summary.json, text(summary) → summary.txt

Times are the store's `created` times, one host clock (catchrun's docstring says why not the programs' own).
Phases come from the scenario's triggers: before = [baseline, flooding), during = [flooding, stopped),
after = [stopped, recovered) (no `recovered`: up to the scenario's end).

- Legitimate goodput: the bytes of the `legit` transfers that completed (status 200) in a phase, each counted
  at its completion time, over the phase's length.
- Traffic into the target: the counters of the target's interface on the link `bottleneck` (rx; attack = the
  DSCP-8 part). Only the sample intervals wholly inside a phase count: at 1 Hz the interval around an event
  holds bytes of both sides of it, and spreading it would put flood bytes into `after`. For the attack, `before`
  ends when the flood was sent (the botmaster's `sent` record, at the latest `flooding`): bots flood as soon as
  the command reaches them, before their answers fire `flooding`.
- Recovery: the first window [s, s + 2 s) with s ≥ stopped on a 0.1-s grid (inside the after phase) whose
  goodput reaches 80 % of before's; it holds when that window starts at most 10 s after `stopped`.
- Command round trips: the rtt_ms the botmaster measured for each bot answering the last `ping` round.
"""
from __future__ import annotations

import math
import statistics
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field

from nestbed.control.catchrun import TRIGGERS, Names, Run, Transfer
from nestbed.control.traffic import Sample, intervals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

JOIN_LIMIT = 60.0               # s after botsStarted
RTT_P50_LIMIT = 200.0           # ms
ATTACK_RANGE = (5.0, 10.5)      # Mbit/s into the target during the flood (the shaping holds)
QUIET = 0.1                     # Mbit/s of attack at most before and after the flood
DURING_SHARE = 0.5              # legitimate goodput during the flood, at most, of before's
RECOVERED_SHARE = 0.8           # … and back to at least this share of it
RECOVERY_LIMIT = 10.0           # s after stopped
RECOVERY_WINDOW = 2.0           # s
RECOVERY_STEP = 0.1             # s
TOTAL_LIMIT = 180.0             # s, the whole demo
FORGED_REASONS = ("not the botmaster", "bad signature")
OUTSIDE_REASON = "target outside the experiment"
EDGE = 1e-6                     # s: a sample taken at an event's very time belongs to both sides
PHASES = ("before", "during", "after")
MBIT = 1e6
TEXT_WIDTH = 110                # summary.txt's figures wrap here

Window = tuple[float, float]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    figure: str                 # what the store shows
    goal: str                   # what the issue asks


@dataclass
class Summary:
    bots: int
    bots_joined: int
    joined_by_server: dict[str, int]
    join_seconds: float | None                  # the last bot's join, after botsStarted
    legit_mbps: dict[str, float | None]
    legit_transfers: dict[str, dict[str, float | None]]    # per phase: count, failed, seconds_p50
    attack_mbps_at_target: dict[str, float | None]
    into_target_mbps: dict[str, float | None]   # everything into the target (attack and legitimate)
    out_of_target_mbps: dict[str, float | None]  # everything out of it (mostly the web server's answers)
    capacity_mbps: float | None
    attack_sent_mbps: float | None              # what the bots' `report`s say they sent, over the flood
    command_rtt_ms: dict[str, float | None]     # p50, max of the ping round
    ping_answered: int
    refused: int
    refused_by_reason: dict[str, int]
    recovery_seconds: float | None              # stopped → the first window back at 80 %
    seconds: float                              # the scenario, first event to end
    seconds_total: float | None                 # the whole demo, when the caller measured it
    reached_exit: bool | None
    events: dict[str, float]                    # the triggers that fired, seconds since the scenario's start
    clock: str
    counters: str                               # which counters show the traffic into the target
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# -- phases and rates -------------------------------------------------------------------------------------
def phases(run: Run) -> dict[str, Window | None]:
    """before, during, after, and `attack_before` (before, ended by the flood's sending)."""
    baseline, flooding, stopped = run.trigger("baseline"), run.trigger("flooding"), run.trigger("stopped")
    after_end = run.trigger("recovered") or run.end
    result: dict[str, Window | None] = {
        "before": (baseline, flooding) if baseline is not None and flooding is not None else None,
        "during": (flooding, stopped) if flooding is not None and stopped is not None else None,
        "after": (stopped, after_end) if stopped is not None and after_end > stopped else None}
    before = result["before"]
    sent = flood_sent(run)
    result["attack_before"] = (before[0], min(before[1], sent)) if before and sent is not None else before
    return result


def flood_sent(run: Run) -> float | None:
    """When the real flood was sent: the last flood command sent before `flooding` (forged and outside floods
    come earlier)."""
    flooding = run.trigger("flooding")
    if flooding is None:
        return None
    times = [r.sent for r in run.rounds if r.cmd == "flood" and r.sent is not None and r.sent <= flooding]
    return max(times, default=None)


def window_rates(samples: list[Sample], window: Window | None) -> tuple[float, float] | None:
    """(all, attack) bit/s over the sample intervals wholly inside the window; None when none is."""
    if window is None:
        return None
    inside = [i for i in intervals(samples) if i.start >= window[0] - EDGE and i.end <= window[1] + EDGE]
    seconds = sum(i.end - i.start for i in inside)
    if seconds <= 0:
        return None
    return sum(i.bytes for i in inside) * 8 / seconds, sum(i.attack for i in inside) * 8 / seconds


def goodput(transfers: list[Transfer], start: float, end: float) -> float:
    """bit/s of the transfers that completed in [start, end)."""
    done = sum(t.bytes for t in transfers if t.ok and start <= t.at < end)
    return done * 8 / (end - start) if end > start else 0.0


def goodput_bins(transfers: list[Transfer], start: float, end: float, step: float = RECOVERY_WINDOW) -> list[
        tuple[float, float]]:
    """(bin start, bit/s) of consecutive `step`-second bins from start to end (for the plot)."""
    count = max(math.ceil((end - start) / step - EDGE), 0)
    return [(start + i * step, goodput(transfers, start + i * step, start + (i + 1) * step)) for i in range(count)]


def recovery(transfers: list[Transfer], after: Window | None, baseline: float | None) -> float | None:
    """Seconds from `stopped` to the first RECOVERY_WINDOW inside the after phase with at least RECOVERED_SHARE
    of the baseline goodput; None when there is none (or no baseline)."""
    if after is None or not baseline:
        return None
    stopped, end = after
    need = RECOVERED_SHARE * baseline
    step = 0
    while (start := stopped + step * RECOVERY_STEP) + RECOVERY_WINDOW <= end + EDGE:
        if goodput(transfers, start, start + RECOVERY_WINDOW) >= need:
            return step * RECOVERY_STEP
        step += 1
    return None


def _mbps(rates: tuple[float, float] | None, attack: bool) -> float | None:
    return None if rates is None else rates[1 if attack else 0] / MBIT


# -- the summary ----------------------------------------------------------------------------------------------
def summarize(run: Run, names: Names = Names(), seconds_total: float | None = None,
              exit_code: int | None = None) -> Summary:
    """Every figure and check of the report. `seconds_total`: the whole demo's wall time (up, run, down), which
    only the caller knows; `exit_code`: what `nestbed run` exited with, if the caller ran it."""
    windows = phases(run)
    into = {p: window_rates(run.counters.into_target, windows["attack_before" if p == "before" else p])
            for p in PHASES}
    out = {p: window_rates(run.counters.out_of_target, windows[p]) for p in PHASES}
    legit = {p: None if w is None else goodput(run.transfers, *w) / MBIT for p, w in windows.items() if p in PHASES}
    baseline = legit["before"]
    recovered = recovery(run.transfers, windows["after"], baseline * MBIT if baseline else None)
    ping = _ping_round(run)
    rtts = sorted(r.rtt_ms for r in ping.replies) if ping else []
    during = windows["during"]
    reported = sum(run.reported.values())
    summary = Summary(
        bots=len(run.bots), bots_joined=len(run.joined),
        joined_by_server=dict(sorted(Counter(j.server for j in run.joined.values()).items())),
        join_seconds=_join_seconds(run),
        legit_mbps=legit, legit_transfers={p: _transfers(run.transfers, windows[p]) for p in PHASES},
        attack_mbps_at_target={p: _mbps(into[p], attack=True) for p in PHASES},
        into_target_mbps={p: _mbps(into[p], attack=False) for p in PHASES},
        out_of_target_mbps={p: _mbps(out[p], attack=False) for p in PHASES},
        capacity_mbps=run.capacity / MBIT if run.capacity else None,
        attack_sent_mbps=reported * 8 / (during[1] - during[0]) / MBIT if during and reported else None,
        command_rtt_ms={"p50": statistics.median(rtts) if rtts else None, "max": rtts[-1] if rtts else None},
        ping_answered=len(_answered(run, ping)) if ping else 0,
        refused=len(run.refused), refused_by_reason=dict(sorted(Counter(r.reason for r in run.refused).items())),
        recovery_seconds=recovered, seconds=run.end - run.origin, seconds_total=seconds_total,
        reached_exit=run.reached_exit,
        events={name: run.triggers[name] - run.origin for name in TRIGGERS if name in run.triggers},
        clock="store times (the host agent's clock; the programs' own `time` is not used)",
        counters=run.counters.source)
    summary.checks = checks(run, summary, names, exit_code)
    return summary


def _ping_round(run: Run) -> Any:
    pings = [r for r in run.rounds if r.cmd == "ping"]
    return pings[-1] if pings else None


def _answered(run: Run, ping: Any) -> set[str]:
    """The bot nodes that answered the ping round (nick → node by their `joined` records)."""
    nodes = {j.nick: j.node for j in run.joined.values()}
    return {nodes[r.nick] for r in ping.replies if r.nick in nodes}


def _join_seconds(run: Run) -> float | None:
    if not run.joined:
        return None
    start = run.trigger("botsStarted") or run.origin
    return max(j.at for j in run.joined.values()) - start


def _transfers(transfers: list[Transfer], window: Window | None) -> dict[str, float | None]:
    inside = [t for t in transfers if window is not None and window[0] <= t.at < window[1]]
    times = [t.seconds for t in inside if t.ok]
    return {"count": len(inside), "failed": sum(1 for t in inside if not t.ok),
            "seconds_p50": statistics.median(times) if times else None}


# -- the checks -----------------------------------------------------------------------------------------------
def checks(run: Run, summary: Summary, names: Names, exit_code: int | None = None) -> list[Check]:
    result = [_joined(run, summary), _pinged(run, summary), _round_trip(summary), _attack_during(run, summary),
              _attack_quiet(run, summary), _legit_during(summary), _legit_recovery(summary),
              _forged(run, names), _outside(run, names), _exit(summary, exit_code)]
    if summary.seconds_total is not None:
        result.append(Check("total time", summary.seconds_total <= TOTAL_LIMIT, f"{summary.seconds_total:.0f} s",
                            f"≤ {TOTAL_LIMIT:.0f} s end to end"))
    return result


def _fmt(value: float | None, unit: str, digits: int = 2) -> str:
    return "none" if value is None else f"{value:.{digits}f} {unit}"


def _joined(run: Run, summary: Summary) -> Check:
    start = run.trigger("botsStarted") or run.origin
    late = [j.node for j in run.joined.values() if j.at - start > JOIN_LIMIT]
    missing = [b for b in run.bots if b not in run.joined]
    empty = [s for s in run.servers if not summary.joined_by_server.get(s)]
    figure = f"{summary.bots_joined}/{summary.bots}"
    if summary.join_seconds is not None:
        figure += f" in {summary.join_seconds:.1f} s"
    figure += "; " + ", ".join(f"{s} {summary.joined_by_server.get(s, 0)}" for s in run.servers)
    if missing:
        figure += f"; never joined: {_few(missing)}"
    if late:
        figure += f"; late: {_few(late)}"
    ok = bool(run.bots) and not missing and not late and not empty
    return Check("bots joined", ok, figure,
                 f"every bot within {JOIN_LIMIT:.0f} s of botsStarted, ≥ 1 on each of {', '.join(run.servers)}")


def _pinged(run: Run, summary: Summary) -> Check:
    ping = _ping_round(run)
    if ping is None:
        return Check("ping answered", False, "no ping round recorded by the botmaster", "every bot answers !ping")
    silent = [b for b in run.bots if b not in _answered(run, ping)]
    figure = f"{summary.ping_answered}/{summary.bots} answered" + (f"; silent: {_few(silent)}" if silent else "")
    return Check("ping answered", bool(run.bots) and not silent, figure, "every bot answers !ping")


def _round_trip(summary: Summary) -> Check:
    p50, peak = summary.command_rtt_ms["p50"], summary.command_rtt_ms["max"]
    return Check("command round trip", p50 is not None and p50 <= RTT_P50_LIMIT,
                 f"p50 {_fmt(p50, 'ms', 1)}, max {_fmt(peak, 'ms', 1)}", f"p50 ≤ {RTT_P50_LIMIT:.0f} ms")


def _attack_during(run: Run, summary: Summary) -> Check:
    low, high = ATTACK_RANGE
    rate = summary.attack_mbps_at_target["during"]
    figure = _fmt(rate, "Mbit/s") + f" into the target ({summary.counters})"
    if not run.counters.marked and run.reported:
        figure += ("; no DSCP-8 byte counted anywhere in the store, though the bots report "
                   f"{sum(run.reported.values()) / 1e6:.1f} MB sent: attack counters are not read where the "
                   "target runs")
    return Check("attack during flood", rate is not None and low <= rate <= high, figure,
                 f"{low:g}–{high:g} Mbit/s")


def _attack_quiet(run: Run, summary: Summary) -> Check:
    before, after = summary.attack_mbps_at_target["before"], summary.attack_mbps_at_target["after"]
    ok = before is not None and after is not None and before < QUIET and after < QUIET
    return Check("no attack outside flood", ok, f"before {_fmt(before, 'Mbit/s', 3)}, after {_fmt(after, 'Mbit/s', 3)}",
                 f"< {QUIET:g} Mbit/s before and after")


def _legit_during(summary: Summary) -> Check:
    before, during = summary.legit_mbps["before"], summary.legit_mbps["during"]
    ok = bool(before) and during is not None and during <= DURING_SHARE * (before or 0.0)
    share = f" ({during / before:.0%} of before)" if before and during is not None else ""
    return Check("legit during flood", ok, f"{_fmt(during, 'Mbit/s')}{share}, before {_fmt(before, 'Mbit/s')}",
                 f"≤ {DURING_SHARE:.0%} of before")


def _legit_recovery(summary: Summary) -> Check:
    seconds = summary.recovery_seconds
    figure = "not back to 80 % in the after phase" if seconds is None else \
        f"a {RECOVERY_WINDOW:g}-s window at ≥ {RECOVERED_SHARE:.0%} of before starts {seconds:.1f} s after stop"
    return Check("legit recovery", seconds is not None and seconds <= RECOVERY_LIMIT, figure,
                 f"≥ {RECOVERED_SHARE:.0%} of before within {RECOVERY_LIMIT:g} s of stopped")


def _containment(run: Run) -> tuple[float | None, float | None]:
    """Attack Mbit/s into the target and out of every bot, from baseline until the flood was sent."""
    window = phases(run)["attack_before"]
    into = _mbps(window_rates(run.counters.into_target, window), attack=True)
    sent = [window_rates(samples, window) for samples in run.counters.bot_tx.values()]
    measured = [s[1] for s in sent if s is not None]
    return into, (sum(measured) / MBIT if measured else None)


def _quiet(into: float | None, bots: float | None) -> bool:
    return into is not None and into < QUIET and (bots is None or bots < QUIET)


def _containment_figure(refusers: set[str], run: Run, obeyed: int, into: float | None, bots: float | None) -> str:
    return (f"refused by {len(refusers)}/{len(run.bots)}, obeyed {obeyed}; attack before the flood: into target "
            f"{_fmt(into, 'Mbit/s', 3)}, from bots {_fmt(bots, 'Mbit/s', 3)}")


def _forged(run: Run, names: Names) -> Check:
    refusers = {r.node for r in run.refused if r.reason in FORGED_REASONS}
    obeyed = [c for c in run.commands if c.sender != names.botmaster_nick]
    into, bots = _containment(run)
    ok = bool(run.bots) and refusers >= set(run.bots) and not obeyed and _quiet(into, bots)
    return Check("forged command", ok, _containment_figure(refusers, run, len(obeyed), into, bots),
                 f"refused by every bot, no cmd, attack < {QUIET:g} Mbit/s")


def _outside(run: Run, names: Names) -> Check:
    refusers = {r.node for r in run.refused if r.reason == OUTSIDE_REASON}
    # The botmaster's floods before the real one, by SEQ: the store's times of records from different VMs
    # arrive in any order (a bot's `cmd` of the real flood may be stored before the botmaster's `sent`).
    sent = flood_sent(run)
    real = {r.seq for r in run.rounds if r.cmd == "flood" and r.sent is not None and r.sent == sent}
    earlier = {r.seq for r in run.rounds if r.cmd == "flood" and r.sent is not None and sent is not None
               and r.sent < sent} - real
    early = [c for c in run.commands if c.cmd == "flood" and c.sender == names.botmaster_nick
             and (c.seq in earlier if c.seq is not None else sent is None or c.at < sent)]
    into, bots = _containment(run)
    ok = bool(run.bots) and refusers >= set(run.bots) and not early and _quiet(into, bots)
    return Check("outside target", ok, _containment_figure(refusers, run, len(early), into, bots),
                 f"refused by every bot, no cmd, attack < {QUIET:g} Mbit/s")


def _exit(summary: Summary, exit_code: int | None) -> Check:
    figure = {True: "reached exit", False: "ended without reaching exit", None: "no end recorded"}[
        summary.reached_exit]
    if exit_code is not None:
        figure += f", nestbed run exited {exit_code}"
    return Check("scenario exit", summary.reached_exit is True and exit_code in (None, 0),
                 figure + f" after {summary.seconds:.0f} s", "the scenario reaches exit, nestbed run exits 0")


def _few(nodes: list[str], count: int = 5) -> str:
    return ", ".join(nodes[:count]) + (f" (+{len(nodes) - count})" if len(nodes) > count else "")


# -- summary.txt ----------------------------------------------------------------------------------------------
def text(summary: Summary) -> str:
    """summary.txt: the figures, then the checks (PASS/FAIL, figure, goal)."""
    def phased(values: dict[str, float | None], digits: int = 2) -> str:
        return "  ".join(f"{p} {'-' if values[p] is None else f'{values[p]:.{digits}f}'}" for p in PHASES)
    servers = ", ".join(f"{s} {n}" for s, n in summary.joined_by_server.items()) or "none"
    reasons = ", ".join(f"{r} {n}" for r, n in summary.refused_by_reason.items())
    rtt = summary.command_rtt_ms
    rows = [
        ("bots", f"{summary.bots} ({summary.bots_joined} joined: {servers}"
                 + (f"; the last after {summary.join_seconds:.1f} s)" if summary.join_seconds is not None else ")")),
        ("legit goodput, Mbit/s", phased(summary.legit_mbps)),
        ("attack into target, Mbit/s", phased(summary.attack_mbps_at_target, 3)),
        ("all into target, Mbit/s", phased(summary.into_target_mbps)),
        ("all out of target, Mbit/s", phased(summary.out_of_target_mbps)),
        ("bottleneck", _fmt(summary.capacity_mbps, "Mbit/s", 1) + f" (counters: {summary.counters})"),
        ("attack sent (bots' reports)", _fmt(summary.attack_sent_mbps, "Mbit/s")),
        ("command round trip", f"p50 {_fmt(rtt['p50'], 'ms', 1)}, max {_fmt(rtt['max'], 'ms', 1)} "
                               f"({summary.ping_answered} answered the ping)"),
        ("refused", f"{summary.refused}" + (f" ({reasons})" if reasons else "")),
        ("recovery", _fmt(summary.recovery_seconds, "s", 1) + " after stop"),
        ("scenario", f"{summary.seconds:.1f} s" + (f", demo {summary.seconds_total:.0f} s"
                                                  if summary.seconds_total is not None else "")),
        ("events (s)", "  ".join(f"{n}={t:.1f}" for n, t in summary.events.items())),
        ("clock", summary.clock),
    ]
    width = max(len(label) for label, _ in rows)
    lines = ["CATCH demo report", ""]
    for label, value in rows:
        wrapped = textwrap.wrap(value, TEXT_WIDTH - width - 4) or [""]
        lines += [f"  {label if i == 0 else '':<{width}}  {part}" for i, part in enumerate(wrapped)]
    lines += ["", "checks" + ("" if summary.ok else " (some FAILED)")]
    name_width = max((len(c.name) for c in summary.checks), default=0)
    for check in summary.checks:
        lines.append(f"  {'PASS' if check.ok else 'FAIL'}  {check.name:<{name_width}}  {check.figure}")
        lines.append(f"        {'':<{name_width}}  goal: {check.goal}")
    return "\n".join(lines) + "\n"
