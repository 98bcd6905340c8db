"""procs.wait_gone with real short-lived processes: a child of ours that ended is reaped, a zombie another
process does not reap is reported, a pid that is another process by now does not count; teardown names it."""
from __future__ import annotations

import os
import subprocess
import time

from nestbed import procs


def _listed(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_a_child_of_ours_that_ended_is_reaped_and_gone_from_the_table():
    child = subprocess.Popen(["true"])
    start = procs.start_time(child.pid)
    while procs.state_of(child.pid) not in ("Z", ""):
        time.sleep(0.01)
    assert procs.wait_gone({child.pid: start}, 5.0) == []
    assert not _listed(child.pid)
    child.wait()            # reaped already: Popen learns it (ECHILD), so it never waits for a reused pid


def test_a_zombie_its_parent_does_not_reap_is_reported_as_left():
    # sh backgrounds a short sleep, then becomes a long sleep that never waits: the short one stays a zombie
    parent = subprocess.Popen(["sh", "-c", "sleep 0.05 & echo $!; exec sleep 30"], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        start = procs.start_time(zombie)
        while procs.state_of(zombie) != "Z":
            time.sleep(0.01)
        assert procs.wait_gone({zombie: start}, 0.2) == [zombie]
        from nestbed.realize.teardown import _describe
        assert _describe(zombie) == f"process {zombie}: a zombie its parent has not reaped"
    finally:
        parent.kill()
        parent.wait()


def test_a_pid_that_is_another_process_by_now_is_not_waited_for():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert procs.wait_gone({child.pid: (procs.start_time(child.pid) or 0) + 1}, 5.0) == []
        assert procs.wait_gone({child.pid: None}, 5.0) == []
        assert procs.wait_gone({child.pid: procs.start_time(child.pid)}, 0.05) == [child.pid]    # alive
    finally:
        child.kill()
        child.wait()


def test_killed_processes_are_waited_for_until_they_leave_the_table():
    from nestbed.realize.kernel import LINUX
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    assert LINUX.kill([c.pid for c in children]) == []
    assert not any(_listed(c.pid) for c in children)
    for child in children:
        child.wait()


def test_a_zombie_of_init_is_not_waited_for():
    """It holds nothing and only init may reap it (some container inits take seconds): `down` does not wait."""
    middle = subprocess.Popen(["sh", "-c", "(sleep 0.2; exit 0) & echo $!"], stdout=subprocess.PIPE)
    assert middle.stdout is not None
    orphan = int(middle.stdout.readline())
    middle.wait()                          # its parent is gone: init adopts it, and reaps it when it will
    start = procs.start_time(orphan)
    for _ in range(500):                   # until it has ended (a zombie of init, or reaped already)
        if procs.state_of(orphan) in ("Z", ""):
            break
        time.sleep(0.01)
    assert procs.state_of(orphan) in ("Z", "") and procs.parent_of(orphan) in (1, None)
    assert procs.wait_gone({orphan: start}, 0.05) == []
