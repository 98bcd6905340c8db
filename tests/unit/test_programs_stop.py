"""The host agent's stop (agent/programs.py): only what this agent spawned is signalled, and only while its pid
still names the process it started (pid and start time); no root: the launcher is a fake that starts real
children in sessions of their own."""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from nestbed import procs
from nestbed.agent.launcherclient import Launched
from nestbed.agent.programs import Programs
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize.state import ExperimentState

TOPOLOGY = """\
name: lab
nodes:
  a: {}
  b: {}
lans:
  lan0: {members: [a, b]}
"""


class ChildLauncher:
    """launch: the program for real (no namespaces), in a session of its own; its exit reported by a thread."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def launch(self, node: str, argv: list[str], env: dict[str, str], fds: tuple[int, int, int]) -> Launched:
        child = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], start_new_session=True)
        self.children.append(child)
        launched = Launched()
        launched.pid = child.pid
        launched.started.set()

        def wait() -> None:
            launched.rc = child.wait()
            launched.done.set()
        threading.Thread(target=wait, daemon=True).start()
        return launched


@pytest.fixture
def programs(tmp_path: Any) -> Any:
    state = ExperimentState("lab", tmp_path)
    state.log_dir.mkdir()
    launcher = ChildLauncher()
    made = Programs(state, compile_plan(load_topology_text(TOPOLOGY, "t.yaml")), launcher)  # type: ignore[arg-type]
    yield made
    for child in launcher.children:
        child.kill()
        child.wait()


def _ended(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while procs.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not procs.is_alive(pid)


def test_stop_ends_a_program_this_agent_spawned_and_may_repeat(programs):
    answer = programs.spawn({"node": "a", "argv": ["sleep", "30"], "name": "s"})
    assert procs.is_alive(answer["pid"])
    assert programs.stop({"handle": answer["handle"]}) == {"ok": True}
    assert _ended(answer["pid"])
    assert programs.stop({"handle": answer["handle"]}) == {"ok": True}          # safe to repeat


def test_a_handle_this_agent_did_not_hand_out_is_refused_and_nothing_is_signalled(programs):
    (handle,) = programs.spawn_many([{"node": "a", "argv": ["sleep", "30"], "name": "s"}])
    pid = int(handle.rsplit("/", 1)[1])
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)      # a process of someone else
    try:
        with pytest.raises(ExperimentError, match=f"^stop: 'b/x/{bystander.pid}' is not a program this agent "
                                                  "started$"):
            programs.stop_many({"handles": [handle, f"b/x/{bystander.pid}"]})
        assert bystander.poll() is None and procs.is_alive(pid)                  # neither was signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_a_handle_whose_pid_now_names_another_process_is_skipped(programs):
    """The kernel recycled the pid: the process there now has another start time than the one spawned."""
    answer = programs.spawn({"node": "b", "argv": ["sleep", "30"], "name": "s"})
    started = programs.spawned[answer["handle"]]
    assert started.start == procs.start_time(answer["pid"])                    # what the journal has too
    programs.spawned[answer["handle"]] = replace(started, start=started.start + 1)
    assert programs.stop({"handle": answer["handle"]}) == {"ok": True}
    time.sleep(0.1)
    assert procs.is_alive(answer["pid"])                                       # not ours any more: left alone
