"""LauncherRunner (agent/launcherrunner.py) over a fake launcher that really starts each program on the fds it is
given (no namespaces, no root): a clean environment, output streamed, killed at the timeout, run_many one batch,
spawns journaled before and after."""
from __future__ import annotations

import subprocess
import threading
from typing import Any

import pytest

from nestbed.agent.launcherclient import Launched
from nestbed.agent.launcherrunner import LauncherRunner
from nestbed.agent.runners import Program, Spawn
from nestbed.errors import ExperimentError
from nestbed.realize.state import ExperimentState


class RealLauncher:
    """launch: the program in a session of its own on the three fds, its exit reported by a thread."""

    def __init__(self) -> None:
        self.envs: list[dict[str, str]] = []
        self.batches: list[list[dict[str, Any]]] = []

    def launch(self, node: str, argv: list[str], env: dict[str, str], fds: tuple[int, int, int]) -> Launched:
        self.envs.append(env)
        launched = Launched()
        if node == "gone":
            launched.error = "no namespace for node gone"
            launched.started.set()
            launched.done.set()
            return launched
        child = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], env=env, start_new_session=True)
        launched.pid = child.pid
        launched.started.set()

        def wait() -> None:
            launched.rc = child.wait()
            launched.done.set()
        threading.Thread(target=wait, daemon=True).start()
        return launched

    def run_batch(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        self.batches.append(items)
        return [{"rc": 0, "out": item["node"], "err": ""} for item in items]


@pytest.fixture
def runner(tmp_path: Any) -> LauncherRunner:
    state = ExperimentState("lab", tmp_path)
    state.log_dir.mkdir(parents=True)
    return LauncherRunner(state, RealLauncher())


def test_programs_get_a_clean_environment_with_the_nodes_variables(runner, monkeypatch):
    monkeypatch.setenv("AGENTS_OWN", "secret")
    env = runner.environment("a", {"X": "1"})
    assert env["NESTBED_NODE"] == "a" and env["NESTBED_EXPERIMENT"] == "lab" and env["X"] == "1"
    assert "AGENTS_OWN" not in env and env["HOME"] == "/root"


def test_stream_hands_output_on_and_returns_the_exit_code(runner):
    out, err = bytearray(), bytearray()
    finished = runner.stream("a", ["sh", "-c", "echo hi; echo no >&2; exit 3"], out.extend, err.extend)
    assert (finished.rc, finished.timed_out, bytes(out), bytes(err)) == (3, False, b"hi\n", b"no\n")


def test_stream_kills_the_group_at_the_timeout(runner):
    finished = runner.stream("a", ["sh", "-c", "sleep 30 & sleep 30"], print, print, timeout=0.2)
    assert finished.timed_out and finished.rc == -9


def test_a_launch_the_launcher_refuses_is_an_error_line(runner):
    with pytest.raises(ExperimentError, match="^no namespace for node gone$"):
        runner.stream("gone", ["true"], print, print)


def test_start_reads_line_by_line_and_kills_at_the_finish_timeout(runner):
    running = runner.start("a", ["sh", "-c", "echo ready; echo more; exec sleep 30"])
    assert running.readline() == "ready\n"
    rc, out, err = running.finish(0.3)
    assert running.timed_out and out == "ready\nmore\n"


def test_run_many_is_one_launcher_batch_with_each_items_environment(runner):
    results = runner.run_many([{"node": "a", "argv": ["true"]}, {"node": "b", "argv": ["id"], "env": {"Y": "2"}}], 5)
    assert [r["out"] for r in results] == ["a", "b"]
    ((first, second),) = runner.launcher.batches
    assert first["env"]["NESTBED_NODE"] == "a" and second["env"]["Y"] == "2" and second["argv"] == ["id"]


def test_spawns_log_to_files_journaled_before_and_their_pids_after(runner):
    spawned = runner.spawn_many([Spawn("a", ["sh", "-c", "echo started; exec sleep 30"], "web"),
                                 Spawn("gone", ["true"], "x")])
    assert spawned[0].pid and spawned[0].log == str(runner.state.log_dir / "a-web.log")
    assert spawned[1].pid is None and spawned[1].error == "no namespace for node gone"
    entries = runner.state.journal.entries()
    files = [e for e in entries if e["t"] == "file"]
    assert [e["path"] for e in files] == [spawned[0].log, str(runner.state.log_dir / "gone-x.log")]
    assert [(e["node"], e["name"], e["pid"]) for e in entries if e["t"] == "pid"] == [("a", "web", spawned[0].pid)]
    assert entries.index(files[-1]) < next(k for k, e in enumerate(entries) if e["t"] == "pid")
    assert [e["start"] for e in entries if e["t"] == "pid"] == [spawned[0].start] and spawned[0].start
    runner.stop_many([Program("a", spawned[0].pid, spawned[0].start)])


def test_the_host_agent_has_no_terminal_for_a_shell(runner):
    with pytest.raises(ExperimentError, match="nestbed shell lab a"):
        runner.shell("a")
