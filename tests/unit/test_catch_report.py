"""The CATCH report (control/catchrun.py, control/catchreport.py, cli/catch_report.py, cli/catch_png.py): a
synthetic stored run with known rates gives known figures, every check passes on it, and each way of breaking
the run fails exactly the checks it should."""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from nestbed.agent.store import CounterRow, Store
from nestbed.cli.catch_report import write_report
from nestbed.control import catchreport, catchrun
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_790_000_000.0
MBIT = 1e6
TOPOLOGY = """\
    name: catch
    nodes:
      irc1: {}
      irc2: {}
      bota: {count: 2}
      botb: {count: 2}
      botmaster: {}
      client: {count: 2}
      r1: {router: true}
      r2: {router: true}
      rt: {router: true}
      target: {}
    links:
      - {name: bottleneck, ends: [rt, target], bandwidth: 10Mbit, queue: 100}
      - {ends: [r1, rt]}
      - {ends: [r2, r1]}
    lans:
      lan-a: {members: [irc1, bota, botmaster, r1]}
      lan-b: {members: [irc2, botb, r2]}
      lan-c: {members: [client, rt]}
    """
BOTS = ("bota-0", "bota-1", "botb-0", "botb-1")
SERVER = {"bota-0": "irc1", "bota-1": "irc1", "botb-0": "irc2", "botb-1": "irc2"}
TRIGGER_TIMES = {"serversStarted": 1, "linked": 2, "botsStarted": 3, "joined": 5.5, "webStarted": 6, "baseline": 8,
                 "forged": 14, "pinged": 16, "flooding": 28, "stopped": 48, "recovered": 68, "reported": 70}
END = 71.0
FLOOD_SENT = 27.8
GUEST_CLOCK_SKEW = 3600.0       # the programs' own `time` is an hour off: the report must not use it


@dataclass(frozen=True)
class Profile:
    """A run, and the knobs that break it one way each."""
    joined: tuple[str, ...] = BOTS          # bots that joined (the others leave no record at all)
    rtts: tuple[float, ...] = (10.0, 20.0, 30.0, 250.0)
    leak: float = 0.0                       # Mbit/s of attack into the target from 15 s to 20 s
    attack: float = 8.0                     # Mbit/s of attack into the target during [28, 48)
    during_every: float = 0.5               # s between legitimate transfers during the flood (before: 0.1)
    recover_at: float | None = 51.0         # back to one transfer every 0.1 s; None: never
    reached_exit: bool = True
    marked: bool = True                     # the attack counters count DSCP-8 bytes
    target_sampled: bool = True             # else only the router's end (a physical target)
    target_counts_attack: bool = True       # else its counters see no DSCP (a qemu target's boot agent)
    forged_seq: int = 1                     # the forged flood's seq (4: the same as the real flood's)
    flood_cmd_at: float = 27.85             # when the bots' `cmd` of the real flood is stored


def plan():
    return compile_plan(load_topology_text(textwrap.dedent(TOPOLOGY), "catch.yaml"))


def cumulative(t: float, pieces: list[tuple[float, float, float]]) -> int:
    """Bytes sent by time t at `bit/s` during each [start, end)."""
    return round(sum(rate / 8 * max(0.0, min(t, end) - start) for start, end, rate in pieces if t > start))


def every(start: float, end: float, step: float) -> list[float]:
    times, k = [], 0
    while (t := start + k * step) < end:
        times.append(t)
        k += 1
    return times


def transfers(profile: Profile) -> list[tuple[float, int, bool]]:
    """(completion, bytes, ok): 8 Mbit/s before, 1.6 during (plus one failure), after: 1.6 until recover_at,
    then 105 kB every 0.1 s (8.4 Mbit/s)."""
    items = [(t, 100_000, True) for t in every(8.05, 28, 0.1)]
    items += [(t, 100_000, True) for t in every(28 + profile.during_every / 2, 48, profile.during_every)]
    items.append((40.0, 0, False))
    slow_until = profile.recover_at or 68
    items += [(t, 100_000, True) for t in every(48.25, slow_until, 0.5)]
    if profile.recover_at is not None:
        items += [(t, 105_000, True) for t in every(profile.recover_at + 0.05, 68, 0.1)]
    return items


