"""Process identity and liveness, shared by realization (teardown), the agents and VM control.

A pid alone is not an identity: the kernel recycles pids. What nestbed journals is (pid, start time), and
`is_same` tells a process of ours from a newcomer that got the same number.
"""
from __future__ import annotations

import os
import signal
import time

GONE_SECONDS = 5.0      # how long teardown waits for killed processes to leave the process table (be reaped)

def start_time(pid: int) -> int | None:
    """The kernel's start time of a pid (field 22 of /proc/PID/stat), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def is_child(pid: int) -> bool:
    """The process is a child of this one, so this one may reap it."""
    return parent_of(pid) == os.getpid()


def is_same(pid: int, start: int | None) -> bool:
    """Whether pid is still the process that was journaled with this start time."""
    return start is not None and start_time(pid) == start


def is_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie child of ours is reaped on the way)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Some process of the group is left (programs started with setsid lead their own group)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def send(pid: int, sig: int) -> bool:
    """Signal one process; False when it is gone."""
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_group(pgid: int, sig: int) -> None:
    """Signal a process group, or the process alone when it leads none."""
    for target in (os.killpg, os.kill):
        try:
            target(pgid, sig)
            return
        except (ProcessLookupError, PermissionError):
            continue


def reap(pid: int) -> None:
    """Collect a child of ours that ended (a zombie of ours stays listed until its parent waits for it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_gone(starts: dict[int, int | None], seconds: float) -> list[int]:
    """Wait until every pid (with its journaled start time) is gone from the process table, or is another
    process by now; our own children are reaped on the way. Returns the pids still listed after `seconds`
    (a zombie whose parent has not reaped it, or a process that did not die).

    A zombie of init is not waited for: it holds nothing (memory, files and namespaces are released when a
    process dies) and init alone may reap it. Under a systemd init that is at once; some container inits poll
    (this one every 1–2 s), which would add those seconds to every `down`."""
    left = [pid for pid, start in starts.items() if start is not None]
    deadline = time.monotonic() + seconds
    while True:
        for pid in left:
            reap(pid)
        left = [pid for pid in left if is_same(pid, starts[pid]) and not _zombie_of_init(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def parent_of(pid: int) -> int | None:
    """The parent's pid (field 4 of /proc/PID/stat), None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _zombie_of_init(pid: int) -> bool:
    return state_of(pid) == "Z" and parent_of(pid) == 1


def state_of(pid: int) -> str:
    """A process's state letter (R, S, D, Z …), "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def kill_all(pids: list[int], grace: float = 1.0) -> None:
    """SIGTERM each process, then SIGKILL what is left after `grace` seconds; waits up to 2 s more for them."""
    alive = [pid for pid in pids if send(pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if is_alive(pid)]
    for pid in alive:
        send(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [pid for pid in alive if is_alive(pid)]
