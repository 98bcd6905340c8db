"""LocalRunner's parts that need no root (agent/localrunner.py): which nodes it serves, the environment programs
get, one-line errors for a node it does not hold or whose namespace is gone, and the signals programs inherit."""
from __future__ import annotations

import signal
from typing import Any

import pytest

from nestbed.agent.localrunner import LocalRunner, restore_signals
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize.state import ExperimentState

SEED = """\
name: seed
nodes:
  a: {}
  vm1: {kind: qemu, memory: 256M}
lans:
  lan0: {members: [a, vm1]}
"""


@pytest.fixture
def runner(tmp_path: Any) -> LocalRunner:
    return LocalRunner(ExperimentState("seed", tmp_path), compile_plan(load_topology_text(SEED, "t.yaml")))


def test_it_serves_the_process_nodes_of_this_host_only(runner):
    assert set(runner.nodes) == {"a"}
    for call in (lambda: runner.start("vm1", ["true"]), lambda: runner.stream("vm1", ["true"], print, print),
                 lambda: runner.exec("vm1", ["true"])):
        with pytest.raises(ExperimentError, match="^experiment seed has no node 'vm1' on this host$"):
            call()


def test_programs_get_the_callers_environment_and_the_nodes_variables(runner, monkeypatch):
    monkeypatch.setenv("USERS_OWN", "kept")
    env = runner.environment("a", {"X": "1"})
    assert (env["NESTBED_NODE"], env["NESTBED_EXPERIMENT"], env["X"], env["USERS_OWN"]) == ("a", "seed", "1", "kept")


def test_exec_into_a_gone_namespace_is_one_line_naming_the_fix(runner, monkeypatch):
    from nestbed.realize import namespaces
    monkeypatch.setattr(namespaces, "netns_path", lambda name: "/nonexistent/netns/" + name)
    with pytest.raises(ExperimentError, match="cannot enter node a of seed .*'nestbed status seed'"):
        runner.exec("a", ["true"])


def test_programs_get_the_default_sigpipe_that_python_ignores():
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        restore_signals()
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGPIPE, previous)