def build(directory: Path, profile: Profile = Profile()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "control.sqlite"
    store = Store(path)
    at = lambda seconds: T0 + seconds          # noqa: E731

    def record(agent: str, kind: str, node: str, seconds: float, data: dict) -> None:
        store.add_record(agent, host="local", node=node, kind=kind, created=at(seconds),
                         data={**data, "time": at(seconds) + GUEST_CLOCK_SKEW})

    # an earlier `nestbed run` of the same experiment: not this run's
    store.add_event("scenario", "stream main started", {"kind": "stream-start", "stream": "main"}, at(-3600))
    store.add_event("scenario", "flooding", {"kind": "trigger", "stream": "main"}, at(-3590))
    store.add_event("scenario", "scenario error", {"kind": "end", "reached_exit": False}, at(-3580))
    record("bots", "q9bot", "bota-0", -3585, {"event": "refused", "cmd": "flood", "from": "eve", "reason": "malformed"})

    store.add_event("scenario", "stream main started", {"kind": "stream-start", "stream": "main"}, at(0))
    for name, seconds in TRIGGER_TIMES.items():
        store.add_event("scenario", name, {"kind": "trigger", "stream": "main", "nodes": 1, "true": 1}, at(seconds))
        store.add_event("scenario", name, {"kind": "satisfied", "stream": "other"}, at(seconds + 0.01))
    store.add_event("scenario", "scenario exit" if profile.reached_exit else "scenario timeout",
                    {"kind": "end", "reason": "exit", "reached_exit": profile.reached_exit}, at(END))

    for server in ("irc1", "irc2"):
        record("servers", "ircd", server, 1, {"event": "started", "server": f"{server}.catch"})
    nicks = {bot: f"q9bot-{i}" for i, bot in enumerate(BOTS)}
    for i, bot in enumerate(b for b in BOTS if b in profile.joined):
        nick = nicks[bot]
        store.add_event("mailbox", "botJoined", {"nick": nick, "server": SERVER[bot]}, at(3.5 + i * 0.5))
        record("bots", "q9bot", bot, 3.5 + i * 0.5, {"event": "joined", "server": SERVER[bot], "nick": nick,
                                                     "channel": "#catch"})
        record("bots", "q9bot", bot, 10.1, {"event": "refused", "cmd": "flood", "from": "mallory",
                                            "reason": "not the botmaster"})
        record("bots", "q9bot", bot, 12.1, {"event": "refused", "cmd": "flood", "from": "botmaster",
                                            "reason": "target outside the experiment"})
        for seconds, cmd, seq in ((15.1, "ping", 3), (profile.flood_cmd_at, "flood", 4), (47.92, "stop", 5),
                                  (69.1, "report", 6)):
            record("bots", "q9bot", bot, seconds, {"event": "cmd", "cmd": cmd, "seq": seq, "from": "botmaster"})
        record("bots", "q9bot", bot, 69.1, {"event": "report", "packets": 5000, "bytes": 5_000_000})

    def master(seconds: float, cmd: str, seq: int, answered: dict) -> None:
        record("master", "botmaster", "botmaster", seconds, {"event": "sent", "cmd": cmd, "seq": seq,
                                                             "text": f"!{cmd} {seq}"})
        record("master", "botmaster", "botmaster", seconds + 0.15, {"event": "replies", "cmd": cmd, "seq": seq,
                                                                    "expected": len(BOTS), "answered": answered})
    joined = [b for b in BOTS if b in profile.joined]
    master(10, "flood", profile.forged_seq, {})
    master(12, "flood", 2, {})
    master(15, "ping", 3, {nicks[b]: {"rtt_ms": rtt, "text": "!pong 3"} for b, rtt in zip(joined, profile.rtts)})
    master(FLOOD_SENT, "flood", 4, {nicks[b]: {"rtt_ms": 12.0, "text": "!ok 4"} for b in joined})
    master(47.9, "stop", 5, {nicks[b]: {"rtt_ms": 14.0, "text": "!ok 5"} for b in joined})

    for i, (seconds, size, ok) in enumerate(transfers(profile)):
        data = {"server": "target", "size": 100_000, "bytes": size, "seconds": 0.08, "status": 200 if ok else 0}
        record("legit", "http_client", f"client-{i % 2}", seconds, data if ok else {**data, "error": "timed out"})

    attack = [(28, 48, profile.attack * MBIT), (15, 20, profile.leak * MBIT)]
    into = [(0, 100, 0.2 * MBIT)] + attack                         # the clients' requests and ACKs, and the flood
    out = [(0, 28, 9 * MBIT), (28, 48, 2 * MBIT), (48, 100, 9 * MBIT)]
    bot_attack = [(28, 48, 2 * MBIT)]
    for t in every(0.5, END + 1, 1.0):                              # 1 Hz, half a second off the events
        marked = profile.marked
        rows = [CounterRow("rt", "eth0", 0, cumulative(t, into), 0, 0,
                           attack_tx_bytes=cumulative(t, attack) if marked else 0)]
        if profile.target_sampled:
            rows.append(CounterRow("target", "eth0", cumulative(t, into), cumulative(t, out), 0, 0,
                                   attack_rx_bytes=cumulative(t, attack)
                                   if marked and profile.target_counts_attack else 0))
        for bot in BOTS:
            rows.append(CounterRow(bot, "eth0", 0, cumulative(t, [(0, 100, 0.1 * MBIT)] + bot_attack), 0, 0,
                                   attack_tx_bytes=cumulative(t, bot_attack) if marked else 0))
            rows.append(CounterRow(bot, "ctl0", 0, cumulative(t, [(0, 100, 50 * MBIT)]), 0, 0))
        store.add_counters(at(t), rows)
    store.close()
    return path


def summary_of(tmp_path: Path, profile: Profile = Profile(), **options) -> catchreport.Summary:
    store = catchrun.open_store(build(tmp_path / "run", profile))
    try:
        run = catchrun.load(store, plan())
    finally:
        store.close()
    return catchreport.summarize(run, **options)


def failing(summary: catchreport.Summary) -> set[str]:
    return {c.name for c in summary.checks if not c.ok}


# -- the figures ----------------------------------------------------------------------------------------------
def test_a_good_run_gives_its_known_figures(tmp_path):
    summary = summary_of(tmp_path)
    assert (summary.bots, summary.bots_joined, summary.joined_by_server) == (4, 4, {"irc1": 2, "irc2": 2})
    assert summary.join_seconds == pytest.approx(2.0)          # the last join at 5.0 s, bots started at 3 s
    assert summary.legit_mbps == pytest.approx({"before": 8.0, "during": 1.6, "after": 7.38})
    assert summary.legit_transfers["during"] == {"count": 41, "failed": 1, "seconds_p50": pytest.approx(0.08)}
    assert summary.attack_mbps_at_target == pytest.approx({"before": 0.0, "during": 8.0, "after": 0.0})
    assert summary.into_target_mbps == pytest.approx({"before": 0.2, "during": 8.2, "after": 0.2})
    assert summary.out_of_target_mbps == pytest.approx({"before": 9.0, "during": 2.0, "after": 9.0})
    assert summary.capacity_mbps == 10.0
    assert summary.attack_sent_mbps == pytest.approx(8.0)      # 4 bots × 5 MB over the 20-s flood
    assert summary.command_rtt_ms == {"p50": 25.0, "max": 250.0}
    assert summary.ping_answered == 4
    assert summary.refused == 8
    assert summary.refused_by_reason == {"not the botmaster": 4, "target outside the experiment": 4}
    assert summary.recovery_seconds == pytest.approx(2.5)
    assert summary.seconds == pytest.approx(END)
    assert summary.reached_exit is True
    assert summary.events == pytest.approx({k: float(v) for k, v in TRIGGER_TIMES.items()})
    assert summary.counters == "target eth0 rx"


def test_every_check_passes_on_a_good_run(tmp_path):
    summary = summary_of(tmp_path, seconds_total=150.0, exit_code=0)
    assert [c.name for c in summary.checks] == [
        "bots joined", "ping answered", "command round trip", "attack during flood", "no attack outside flood",
        "legit during flood", "legit recovery", "forged command", "outside target", "scenario exit", "total time"]
    assert failing(summary) == set() and summary.ok
    figures = {c.name: c.figure for c in summary.checks}
    assert figures["bots joined"] == "4/4 in 2.0 s; irc1 2, irc2 2"
    assert figures["attack during flood"].startswith("8.00 Mbit/s")
    assert "2.5 s after stop" in figures["legit recovery"]


@pytest.mark.parametrize("forged_seq", [1, 4])
def test_the_phase_windows_come_from_the_triggers_and_the_flood_sent(tmp_path, forged_seq):
    store = catchrun.open_store(build(tmp_path / "run", Profile(forged_seq=forged_seq)))
    try:
        run = catchrun.load(store, plan())
    finally:
        store.close()
    windows = {k: (round(v[0] - T0, 3), round(v[1] - T0, 3)) if v else None
               for k, v in catchreport.phases(run).items()}
    assert windows == {"before": (8, 28), "during": (28, 48), "after": (48, 68), "attack_before": (8, FLOOD_SENT)}
    assert run.bots == list(BOTS) and run.servers == ["irc1", "irc2"]
    assert sorted(j.at - T0 for j in run.joined.values()) == pytest.approx([3.5, 4.0, 4.5, 5.0])   # store times


def test_a_bot_names_its_server_by_node_address_or_server_name():
    lab = plan()
    address = next(s for s in lab.segments if s.name == "lan-b").members[0][2].split("/")[0]
    assert [catchrun.server_node(lab, s) for s in ("irc1", address, "irc1.catch", "elsewhere")] == \
        ["irc1", "irc2", "irc1", "elsewhere"]


def test_the_last_recovery_window_boundary_is_exact():
    """20 transfers of 100 kB in [s, s + 2): exactly 8 Mbit/s, and 80 % of 8 Mbit/s is reached by 16 of them."""
    at = [catchrun.Transfer("c", 100.05 + 0.1 * k, 0.1, 100_000, True) for k in range(40)]
    assert catchreport.goodput(at, 100, 102) == pytest.approx(8 * MBIT)
    assert catchreport.recovery(at, (100.0, 110.0), 8 * MBIT) == 0.0
    assert catchreport.recovery(at, (100.0, 101.5), 8 * MBIT) is None        # no whole window in the phase
    assert catchreport.recovery(at, (100.0, 110.0), None) is None


# -- one way broken each --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("profile", "options", "broken"), [
    (Profile(joined=BOTS[:3]), {}, {"bots joined", "ping answered", "forged command", "outside target"}),
    (Profile(leak=1.0), {}, {"no attack outside flood", "forged command", "outside target"}),
    (Profile(recover_at=None), {}, {"legit recovery"}),
    (Profile(rtts=(300.0, 310.0, 320.0, 330.0)), {}, {"command round trip"}),
    (Profile(attack=12.0), {}, {"attack during flood"}),
    (Profile(attack=3.0), {}, {"attack during flood"}),
    (Profile(during_every=0.1), {}, {"legit during flood"}),
    (Profile(reached_exit=False), {}, {"scenario exit"}),
    (Profile(), {"exit_code": 1}, {"scenario exit"}),
    (Profile(), {"seconds_total": 181.0}, {"total time"}),
], ids=["a bot never joined", "attack before the flood", "no recovery", "slow round trips", "attack over the cap",
        "attack too weak", "legit unharmed", "no exit", "run failed", "demo too slow"])
