"""`nestbed plot`: rates from cumulative counter samples (resets, missing samples, hosts sampled at different
moments, attack vs legitimate), the busiest links/LANs, and the PNGs the command writes from a store."""
from __future__ import annotations

import struct
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nestbed.agent.store import CounterRow, Store
from nestbed.cli.main import app, main
from nestbed.control import traffic
from nestbed.control.traffic import Grid, Sample, Segment
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_790_000_000.0
MBIT = 1_000_000 / 8          # bytes per second of 1 Mbit/s
TOPOLOGY = """\
    name: lab
    nodes: {a: {}, r: {}, b: {}, atk: {}}
    links:
      - {ends: [a, r], bandwidth: 10Mbit}
    lans:
      lan0: {members: [r, b, atk], bandwidth: 100Mbit}
    """


SCENARIO = [  # (seconds after T0, source, name, data)
    (1, "scenario", "stream main started", {"kind": "stream-start", "stream": "main"}),
    (5, "scenario", "client.startClient", {"kind": "event", "stream": "main", "agent": "client",
                                           "method": "startClient", "nodes": 1, "true": 1}),
    (10, "mailbox", "serverReady", {"node": "b"}),
    (20, "scenario", "floodNow", {"kind": "trigger", "stream": "attack", "item": 2, "nodes": 1, "true": 1}),
    (20.01, "scenario", "floodNow", {"kind": "satisfied", "stream": "main"}),
    (40, "scenario", "flooder.stopFlood", {"kind": "event", "stream": "attack", "agent": "flooder",
                                           "method": "stopFlood"}),
    (41, "agent", "not drawn", {}),
    (45, "scenario", "stream attack ended", {"kind": "stream-end", "stream": "attack"}),
    (58, "scenario", "end", {"kind": "end", "reason": "exit", "reached_exit": True}),
]


def lab_plan():
    return compile_plan(load_topology_text(textwrap.dedent(TOPOLOGY), "lab.yaml"))


def iface(plan, segment: str, node: str) -> str:
    return next(i for n, i, _ in next(s for s in plan.segments if s.name == segment).members if n == node)


def build_store(directory: Path, seconds: int = 60, with_plan: bool = True) -> Path:
    """A store of 1 Hz samples with known rates:

    link0: a sends 1 Mbit/s (its counter reset at t=30), r sends 0.5 Mbit/s (its sample at t=20 is missing);
    lan0:  b sends 2 Mbit/s; atk floods 8 Mbit/s of DSCP-marked traffic from t=20 to t=40; r sends nothing;
    every node's ctl0 and lo carry traffic that is not the experiment's.
    The scenario's events (as the engine stores them) and a mailbox event: SCENARIO."""
    plan = lab_plan()
    directory.mkdir(parents=True, exist_ok=True)
    if with_plan:
        (directory / "plan.json").write_text(plan.to_json())
    store = Store(directory / "control.sqlite")
    a_link, r_link = iface(plan, "link0", "a"), iface(plan, "link0", "r")
    b_lan, atk_lan, r_lan = iface(plan, "lan0", "b"), iface(plan, "lan0", "atk"), iface(plan, "lan0", "r")
    for t in range(seconds + 1):
        attack = 8 * MBIT * min(max(t - 20, 0), 20)
        a_sent = 1 * MBIT * (t if t < 30 else t - 29)          # reset just after t=29: counts from zero again
        rows = [CounterRow("a", a_link, 0, int(a_sent), 0, 0),
                CounterRow("b", b_lan, 0, int(2 * MBIT * t), 0, 0),
                CounterRow("atk", atk_lan, 0, int(attack), 0, 0, attack_tx_bytes=int(attack)),
                CounterRow("r", r_lan, 0, 0, 0, 0)]
        if t != 20:
            rows.append(CounterRow("r", r_link, 0, int(0.5 * MBIT * t), 0, 0))
        rows += [CounterRow(n, "ctl0", 0, 99 * 10**6 * t, 0, 0) for n in ("a", "b")]
        rows += [CounterRow("a", "lo", 0, 77 * 10**6 * t, 0, 0)]
        store.add_counters(T0 + t, rows)
    for at, source, name, data in SCENARIO:
        store.add_event(source, name, data, created=T0 + at)
    store.close()
    return directory / "control.sqlite"


def computed(path: Path, since: float | None = None) -> traffic.Traffic:
    db = traffic.connect(path)
    try:
        samples, first = traffic.load_samples(db, since)
    finally:
        db.close()
    result = traffic.traffic(samples, traffic.segments_of(lab_plan()), first)
    assert result is not None
    return result


