"""An NS file's events (`$ns at`, Programs, link events, UDP CBR, event-sequence, event-timeline) as the AAL scenario
nestbed plays, with Emulab's meanings (/work/ns-research.md §8, the corpus's expected events in SOURCES.md); what
nestbed's agents cannot play is listed as ignored at its line, never an error of the topology."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nestbed.model import load_topology
from nestbed.model.nsfile import read
from nestbed.model.nsfile.convert import converted
from nestbed.model.nsfile.events import seconds
from nestbed.scenario import load_scenario_text
from nestbed.scenario.model import EventItem, WaitItem

pytestmark = pytest.mark.needs("tclsh")

CORPUS = Path(__file__).parent.parent / "data" / "ns"
WITH_EVENTS = ["es-cbr", "es-delay-agent", "es-red", "es-trafgen", "it-single", "nb-events"]
HEAD = "set ns [new Simulator]\nsource tb_compat.tcl\nset a [$ns node]\nset b [$ns node]\n" \
       "set link0 [$ns duplex-link $a $b 100Mb 0ms DropTail]\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "t.ns"
    path.write_text(HEAD + body + ("" if "$ns run" in body else "$ns run\n"))     # Emulab needs one run
    return path


def timeline(scenario: dict[str, Any]) -> list[tuple[float, str, str, dict[str, Any]]]:
    """(seconds, agent, method, args) of every played event, markers left out, in time order."""
    found = []
    for stream in scenario["eventstreams"].values():
        wait = stream[0]["triggers"][0].get("timeout")
        for item in stream[1:]:
            if item["type"] == "event" and "trigger" not in item:
                found.append((wait / 1000, item["agent"], item["method"], item.get("args", {})))
    return sorted(found, key=lambda t: t[0])


@pytest.mark.parametrize("name", WITH_EVENTS)
def test_each_corpus_file_with_events_converts_and_its_scenario_loads(name: str) -> None:
    path = CORPUS / f"{name}.ns"
    load_topology(path)                                 # the topology is unaffected by its events
    _, text = converted(path)
    assert text is not None
    scenario = load_scenario_text(text, f"{name}.aal")  # nestbed's own AAL loader accepts it
    assert scenario.warnings == []
    assert "ns_end" in scenario.streamstarts
    end = scenario.streams["ns_end"].items[0]
    assert isinstance(end, WaitItem) and end.triggers[0].target == "exit"
    done = {t.event for t in end.triggers[0].children}
    assert done == set(scenario.declared_triggers())   # the exit waits for every moment's marker
    played = [i for s in scenario.streams.values() for i in s.items if isinstance(i, EventItem) and not i.trigger]
    assert played


def test_es_cbr_is_emulabs_event_list() -> None:
    imported = read(CORPUS / "es-cbr.ns")
    assert imported.scenario is not None
    assert timeline(imported.scenario) == [
        (1.0, "cbr0", "startFlood", {}),
        (2.0, "ns_links", "linkDown", {"link": "link0"}),
        (4.0, "ns_links", "linkUp", {"link": "link0"}),
        (5.0, "cbr0", "stopFlood", {}),
        (20.0, "prog0", "startCommand", {"cmd": "/bin/ls -lt >& /tmp/foo"}),
        (21.0, "prog0", "stopCommand", {}),
        (22.0, "prog1", "startCommand", {"cmd": "/bin/sleep 60 >& /tmp/bar"}),
        (23.0, "prog1", "stopCommand", {}),
        (30.0, "ns_links", "linkDown", {"link": "link1"}),
        (35.0, "ns_links", "linkUp", {"link": "link1"}),
    ]
    agents, groups = imported.scenario["agents"], imported.scenario["groups"]
    # SOURCES.md: trafgen cbr0@n0 udp:5001 -> null0@n3:5001, PACKETSIZE=500 INTERVAL=0.005 (200 packets/s)
    assert agents["cbr0"] == {"group": "cbr0", "path": "flooder", "execargs": {
        "dst": "n3", "proto": "udp", "length": 500, "rate": 200.0, "dport": 5001, "sport": 5001}}
    assert groups["cbr0"] == ["n0"] and groups["prog0"] == ["n3"] and agents["prog0"]["path"] == "runshell"
    # cbr1 rides Agent/TCP: listed once, at its first event, never played
    assert [i for i in imported.ignored if "cbr1" in i] == ["line 65: cbr1 over Agent/TCP (nestbed has no "
                                                              "rate-limited TCP source)"]


def test_es_trafgen_rate_from_ns_bandwidth_units_and_sub_millisecond_times() -> None:
    imported = read(CORPUS / "es-trafgen.ns")
    assert imported.scenario is not None
    execargs = imported.scenario["agents"]["cbr0"]["execargs"]
    # rate_ 100Mbps, packetSize_ 1024, no interval_: 100e6 / (8 · 1024) packets per second
    assert execargs["rate"] == pytest.approx(100e6 / 8192, abs=0.001) and execargs["length"] == 1024
    assert execargs["dst"] == "consume" and execargs["dport"] == 5001
    assert [(t, m) for t, _, m, _ in timeline(imported.scenario)] == [(0.00001, "startFlood"), (0.005, "stopFlood")]


def test_es_delay_agent_link_changes_and_cbr_changes_in_units() -> None:
    imported = read(CORPUS / "es-delay-agent.ns")
    assert imported.scenario is not None
    events = timeline(imported.scenario)
    assert (12.0, "ns_links", "setLink", {"link": "link0", "delay": "0.3s"}) in events
    assert (15.0, "ns_links", "setLink", {"link": "link0", "bandwidth": 100_000_000}) in events
    # link1 has queue0's limit_ on n1's end (per-member shaping): its shaping events cannot play at run time
    assert [(t, m) for t, _, m, args in events if args.get("link") == "link1"] == [(4.0, "linkDown"), (8.0, "linkUp")]
    assert "line 93: link1 bandwidth 1Mb duplex (the segment has per-member shaping: set it in the file)" \
        in imported.ignored
    assert (15.0, "ns_links", "setLink", {"link": "link0", "bandwidth": 100_000_000}) in events
    changes = [a for t, agent, m, a in events if agent == "cbr0" and m == "setConfiguration"]
    # packetSize_ 64, then interval_ 128 (1/128 packet/s), then rate_ 15Mbps wins: 15e6 / (8 · 64)
    assert changes == [{"length": 64, "rate": 200.0}, {"length": 64, "rate": 0.008},
                       {"length": 64, "rate": pytest.approx(15e6 / 512, abs=0.001)}]
    # the flooder is running (started at 0.00001): it is started again once, after the moment's last change
    assert [m for t, agent, m, _ in events if agent == "cbr0" and t == 0.003] == ["setConfiguration"] * 3 + [
        "startFlood"]
    # RED queue events are not nestbed's: listed once
    assert sum("queue set" in i for i in imported.ignored) == 1


def test_event_sequence_runs_its_lines_in_order_at_its_start(tmp_path: Path) -> None:
    imported = read(CORPUS / "it-single.ns")
    assert imported.scenario is not None
    assert timeline(imported.scenario) == [
        (0.0, "prog_simple", "runCommand", {"cmd": "cd /tmp && touch prog_simple-ok", "timeout": 0.0}),
        (0.0, "prog_env", "runCommand", {"cmd": "@DATADIR@/testenv.sh", "timeout": 0.0}),
    ]
    stream = imported.scenario["eventstreams"]["at_0s_doit"]                         # the sequence's own lane
    assert [i.get("agent") for i in stream[1:3]] == ["prog_simple", "prog_env"]      # one after the other


def test_a_timeline_plays_from_its_start_and_one_never_started_is_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "set tl [$ns event-timeline]\n$tl at 1.5 \"$link0 down\"\n$ns at 10 \"$tl start\"\n"
                           "set tl2 [$ns event-timeline]\n$tl2 at 1 \"$link0 up\"\n")
    imported = read(path)
    assert imported.scenario is not None
    assert timeline(imported.scenario) == [(11.5, "ns_links", "linkDown", {"link": "link0"})]
    assert 'line 10: tl2 at 1 "link0 up" (timeline tl2 is never started in the file)' in imported.ignored
    it_traffic = read(CORPUS / "it-traffic-gen.ns")            # Emulab starts its tl from outside (tevc)
    assert it_traffic.scenario is None and any("never started" in i for i in it_traffic.ignored)


@pytest.mark.parametrize(("text", "expected"), [
    ("10", 10.0), ("0.00001", 0.00001), (".5", 0.5), ("1m30s", 90.0), ("2h", 7200.0), ("1h1m1s", 3661.0),
    ("10ms", None), ("-1", None), ("", None), ("swapout", None), ("1e3", None),
])
def test_times_as_emulab_reads_them(text: str, expected: float | None) -> None:
    assert seconds(text) == expected


def test_several_events_in_one_string_times_and_program_agents(tmp_path: Path) -> None:
    path = write(tmp_path, 'set p [$a program-agent -command "echo hi" -dir /tmp]\n'
                           'set q [new Program $ns]\n$q set node $b\n$q set command "sleep 5"\n'
                           '$ns at 1m30s "$link0 down ; $p start ;# a comment"\n'
                           '$ns at 2 "$q start"\n$ns at 3 "$q stop"\n$ns at 4 "$link0 plr 0.05"\n')
    imported = read(path)
    assert imported.scenario is not None
    assert timeline(imported.scenario) == [
        (2.0, "q", "startCommand", {"cmd": "sleep 5"}),
        (3.0, "q", "stopCommand", {}),
        (4.0, "ns_links", "setLink", {"link": "link0", "loss": 0.05}),
        (90.0, "ns_links", "linkDown", {"link": "link0"}),
        (90.0, "p", "startCommand", {"cmd": "cd /tmp && echo hi"}),
    ]
    assert imported.scenario["groups"]["p"] == ["a"] and imported.scenario["groups"]["q"] == ["b"]
    assert imported.ignored == []


def test_unknown_and_unsupported_events_are_ignored_with_their_lines(tmp_path: Path) -> None:
    path = write(tmp_path, '$ns at 1 "$link0 down"\n'           # line 6: played
                           '$ns at 10ms "$link0 up"\n'           # 7: not a time
                           '$ns at swapout "$link0 up"\n'        # 8
                           '$ns at 2 "nosuch start"\n'           # 9: names no object
                           '$ns at 3 "$a reboot"\n'              # 10: a node event
                           '$ns at 4 "$link0 trace start"\n'     # 11
                           '$ns at 5 "$ns linktest"\n'           # 12
                           '$ns at 6 "$link0 bandwidth 10Qb duplex"\n'   # 13: not NS's unit
                           '$ns at 7 "$link0"\n'                 # 14: no event type
                           '$ns at 8 "$link0 up"\n$ns at 9 "$link0 trace stop"\n')
    exp = load_topology(path)                                    # the topology is whole
    assert sorted(exp.nodes) == ["a", "b"] and len(exp.segments) == 1
    imported = read(path)
    assert imported.scenario is not None
    assert [m for _, _, m, _ in timeline(imported.scenario)] == ["linkDown", "linkUp"]
    ignored = imported.ignored
    assert "line 7: at 10ms (not a time: seconds or XhYmZs (Emulab: Invalid time spec))" in ignored
    assert "line 8: at swapout link0 up (nestbed has no swapout)" in ignored
    assert "line 9: at 2 nosuch start ('nosuch' names no object of the file)" in ignored
    assert "line 10: node reboot (an event nestbed's agents do not play)" in ignored
    assert "line 11: link trace (nestbed plays up, down, bandwidth, delay and plr)" in ignored
    assert "line 12: $ns linktest (an event nestbed's agents do not play)" in ignored
    assert any(i.startswith("line 13: link0 bandwidth 10Qb") for i in ignored)
    assert "line 14: at 7 link0 (Emulab: missing event type)" in ignored
    assert not any(i.startswith("line 16") for i in ignored)    # the same kind of line: listed once


def test_a_file_without_events_has_no_scenario_and_convert_writes_none(tmp_path: Path) -> None:
    path = write(tmp_path, "$ns run\n")
    assert read(path).scenario is None
    assert converted(path)[1] is None


def test_a_cbr_without_a_connected_sink_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "set u [new Agent/UDP]\n$ns attach-agent $a $u\nset c [new Application/Traffic/CBR]\n"
                           "$c attach-agent $u\n$ns at 1 \"$c start\"\n")
    imported = read(path)
    assert imported.scenario is None
    assert imported.ignored == ["line 10: c (a CBR needs an attached Agent/UDP connected to an attached sink)"]


def test_the_scenario_plays_on_the_engine_in_time_order_and_reaches_exit(tmp_path: Path) -> None:
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_runner import FakeRunner

    from nestbed.scenario import Engine
    path = write(tmp_path, 'set p [new Program $ns]\n$p set node $b\n$p set command "sleep 30"\n'
                           '$ns at 0.2 "$link0 down"\n$ns at 0.1 "$p start"\n$ns at 0.3 "$p stop; $link0 up"\n'
                           '$ns at 0.3 "$link0 bandwidth 10Mb duplex"\n')
    _, text = converted(path)
    assert text is not None
    runner = FakeRunner(["a", "b"])
    outcome = Engine(load_scenario_text(text, "t.aal"), runner).run(timeout=10)
    assert outcome.reached_exit, outcome.message
    assert outcome.seconds >= 0.3
    assert [c for c in runner.calls if c[0] == "spawn"] == [("spawn", "b", ["sh", "-c", "sleep 30"])]
    assert runner.stopped == list(runner.spawned)                       # `$p stop` stopped it
    assert runner.links == [("link0", "down", {}), ("link0", "up", {}), ("link0", "set", {"bandwidth": 10_000_000})]


def test_convert_writes_the_scenario_next_to_the_yaml_and_run_says_when_there_is_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from nestbed.cli import main as cli_main
    monkeypatch.setattr(sys, "argv", ["nestbed", "convert", str(CORPUS / "es-cbr.ns"), "-o", str(tmp_path / "x.yaml")])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert not exited.value.code
    assert f"x.yaml + {tmp_path / 'x.aal'}" in capsys.readouterr().out.replace("\n", "")
    assert load_scenario_text((tmp_path / "x.aal").read_text(), "x.aal").agents["cbr0"].kind == "flooder"
    quiet = write(tmp_path, "$ns run\n")
    monkeypatch.setattr(sys, "argv", ["nestbed", "run", "lab", str(quiet)])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 1 and len(err.splitlines()) == 1 and "has no events nestbed plays" in err, err


def test_an_empty_event_and_a_sequences_catch_part_are_listed_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, 'set s [$ns event-sequence {\n  $link0 down\n} catch {\n  $link0 up\n}]\n'
                           '$ns at 1 "$s start"\n$ns at 2 "{}"\n')
    imported = read(path)
    assert imported.scenario is not None
    assert timeline(imported.scenario) == [(1.0, "ns_links", "linkDown", {"link": "link0"})]
    assert "line 6: event-sequence … catch {…}: its catch part is not played" in imported.ignored
    assert any(i.startswith("line 12: at 2") and "missing event type" in i for i in imported.ignored)


def test_shaping_events_on_a_segment_with_per_member_shaping_are_ignored_and_up_down_still_play(
        tmp_path: Path) -> None:
    # `nestbed link set` refuses a segment whose members have their own egress/ingress: the file must not
    # convert into a scenario that fails partway through `nestbed run`.
    path = write(tmp_path, "set lan0 [$ns make-lan \"$a $b\" 10Mb 0ms]\n"          # line 6
                           "[[$ns link $a $b] queue] set limit_ 20\n"               # 7: link0's a end
                           "tb-set-node-lan-delay $a $lan0 5ms\n"                   # 8: lan0's member a
                           '$ns at 1 "$link0 bandwidth 10Mb duplex"\n'             # 9
                           '$ns at 2 "$link0 delay 5ms"\n$ns at 3 "$lan0 plr 0.1"\n'   # 10, 11
                           '$ns at 4 "$link0 down"\n$ns at 5 "$lan0 up"\n')        # 12, 13
    imported = read(path)
    assert imported.scenario is not None
    assert timeline(imported.scenario) == [(4.0, "ns_links", "linkDown", {"link": "link0"}),
                                           (5.0, "ns_links", "linkUp", {"link": "lan0"})]
    why = "the segment has per-member shaping: set it in the file"
    assert f"line 9: link0 bandwidth 10Mb duplex ({why})" in imported.ignored
    assert f"line 10: link0 delay 5ms ({why})" in imported.ignored
    assert f"line 11: lan0 plr 0.1 ({why})" in imported.ignored
    plain = write(tmp_path, '$ns at 1 "$link0 bandwidth 10Mb duplex"\n')            # no per-member shaping
    assert timeline(read(plain).scenario or {}) == [
        (1.0, "ns_links", "setLink", {"link": "link0", "bandwidth": 10_000_000})]


PROGRAM_AND_CBR = ('set p [new Program $ns]\n$p set node $b\n$p set command "slow"\n'
                   "set u [new Agent/UDP]\n$ns attach-agent $a $u\nset s [new Agent/Null]\n$ns attach-agent $b $s\n"
                   "$ns connect $u $s\nset c [new Application/Traffic/CBR]\n$c attach-agent $u\n")


def test_a_top_level_program_run_never_holds_up_the_other_events_of_its_moment(tmp_path: Path) -> None:
    path = write(tmp_path, PROGRAM_AND_CBR + '$ns at 1 "$p run"\n$ns at 1 "$c start"\n'
                                             'set q [$b program-agent -command "t" -timeout 5]\n$ns at 1 "$q run"\n'
                                             'set seq [$ns event-sequence {\n$p run\n$c stop\n}]\n'
                                             '$ns at 2 "$seq start"\n$ns at 2 "$link0 down"\n')
    imported = read(path)
    assert imported.scenario is not None
    streams = {name: [(i["agent"], i["method"], i.get("args", {})) for i in items[1:] if "trigger" not in i]
               for name, items in imported.scenario["eventstreams"].items() if name != "ns_end"}
    # Emulab: every event of a moment fires at its time; a run waits only inside a sequence. No -timeout: no
    # limit (runshell's timeout 0), -timeout 5: 5 s.
    assert streams == {
        "at_1s_p_run": [("p", "runCommand", {"cmd": "slow", "timeout": 0.0})],
        "at_1s": [("c", "startFlood", {})],
        "at_1s_q_run": [("q", "runCommand", {"cmd": "t", "timeout": 5.0})],
        "at_2s_seq": [("p", "runCommand", {"cmd": "slow", "timeout": 0.0}), ("c", "stopFlood", {})],
        "at_2s": [("ns_links", "linkDown", {"link": "link0"})],
    }


def test_on_the_engine_the_cbr_starts_while_the_program_of_its_moment_runs(tmp_path: Path) -> None:
    import sys
    import time
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_runner import FakeRunner

    from nestbed.scenario import Engine
    path = write(tmp_path, PROGRAM_AND_CBR + '$ns at 0.1 "$p run"\n$ns at 0.1 "$c start"\n')
    _, text = converted(path)
    assert text is not None
    runner = FakeRunner(["a", "b"])
    ran: list[tuple[str, float | None]] = []
    plain_run = runner.run

    def run(node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        ran.append((argv[-1], timeout))
        if argv[-1] == "slow":
            time.sleep(1.0)
        return plain_run(node, argv, timeout)
    runner.run = run                                                      # type: ignore[method-assign]
    started = time.monotonic()
    spawned_at: list[float] = []
    plain_spawn = runner.spawn

    def spawn(node: str, argv: list[str], name: str) -> str:
        spawned_at.append(time.monotonic() - started)
        return plain_spawn(node, argv, name)
    runner.spawn = spawn                                                  # type: ignore[method-assign]
    outcome = Engine(load_scenario_text(text, "t.aal"), runner).run(timeout=10)
    assert outcome.reached_exit, outcome.message
    assert ran == [("slow", None)]                                        # no limit: not runshell's 60 s
    assert len(spawned_at) == 1 and spawned_at[0] < 0.8                   # not after the 1 s run


def test_a_cbr_whose_agent_is_attached_to_a_link_or_no_node_is_ignored(tmp_path: Path) -> None:
    for where in ("$link0", "nosuchnode"):
        path = write(tmp_path, f"set u [new Agent/UDP]\n$ns attach-agent {where} $u\nset s [new Agent/Null]\n"
                               "$ns attach-agent $b $s\n$ns connect $u $s\nset c [new Application/Traffic/CBR]\n"
                               '$c attach-agent $u\n$ns at 1 "$c start"\n')
        imported = read(path)
        assert imported.scenario is None, where
        name = where.lstrip("$")
        assert imported.ignored == [f"line 13: c (its agent u is attached to {name!r}, not a node of the file: "
                                    f"attach agents to nodes)"]
