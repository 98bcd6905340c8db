"""The scenario engine against a fake runner: timing of timeouts and triggers, AND/OR, targets, node events,
fan-out to 1000 nodes, failures of agents and of the host agent."""
from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_runner import FakeRunner  # noqa: E402

from nestbed.agent.store import Store  # noqa: E402
from nestbed.errors import ExperimentError  # noqa: E402
from nestbed.scenario import Engine, load_scenario_text  # noqa: E402

HEAD = """
streamstarts: [{starts}]
groups:
  g: [a, b]
  one: [a]
agents:
  sh: {{group: g, path: runshell}}
  web: {{group: one, path: apache, execargs: {{port: 8080}}}}
eventstreams:
"""


def scenario(streams: str, starts: str = "s"):
    return load_scenario_text(HEAD.format(starts=starts) + textwrap.indent(textwrap.dedent(streams), "  "), "t.aal")


# No wall-clock bounds here (speed belongs in benchmarks/): what these tests assert holds however loaded the machine
# is. Lower bounds are kept, as a timeout never fires early (triggers.holds: 0.5 ms of rounding); order and choice
# are read from the outcome, the runner's calls and the store.
EARLY = 0.0005


def run(text: str, runner: FakeRunner | None = None, starts: str = "s", **kwargs):
    runner = runner or FakeRunner(["a", "b", "c"])
    return Engine(scenario(text, starts), runner, **kwargs).run(timeout=10), runner


def test_a_timeout_trigger_fires_and_never_early():
    for ms in (100, 300):
        outcome, _ = run(f"""
            s:
              - {{type: trigger, triggers: [{{timeout: {ms}, target: exit}}]}}
            """)
        assert outcome.reached_exit and outcome.reason == "exit"        # the trigger, not run's 10 s timeout
        assert outcome.seconds >= ms / 1000 - EARLY, outcome.seconds


def test_and_waits_for_both_or_for_either():
    outcome, _ = run("""
        s:
          - {type: event, agent: sh, method: runCommand, args: {cmd: "true"}, trigger: done}
          - type: trigger
            triggers:
              - {type: AND, triggers: [{event: done}, {timeout: 200}], target: exit}
        """)
    assert outcome.reached_exit and outcome.seconds >= 0.2 - EARLY    # done fired at once: AND waited for the timeout
    outcome, _ = run("""
        s:
          - type: trigger
            triggers:
              - {type: OR, triggers: [{event: never}, {timeout: 100}], target: exit}
        """)
    assert outcome.reached_exit and outcome.seconds >= 0.1 - EARLY    # OR: the timeout alone, `never` never fires


def test_the_first_satisfied_entry_wins_and_targets_a_stream(tmp_path):
    store = Store(tmp_path / "c.sqlite")
    outcome, runner = run("""
        s:
          - type: trigger
            triggers: [{timeout: 5000, target: t}, {timeout: 10, target: exit}, {timeout: 5000, target: exit}]
        t:
          - {type: event, agent: sh, method: runCommand, args: {cmd: "echo hi"}, trigger: said}
          - {type: trigger, triggers: [{event: said, target: exit}]}
        """, store=store)
    assert outcome.reached_exit and runner.calls == []                 # the 10 ms entry, although listed second
    satisfied = [e["name"] for e in store.events() if e["source"] == "scenario" and e["data"]["kind"] == "satisfied"]
    assert satisfied == ["timeout 10 ms → exit"], satisfied
    outcome, runner = run("""
        s:
          - type: trigger
            triggers: [{timeout: 30, target: t}, {timeout: 30, target: exit}]
        t:
          - {type: event, agent: sh, method: runCommand, args: {cmd: "echo hi"}, trigger: said}
          - {type: trigger, triggers: [{event: said, target: exit}]}
        """, store=store)
    assert outcome.reached_exit and outcome.message.startswith("stream 't' item 2")
    assert [c[1] for c in runner.calls] == ["a", "b"] and runner.calls[0][2] == ["sh", "-c", "echo hi"]
    kinds = [(e["name"], e["data"]["kind"]) for e in store.events() if e["source"] == "scenario"][-8:]
    assert ("stream s → t", "stream-end") in kinds and ("sh.runCommand", "event") in kinds
    assert ("said", "trigger") in kinds and kinds[-1] == ("scenario exit", "end")


def test_streams_ending_without_exit_is_not_success():
    outcome, _ = run("""
        s:
          - {type: trigger, triggers: [{timeout: 10}]}
        """)
    assert not outcome.reached_exit and outcome.reason == "ended"


def test_an_event_trigger_fires_on_its_event_and_its_latency_is_measured():
    runner = FakeRunner(["a", "b"])
    runner.result = lambda node, argv: (0, "", "")
    outcome, _ = run("""
        s:
          - {type: trigger, triggers: [{timeout: 100}]}
          - {type: event, agent: sh, method: runCommand, args: {cmd: "true"}, trigger: done}
        w:
          - {type: trigger, triggers: [{event: done, target: exit}]}
        """, runner, starts="s, w")
    assert outcome.reached_exit and outcome.seconds >= 0.1 - EARLY   # w waited for done, which came after s's 100 ms
    assert len(outcome.latencies) == 1 and outcome.latencies[0] >= 0, outcome.latencies
    print(f"event trigger latency: {max(outcome.latencies) * 1000:.2f} ms")