# -- rates ------------------------------------------------------------------------------------------------------
def test_intervals_take_a_counter_that_went_down_as_counted_since_a_reset() -> None:
    samples = [Sample(0, 100, 10), Sample(1, 200, 20), Sample(2, 50, 5), Sample(3, 150, 5)]
    assert [(i.start, i.end, i.bytes, i.attack) for i in traffic.intervals(samples)] == [
        (0, 1, 100, 10), (1, 2, 50, 5), (2, 3, 100, 0)]


def test_intervals_sort_samples_and_skip_duplicate_times() -> None:
    samples = [Sample(2, 300), Sample(0, 100), Sample(1, 200), Sample(1, 200)]
    assert [(i.start, i.end, i.bytes) for i in traffic.intervals(samples)] == [(0, 1, 100), (1, 2, 100)]


def test_attack_is_never_more_than_what_was_sent() -> None:
    (interval,) = traffic.intervals([Sample(0, 1000, 0), Sample(1, 1100, 500)])
    assert interval.attack == 100


def test_link_rate_is_both_ends_tx_through_a_reset_and_a_missing_sample(tmp_path: Path) -> None:
    result = computed(build_store(tmp_path))
    link = next(s for s in result.segments if s.name == "link0")
    assert link.step == 1 and link.start == T0 and len(link.total) == 60
    for index, rate in enumerate(link.total):
        assert rate == pytest.approx(1.5e6), index          # 1 + 0.5 Mbit/s in every second, reset and gap included
    assert link.attack == [0.0] * 60
    assert link.bytes_total == pytest.approx(1.5 * MBIT * 60)


def test_lan_rate_splits_attack_from_legitimate(tmp_path: Path) -> None:
    result = computed(build_store(tmp_path))
    lan = next(s for s in result.segments if s.name == "lan0")
    for second in range(60):
        attacked = 20 <= second < 40
        assert lan.total[second] == pytest.approx(10e6 if attacked else 2e6), second
        assert lan.attack[second] == pytest.approx(8e6 if attacked else 0), second
        assert lan.legitimate[second] == pytest.approx(2e6), second
    assert lan.peak == pytest.approx(10e6)
    assert lan.bytes_attack == pytest.approx(8 * MBIT * 20)


def test_segments_come_busiest_first_and_the_total_leaves_out_control_and_loopback(tmp_path: Path) -> None:
    result = computed(build_store(tmp_path))
    assert [s.name for s in result.segments] == ["lan0", "link0"]
    assert [s.name for s in result.busiest(1)] == ["lan0"]
    assert result.overall.total[0] == pytest.approx(3.5e6)
    assert result.overall.total[25] == pytest.approx(11.5e6)
    assert result.overall.bytes_total == pytest.approx(sum(s.bytes_total for s in result.segments))
    assert result.first == T0 and result.end == T0 + 60


def test_since_keeps_the_last_seconds_only(tmp_path: Path) -> None:
    result = computed(build_store(tmp_path), since=10)
    lan = next(s for s in result.segments if s.name == "lan0")
    assert lan.start == T0 + 50 and len(lan.total) == 10
    assert lan.total == [pytest.approx(2e6)] * 10
    assert result.first == T0                                   # the time origin stays the experiment's start


def test_interfaces_sampled_at_different_moments_add_up_on_one_grid() -> None:
    samples = {("a", "eth0"): [Sample(t, int(1000 * t)) for t in range(11)],
               ("b", "eth0"): [Sample(t + 0.5, int(3000 * t)) for t in range(11)]}
    result = traffic.traffic(samples, [Segment("lan0", "lan", (("a", "eth0"), ("b", "eth0")))])
    assert result is not None
    (lan,) = result.segments
    assert lan.total[1:-1] == [pytest.approx(4000 * 8)] * (len(lan.total) - 2)


def test_a_segment_without_samples_is_gaps_not_zeros() -> None:
    samples = {("a", "eth0"): [Sample(0, 0), Sample(1, 10), Sample(2, 20)]}
    result = traffic.traffic(samples, [Segment("used", "link", (("a", "eth0"),)),
                                       Segment("idle", "link", (("x", "eth0"),))])
    assert result is not None
    idle = next(s for s in result.segments if s.name == "idle")
    assert idle.total == [None, None] and idle.legitimate == [None, None] and idle.peak == 0


def test_long_experiments_get_wider_bins_and_keep_every_byte() -> None:
    samples = {("a", "eth0"): [Sample(t, 100 * t * t) for t in range(5001)]}
    result = traffic.traffic(samples, [Segment("link0", "link", (("a", "eth0"),))])
    assert result is not None
    (link,) = result.segments
    assert len(link.total) <= traffic.MAX_BINS and link.step == pytest.approx(5000 / traffic.MAX_BINS)
    assert sum(r * link.step / 8 for r in link.total) == pytest.approx(100 * 5000 ** 2)


