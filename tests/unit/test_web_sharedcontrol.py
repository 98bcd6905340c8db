"""web/sharedcontrol.py: one control shared by the web view's threads: kept while it works, never closed under a
user (its last user closes it), made again no sooner than RETRY_SECONDS after it broke or could not be made."""
from __future__ import annotations

import threading

import pytest

from nestbed.errors import ExperimentError
from nestbed.web.sharedcontrol import RETRY_SECONDS, SharedControl


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Control:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_broken_control_is_closed_by_its_last_user_and_made_again_only_after_the_wait():
    clock, made = Clock(), []

    def make() -> Control:
        made.append(Control())
        return made[-1]
    shared = SharedControl(make, clock)
    with shared.using() as first:
        with shared.using() as same:                # another user (a node request) gets the same one
            assert same is first and len(made) == 1
    assert first.closed == 0                        # kept while it works
    inside, leave = threading.Event(), threading.Event()

    def node_request() -> None:
        with shared.using():
            inside.set()
            leave.wait(10.0)
    other = threading.Thread(target=node_request)
    other.start()
    assert inside.wait(10.0)
    with shared.using() as control:
        shared.broken(control, "OSError: lost")     # the feed's tick: broken as a whole
    assert first.closed == 0                        # the node request still uses it
    leave.set()
    other.join(10.0)
    assert first.closed == 1
    clock.now += RETRY_SECONDS - 0.5
    with pytest.raises(ExperimentError, match=r"failed \(OSError: lost\); connecting again in 1 s"):
        with shared.using():
            pass
    assert len(made) == 1                           # not connected again on every tick
    clock.now += 0.5
    with shared.using() as again:
        assert again is made[1] and again is not first
    shared.close()
    assert again.closed == 1 and first.closed == 1
    with pytest.raises(ExperimentError, match="closed"):
        with shared.using():
            pass
    assert len(made) == 2


def test_a_control_that_cannot_be_made_is_tried_again_only_after_the_wait_and_close_waits_for_users():
    clock, tries = Clock(), []

    def make() -> Control:
        tries.append(clock.now)
        if len(tries) == 1:
            raise ExperimentError("host h1: cannot connect")
        return Control()
    shared = SharedControl(make, clock)
    with pytest.raises(ExperimentError, match="host h1: cannot connect"):
        with shared.using():
            pass
    clock.now += 1.0
    with pytest.raises(ExperimentError, match="connecting again in 9 s"):
        with shared.using():
            pass
    clock.now += RETRY_SECONDS
    with shared.using() as control:
        shared.close()                              # the server stops while a request is under way
        assert control.closed == 0
    assert control.closed == 1 and len(tries) == 2