def test_a_run_broken_one_way_fails_exactly_its_checks(tmp_path, profile, options, broken):
    summary = summary_of(tmp_path, profile, **options)
    assert failing(summary) == broken
    assert not summary.ok


def test_the_figures_of_broken_runs(tmp_path):
    missing = summary_of(tmp_path / "a", Profile(joined=BOTS[:3]))
    assert (missing.bots, missing.bots_joined, missing.ping_answered) == (4, 3, 3)
    assert "never joined: botb-1" in next(c.figure for c in missing.checks if c.name == "bots joined")
    leaking = summary_of(tmp_path / "b", Profile(leak=1.0))
    assert leaking.attack_mbps_at_target["before"] == pytest.approx(5 / 19)     # 5 Mbit over the 19 s sampled
    stuck = summary_of(tmp_path / "c", Profile(recover_at=None))
    assert stuck.recovery_seconds is None and stuck.legit_mbps["after"] == pytest.approx(1.6)
    slow = summary_of(tmp_path / "d", Profile(rtts=(300.0, 310.0, 320.0, 330.0)))
    assert slow.command_rtt_ms == {"p50": 315.0, "max": 330.0}


def test_without_attack_counters_the_check_says_why(tmp_path):
    summary = summary_of(tmp_path, Profile(marked=False))
    check = next(c for c in summary.checks if c.name == "attack during flood")
    assert not check.ok and summary.attack_mbps_at_target["during"] == 0.0
    assert "no DSCP-8 byte counted" in check.figure and "20.0 MB sent" in check.figure