def test_nothing_to_compute_from_fewer_than_two_samples() -> None:
    assert traffic.traffic({}, None) is None
    assert traffic.traffic({("a", "eth0"): [Sample(0, 5)]}, None) is None


def test_grid_covers_the_span() -> None:
    grid = Grid.covering(10.0, 20.0, 1.0)
    assert (grid.start, grid.step, grid.bins) == (10.0, 1.0, 10)
    assert Grid.covering(0.0, 0.5, 1.0).bins == 1


def test_events_drawn_are_stream_starts_events_triggers_the_end_and_mailbox_events(tmp_path: Path) -> None:
    from nestbed.cli.traffic_png import events_from_rows
    db = traffic.connect(build_store(tmp_path))
    try:
        rows = traffic.load_events(db)
    finally:
        db.close()
    drawn = [(e.at, e.kind, e.label) for e in events_from_rows(rows, T0)]
    assert drawn == [(1, "stream", "stream main"), (5, "event", "client.startClient"),
                     (10, "mailbox", "serverReady"), (20, "trigger", "trigger floodNow"),
                     (40, "event", "flooder.stopFlood"), (58, "end", "end (exit)")]
    legacy = [(T0, "scenario", "triggerFired", '{"trigger": "go"}'), (T0, "scenario", "streamStart", "null"),
              (T0, "scenario", "x" * 50, "not json")]
    assert [(e.kind, e.label) for e in events_from_rows(legacy, T0)] == [
        ("trigger", "triggerFired (go)"), ("stream", "streamStart"), ("event", "x" * 29 + "…")]


# -- the command ------------------------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["nestbed", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_plot_a_copied_store_writes_an_overview_and_a_png_per_segment(tmp_path: Path) -> None:
    store = build_store(tmp_path / "copy")
    code, out = run("plot", "--store", str(store), "-o", str(tmp_path / "plots"))
    assert code == 0, out
    names = ["overview.png", "lan-lan0.png", "link-link0.png"]
    assert out.split() == [word for name in names for word in ("wrote", str(tmp_path / "plots" / name))]
    for name in names:
        path = tmp_path / "plots" / name
        assert png_size(path) == (1100, 480)
        assert path.stat().st_size > 20_000


def test_plot_by_name_reads_the_experiments_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    build_store(tmp_path / "state" / "lab")
    monkeypatch.chdir(tmp_path)
    code, out = run("plot", "lab", "--since", "30")
    assert code == 0, out
    assert (tmp_path / "lab-plots" / "link-link0.png").stat().st_size > 20_000
    assert "wrote lab-plots/overview.png" in out


def test_many_segments_are_drawn_as_small_multiples_of_the_busiest(tmp_path: Path) -> None:
    store = Store(tmp_path / "control.sqlite")             # no plan.json beside it: one series per interface
    for t in range(11):
        store.add_counters(T0 + t, [CounterRow(f"n{i}", "eth0", 0, 1000 * i * t, 0, 0) for i in range(15)]
                           + [CounterRow("n0", "ctl0", 0, 10**9 * t, 0, 0)])
    store.close()
    code, out = run("plot", "--store", str(tmp_path / "control.sqlite"), "-o", str(tmp_path / "plots"))
    assert code == 0, out
    assert "no plan.json for this store: traffic drawn per interface" in out
    assert "15 interfaces: drew the 12 busiest (they carried 97% of the traffic)" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["overview.png", "segments.png"]
    width, height = png_size(tmp_path / "plots" / "segments.png")
    assert width >= 1200 and height >= 900


def test_nothing_to_plot_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    Store(tmp_path / "control.sqlite").close()
    code, out, err = run_main(capsys, monkeypatch, "plot", "--store", str(tmp_path / "control.sqlite"))
    assert code == 1 and out == ""
    assert err.strip() == "nestbed: no counter samples yet: is the experiment up with its host agent?"
    assert not (tmp_path / "control-plots").exists()


def test_an_experiment_without_a_store_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    (tmp_path / "lab").mkdir()
    code, _, err = run_main(capsys, monkeypatch, "plot", "lab")
    assert code == 1 and "no counter samples yet" in err and len(err.strip().splitlines()) == 1


def test_bad_stores_and_arguments_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes.txt").write_text("not a database at all, just some words\n" * 50)
    code, _, err = run_main(capsys, monkeypatch, "plot", "--store", str(tmp_path / "notes.txt"))
    assert code == 1 and "is not a nestbed control store" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main(capsys, monkeypatch, "plot", "--store", str(tmp_path / "missing.sqlite"))
    assert code == 1 and "no store" in err and not (tmp_path / "missing.sqlite").exists()
    code, _, err = run_main(capsys, monkeypatch, "plot")
    assert code == 2 and "--store" in err
