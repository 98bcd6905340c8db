"""The runner of each placement (agent/runners.py), without root: runner_for asks the placement's kind (a process
on this host, a qemu node's VM, the vhost holding nested processes, a physical node refused in one line), Runners
keeps one per placement, Running reads a program line by line and kills it at its timeout, stop_groups ends
process groups."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import replace
from typing import Any

import pytest

from nestbed import paths, procs
from nestbed.agent import runners
from nestbed.agent.guestrunner import GuestRunner
from nestbed.agent.launcherrunner import LauncherRunner
from nestbed.agent.localrunner import LocalRunner
from nestbed.errors import ExperimentError
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan
from nestbed.realize import credential
from nestbed.realize.state import ExperimentState

SEED = """\
name: seed
nodes:
  a: {}
  b: {}
  vm1: {kind: qemu, memory: 256M}
lans:
  lan0: {members: [a, b, vm1]}
"""


def plan_of(text: str) -> HostPlan:
    return compile_plan(load_topology_text(text, "t.yaml"))


@pytest.fixture
def state(tmp_path: Any) -> ExperimentState:
    state = ExperimentState("seed", tmp_path)
    paths.credential(state.directory).write_text("secret\n")
    return state


class NoLauncher:
    def launch(self, *args: Any) -> Any:
        raise AssertionError("not launched in these tests")

    def run_batch(self, *args: Any) -> Any:
        raise AssertionError("not launched in these tests")


def test_a_process_on_this_host_runs_locally_and_through_the_launcher_in_the_host_agent(state):
    plan = plan_of(SEED)
    assert runners.placement_kind(plan, plan.node("a")) == "process"
    local = runners.runner_for(state, plan, plan.node("a"))
    assert isinstance(local, LocalRunner) and set(local.nodes) == {"a", "b"}       # the host's nodes only
    launcher = NoLauncher()
    agents = runners.runner_for(state, plan, plan.node("a"), launcher)
    assert isinstance(agents, LauncherRunner) and agents.launcher is launcher


def test_a_qemu_node_runs_through_its_own_vms_guest_agent(state):
    plan = plan_of(SEED)
    assert runners.placement_kind(plan, plan.node("vm1")) == "qemu"
    runner = runners.runner_for(state, plan, plan.node("vm1"), NoLauncher())
    assert isinstance(runner, GuestRunner)
    assert (runner.client.vm, runner.client.address, runner.client.credential) == (
        "vm1", plan.vm("vm1").control_address.split("/")[0], credential.for_vm(state, "vm1"))


def test_processes_inside_a_vhost_run_through_the_vhosts_guest_agent(state):
    plan = plan_of(SEED + "embed: {processes_in: qemu}\n")
    vhost = next(vm for vm in plan.vms if vm.kind == "vhost")
    assert plan.node("a").vm == vhost.name and runners.placement_kind(plan, plan.node("a")) == "vhost"
    runner = runners.runner_for(state, plan, plan.node("a"), NoLauncher())      # a launcher or not: the VM's
    assert isinstance(runner, GuestRunner) and runner.client.vm == vhost.name


def test_a_physical_node_runs_its_programs_as_a_process_node_does(state):
    """On a cluster its namespace is its host's own; it is entered like a process node's."""
    plan = plan_of(SEED)
    physical = replace(plan.node("a"), kind="physical", host_netns=True)
    assert type(runners.runner_for(state, plan, physical)) is type(runners.runner_for(state, plan, plan.node("a")))


def test_runners_keep_one_runner_per_placement(state):
    plan = plan_of(SEED + "embed: {processes_in: qemu}\n")
    made = runners.Runners(state, plan, None)
    vhost_nodes = [n for n in plan.nodes if n.vm is not None and n.kind == "process"]
    assert len(vhost_nodes) == 2
    assert made.of(vhost_nodes[0]) is made.of(vhost_nodes[1])
    assert made.of(plan.node("vm1")) is not made.of(vhost_nodes[0])


def test_running_hands_out_stdout_line_by_line_then_the_rest_and_stderr():
    def work(on_out: Any, on_err: Any) -> int:
        on_out(b"ready\nsec")
        time.sleep(0.05)
        on_out(b"ond\nthird")
        on_err(b"warning\n")
        return 3
    running = runners.Running(work)
    assert running.readline() == "ready\n"
    assert running.readline() == "second\n"
    assert running.finish(5.0) == (3, "ready\nsecond\nthird", "warning\n")
    assert not running.timed_out


def test_running_kills_at_the_timeout_and_says_so():
    child = subprocess.Popen(["sleep", "30"])
    running = runners.Running(lambda on_out, on_err: child.wait(), child.kill)
    rc, out, err = running.finish(0.2)
    assert running.timed_out and rc == runners.TIMED_OUT and "timed out" in err
    assert child.poll() == -signal.SIGKILL


def test_running_reports_a_program_that_could_not_run_as_its_failure():
    def work(on_out: Any, on_err: Any) -> int:
        raise ExperimentError("VM vm1: no node 'zz'")
    rc, out, err = runners.Running(work).finish(5.0)
    assert (rc, out) == (-1, "") and "no node 'zz'" in err


def test_pump_hands_both_pipes_on_and_stops_at_the_deadline():
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(out_w, b"out")
    os.write(err_w, b"err")
    got: dict[str, bytes] = {"o": b"", "e": b""}

    def add(key: str) -> Any:
        return lambda data: got.__setitem__(key, got[key] + data)
    assert runners.pump(out_r, err_r, add("o"), add("e"), time.monotonic() + 0.1)        # still open: timed out
    assert got == {"o": b"out", "e": b"err"}
    os.close(out_w)
    os.close(err_w)
    assert not runners.pump(out_r, err_r, add("o"), add("e"), None)                      # both ended
    os.close(out_r)
    os.close(err_r)


def test_stop_groups_ends_every_group_also_one_that_ignores_sigterm(monkeypatch):
    polite = subprocess.Popen(["sleep", "30"], start_new_session=True)
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 30 & wait"], start_new_session=True)
    time.sleep(0.1)
    sent: list[tuple[int, int]] = []
    kill_group = procs.kill_group
    monkeypatch.setattr(procs, "kill_group", lambda pid, sig: sent.append((pid, sig)) or kill_group(pid, sig))
    skipped = runners.stop_groups([runners.Program("a", child.pid, procs.start_time(child.pid))
                                   for child in (polite, stubborn)])
    assert skipped == []
    # every group has its SIGTERM before any SIGKILL: one grace period for all, not one per group
    assert sent[:2] == [(polite.pid, signal.SIGTERM), (stubborn.pid, signal.SIGTERM)]
    assert (stubborn.pid, signal.SIGKILL) in sent[2:] and {sig for _, sig in sent[2:]} == {signal.SIGKILL}
    assert polite.wait(5) == -signal.SIGTERM and stubborn.wait(5) == -signal.SIGKILL
    deadline = time.monotonic() + 5         # the orphaned sleep is a zombie until init reaps it
    while procs.group_alive(stubborn.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not procs.group_alive(polite.pid) and not procs.group_alive(stubborn.pid)


def test_stop_groups_leaves_alone_a_pid_that_now_names_another_process():
    """A program that ended, its pid given to a newcomer: the journaled start time is not the newcomer's."""
    ended = subprocess.Popen(["true"], start_new_session=True)
    ended_start = procs.start_time(ended.pid)
    ended.wait()
    newcomer = subprocess.Popen(["sleep", "30"], start_new_session=True)    # stands for a recycled pid
    try:
        recycled = runners.Program("a", newcomer.pid, (procs.start_time(newcomer.pid) or 0) + 1)
        gone = runners.Program("a", ended.pid, ended_start)
        assert runners.stop_groups([recycled, gone]) == [recycled, gone]
        assert newcomer.poll() is None and procs.group_alive(newcomer.pid)
        assert runners.stop_groups([runners.Program("a", newcomer.pid, None)]) != []    # no start time: not ours
        assert newcomer.poll() is None
    finally:
        newcomer.kill()
        newcomer.wait()