def test_a_target_nobody_samples_is_seen_from_the_other_end(tmp_path):
    summary = summary_of(tmp_path, Profile(target_sampled=False))
    assert summary.counters == "rt eth0 tx"
    assert summary.attack_mbps_at_target == pytest.approx({"before": 0.0, "during": 8.0, "after": 0.0})


def test_a_bots_cmd_stored_before_the_botmasters_sent_is_not_an_outside_flood_obeyed(tmp_path):
    """Records of different VMs reach the store in any order: the real flood's `cmd` may come before `sent`."""
    summary = summary_of(tmp_path, Profile(flood_cmd_at=FLOOD_SENT - 0.3))
    check = next(c for c in summary.checks if c.name == "outside target")
    assert check.ok and "obeyed 0" in check.figure, check


def test_a_target_that_cannot_count_attack_is_seen_from_the_other_end(tmp_path):
    summary = summary_of(tmp_path, Profile(target_counts_attack=False))
    assert summary.counters == "rt eth0 tx"
    assert summary.attack_mbps_at_target == pytest.approx({"before": 0.0, "during": 8.0, "after": 0.0})


# -- the files --------------------------------------------------------------------------------------------------
def test_write_report_writes_the_summary_and_four_pngs(tmp_path):
    store = build(tmp_path / "run")
    out = tmp_path / "report"
    summary = write_report(store, plan(), out, seconds_total=120.0)
    assert summary.ok
    data = json.loads((out / "summary.json").read_text())
    assert {"bots", "bots_joined", "legit_mbps", "attack_mbps_at_target", "command_rtt_ms", "refused", "seconds",
            "checks", "ok"} <= set(data)
    assert set(data["legit_mbps"]) == {"before", "during", "after"}
    assert set(data["command_rtt_ms"]) == {"p50", "max"}
    assert data["checks"] and all(set(c) == {"name", "ok", "figure", "goal"} for c in data["checks"])
    assert data["bots"] == 4 and data["refused"] == 8 and data["ok"] is True
    text = (out / "summary.txt").read_text()
    assert text.count("PASS") == len(summary.checks) and "FAIL" not in text
    assert "legit goodput, Mbit/s" in text and "before 8.00  during 1.60  after 7.38" in text
    for name in ("joined.png", "target_traffic.png", "legit.png", "propagation.png"):
        content = (out / name).read_bytes()
        assert content.startswith(PNG_MAGIC) and len(content) > 10_000, name


