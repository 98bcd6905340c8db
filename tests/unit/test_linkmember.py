"""One member of a runtime link change (realize/linkmember.py): the netlink messages a change sends."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nestbed import netlinkwire as wire
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import ShapingPlan
from nestbed.realize import linkmember

LAN3 = (Path(__file__).parents[2] / "examples" / "lan3.yaml").read_text()


@pytest.fixture
def plan():
    return compile_plan(load_topology_text(LAN3, "lan3.yaml"))


def _header(message: bytes) -> tuple[int, int]:
    _length, msg_type, flags, _seq, _pid = struct.unpack_from("=IHHII", message)
    return msg_type, flags


def test_down_clears_iff_up_in_the_change_mask(plan):
    node = plan.node("r1")
    quiet, strict = linkmember.node_batches(node, ["eth0"], "down", None, False, {"eth0": 2, "eth1": 3})
    assert not quiet.messages and strict.purposes == ["eth0 down"]
    _family, _type, index, flags, change = struct.unpack_from("=BxHiII", strict.messages[0], 16)
    assert (index, flags, change) == (2, 0, wire.IFF_UP)


def test_up_puts_back_the_routes_through_the_interface(plan):
    node = plan.node("a")
    _quiet, strict = linkmember.node_batches(node, ["eth0"], "up", None, False, {"eth0": 2})
    assert strict.purposes == ["eth0 up", "route to 10.0.0.0/23 via 10.0.1.3"]
    msg_type, flags = _header(strict.messages[1])
    assert msg_type == wire.RTM_NEWROUTE and flags & wire.NLM_F_REPLACE and not flags & wire.NLM_F_EXCL


def test_set_deletes_the_root_qdisc_then_builds_the_new_one(plan):
    node = plan.node("c")
    quiet, strict = linkmember.node_batches(node, ["eth0"], "set", ShapingPlan(bandwidth=2_000_000), False, {"eth0": 2})
    assert quiet.purposes == ["old qdisc on eth0"] and _header(quiet.messages[0])[0] == wire.RTM_DELQDISC
    assert strict.purposes == ["htb on eth0", "htb rate 2000000bit on eth0"]
    quiet, strict = linkmember.node_batches(node, ["eth0"], "set", None, False, {"eth0": 2})
    assert quiet.purposes == ["old qdisc on eth0"] and not strict.messages