def test_false_returns_do_not_satisfy_but_count_and_nodes_can():
    runner = FakeRunner(["a", "b"])
    runner.result = lambda node, argv: (0 if node == "a" else 1, "", "")
    outcome, _ = run("""
        s:
          - {type: event, agent: sh, method: runCommand, args: {cmd: x}, trigger: done}
          - type: trigger
            triggers: [{event: done, target: exit}, {timeout: 100}]
          - type: trigger
            triggers: [{event: done, count: 2, target: exit}, {event: done, nodes: [a]}]
          - type: trigger
            triggers: [{event: done, nodes: [b], target: exit}, {event: done, count: 1, target: t}]
        t:
          - {type: trigger, triggers: [{timeout: 1, target: exit}]}
        """, runner)
    assert outcome.reached_exit and outcome.message.startswith("stream 't'")
    assert outcome.seconds >= 0.1 - EARLY          # b's false return did not satisfy `done`: the 100 ms timeout did


def test_an_external_event_satisfies_a_trigger():
    runner = FakeRunner(["a", "b"])
    sent: list[float] = []

    def later():
        time.sleep(0.2)
        sent.append(time.monotonic())
        runner.send("go", {"node": "a", "ok": True})
    threading.Thread(target=later, daemon=True).start()
    engine = Engine(scenario("""
        s:
          - {type: trigger, triggers: [{event: go, ok: true, target: exit}, {timeout: 3000}]}
        """), runner, events=runner.subscribe())
    outcome = engine.run()
    done = time.monotonic()
    assert outcome.reached_exit and len(outcome.latencies) == 1      # the event (the timeout has no target)
    print(f"external event → trigger: {(done - sent[0]) * 1000:.2f} ms")


@pytest.mark.parametrize("batched", [True, False])
def test_an_event_to_1000_nodes_reaches_every_node(batched):
    nodes = [f"n-{i}" for i in range(1000)]
    runner = FakeRunner(nodes, delay=0.0 if batched else 0.002)   # unbatched: a 2 ms round trip per node call
    in_flight, most = [0], [0]
    if not batched:
        runner.run_many = None        # type: ignore[assignment]  # falls back to parallel single calls
        lock, run_one = threading.Lock(), runner.run

        def counted(node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            try:
                return run_one(node, argv, timeout)
            finally:
                with lock:
                    in_flight[0] -= 1
        runner.run = counted          # type: ignore[method-assign]
    text = """
streamstarts: [s]
groups:
  all: [n]
agents:
  sh: {group: all, path: runshell}
  web: {group: all, path: http_server}
eventstreams:
  s:
    - {type: event, agent: sh, method: runCommand, args: {cmd: "true"}, trigger: ran}
    - {type: event, agent: web, method: startServer, trigger: up}
    - {type: trigger, triggers: [{type: AND, triggers: [{event: ran}, {event: up}], target: exit}]}
"""
    engine = Engine(load_scenario_text(text, "big.aal"), runner)
    outcome = engine.run()
    assert outcome.reached_exit and outcome.calls == 2000
    ran, spawned = ({c[1] for c in runner.calls if c[0] == kind} for kind in ("run", "spawn"))
    assert ran == set(nodes) == spawned                 # every node had both: runCommand and startServer
    assert batched or most[0] > 1, most                 # unbatched: the calls overlap (16 workers, 2 ms each)
    per_event = outcome.seconds / 2
    print(f"fan-out to 1000 nodes ({'run_many' if batched else 'parallel calls, 2 ms each'}): "
          f"{per_event * 1000:.0f} ms per event")


def test_the_host_agent_dying_mid_scenario_is_reported():
    runner = FakeRunner(["a", "b"])

    def die():
        time.sleep(0.3)
        runner.inbox.put(ExperimentError("the host agent of experiment 'fake' is gone (connection closed)"))
    threading.Thread(target=die, daemon=True).start()
    outcome = Engine(scenario("""
        s:
          - {type: event, agent: web, method: startServer}
          - {type: trigger, triggers: [{event: never}]}
        """), runner, events=runner.subscribe()).run(timeout=60)
    assert outcome.reason == "error" and "host agent" in outcome.message      # reported, not waited out
    assert runner.stopped == []             # the runner is gone: no cleanup calls into it

    runner = FakeRunner(["a", "b"])
    runner.fail = ExperimentError("the host agent of experiment 'fake' is gone")
    outcome = Engine(scenario("""
        s:
          - {type: event, agent: sh, method: runCommand, args: {cmd: x}}
        """), runner).run()
    assert outcome.reason == "error"
    assert outcome.message.startswith("t.aal:")
    assert "stream 's' item 1: sh.runCommand: the host agent" in outcome.message


def test_programs_are_stopped_at_the_end_and_stuck_scenarios_end():
    outcome, runner = run("""
        s:
          - {type: event, agent: web, method: startServer}
          - {type: trigger, triggers: [{event: nobodyFiresThis}]}
        """)
    assert outcome.reason == "stuck" and "nobodyFiresThis" in outcome.message
    assert len(runner.spawned) == 1 and runner.stopped == list(runner.spawned)


def test_nodes_missing_from_the_experiment_fail_before_anything_runs():
    outcome, runner = run("""
        s:
          - {type: event, agent: web, method: startServer}
        """, FakeRunner(["b", "c"]))
    assert outcome.reason == "error"
    assert outcome.message == "t.aal:4: group 'g': node 'a' is not in the experiment; its nodes: b, c"
    assert runner.calls == []


def test_progress_reports_streams_and_what_they_wait_on():
    seen: list[str] = []

    def progress(status, line):
        seen.append(f"{status.streams['s'].state}:{status.streams['s'].doing}")
    Engine(scenario("""
        s:
          - {type: trigger, triggers: [{timeout: 20}]}
          - {type: trigger, triggers: [{timeout: 10, target: exit}]}
        """), FakeRunner(["a", "b"]), progress=progress).run()
    assert "waiting:timeout 20 ms" in seen and "waiting:timeout 10 ms → exit" in seen