def test_a_failed_check_is_shown_as_failed(tmp_path):
    summary = write_report(build(tmp_path / "run", Profile(recover_at=None)), plan(), tmp_path / "report")
    text = (tmp_path / "report" / "summary.txt").read_text()
    assert "FAIL  legit recovery" in text and "some FAILED" in text and not summary.ok
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["ok"] is False


def test_an_empty_store_still_gives_a_report_that_fails(tmp_path):
    Store(tmp_path / "control.sqlite").close()
    summary = write_report(tmp_path / "control.sqlite", plan(), tmp_path / "report")
    assert not summary.ok and summary.bots == 4 and summary.bots_joined == 0
    assert all((tmp_path / "report" / n).read_bytes().startswith(PNG_MAGIC) for n in catch_pngs())


def catch_pngs() -> tuple[str, ...]:
    from nestbed.cli.catch_png import NAMES
    return NAMES


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(ExperimentError, match="no store .*missing.sqlite"):
        write_report(tmp_path / "missing.sqlite", plan(), tmp_path / "out")
    (tmp_path / "junk.sqlite").write_text("not a database, just text " * 100)
    with pytest.raises(ExperimentError, match="not a nestbed control store"):
        write_report(tmp_path / "junk.sqlite", plan(), tmp_path / "out")
    store = build(tmp_path / "run")
    other = replace(plan(), segments=[s for s in plan().segments if s.name != "bottleneck"])
    with pytest.raises(ExperimentError, match="no link named 'bottleneck'"):
        write_report(store, other, tmp_path / "out")
    with pytest.raises(ExperimentError, match="cannot read the plan"):
        write_report(store, tmp_path / "nowhere.json", tmp_path / "out")
    (tmp_path / "plan.json").write_text(plan().to_json())
    assert write_report(store, tmp_path / "plan.json", tmp_path / "out").ok       # a plan.json works too
