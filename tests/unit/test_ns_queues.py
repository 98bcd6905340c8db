"""NS queues: `limit_` as the egress queue of the end it belongs to; RED parameters listed as ignored."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed.errors import TopologyError
from nestbed.model import load_topology
from nestbed.model.nsfile.evaluate import Evaluated, evaluate
from nestbed.model.nsfile.queues import queue_limits

pytestmark = pytest.mark.needs("tclsh")

CORPUS = Path(__file__).parent.parent / "data" / "ns"


def links_between(path: Path) -> tuple[Evaluated, dict[frozenset[str], str]]:
    evaluated = evaluate(str(path))
    return evaluated, {frozenset(o.args[:2]): o.name for o in evaluated.objects if o.kind == "link"}


def test_es_red_each_direction_its_own_limit_and_red_ignored() -> None:
    evaluated, between = links_between(CORPUS / "es-red.ns")
    found = queue_limits(evaluated, between)
    assert {k: v[0] for k, v in found.limits.items()} == {("link0", "nodeA"): 50, ("link0", "nodeB"): 1}
    assert any("RED queues" in line for line in found.ignored)
    assert any("queue gentle_" in line for line in found.ignored)
    assert any("60 bytes (queue-in-bytes_) taken as 1 packet" in line for line in found.notes)   # queue1: bytes


def test_toqueue_fromqueue_and_a_lan_members_queue(tmp_path: Path) -> None:
    path = tmp_path / "q.ns"
    path.write_text("""set ns [new Simulator]
source tb_compat.tcl
set a [$ns node]
set b [$ns node]
set c [$ns node]
set l [$ns duplex-link $a $b 10Mb 0ms DropTail]
set lan [$ns make-lan "$a $b $c" 10Mb 0ms]
[$l set fromqueue] set limit_ 7
[[$ns lanlink $lan $c] queue] set limit_ 9
$ns run
""")
    evaluated, between = links_between(path)
    found = queue_limits(evaluated, between)
    assert found.limits == {("l", "b"): (7, 8), ("lan", "c"): (9, 9)}


def test_a_limit_that_is_not_a_count_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "q.ns"
    path.write_text("set ns [new Simulator]\nset a [$ns node]\nset b [$ns node]\n"
                    "$ns duplex-link $a $b 10Mb 0ms DropTail\n[[$ns link $a $b] queue] set limit_ lots\n$ns run\n")
    evaluated, between = links_between(path)
    with pytest.raises(TopologyError) as caught:
        queue_limits(evaluated, between)
    assert str(caught.value).startswith(f"{path}:5: ") and "limit_ 'lots'" in str(caught.value)


def test_the_limits_are_the_ends_egress_queues_of_the_imported_topology() -> None:
    link = load_topology(CORPUS / "es-red.ns").segments["link0"]
    assert {end.node: end.egress.queue for end in link.endpoints} == {"nodea": 50, "nodeb": 1}
    assert link.shaping.bandwidth == 100_000_000            # the link's own shaping stays the link's


def test_queue_in_bytes_holds_for_the_same_queue_reached_by_another_link_call(tmp_path: Path) -> None:
    # Each `[$ns link a b] queue` is a new object here, but Emulab's one queue of a's end: in_bytes follows it.
    path = tmp_path / "q.ns"
    path.write_text("set ns [new Simulator]\nsource tb_compat.tcl\nset a [$ns node]\nset b [$ns node]\n"
                    "$ns duplex-link $a $b 10Mb 0ms DropTail\n"
                    "[[$ns link $a $b] queue] set queue-in-bytes_ 1\n"
                    "[[$ns link $a $b] queue] set limit_ 30000\n"
                    "[[$ns link $b $a] queue] set limit_ 30\n$ns run\n")
    evaluated, between = links_between(path)
    found = queue_limits(evaluated, between)
    assert {k: v[0] for k, v in found.limits.items()} == {("tblink-l3", "a"): 20, ("tblink-l3", "b"): 30}
    assert found.notes == ["line 7: queue limit_ 30000 bytes (queue-in-bytes_) taken as 20 packet(s) of 1500 bytes: "
                           "nestbed's queues count packets"]


def test_a_lans_toqueue_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "q.ns"
    path.write_text("set ns [new Simulator]\nsource tb_compat.tcl\nset a [$ns node]\nset b [$ns node]\n"
                    "set lan0 [$ns make-lan \"$a $b\" 10Mb 0ms]\n[$lan0 set toqueue] set limit_ 5\n$ns run\n")
    evaluated, between = links_between(path)
    with pytest.raises(TopologyError) as caught:
        queue_limits(evaluated, between)
    message = str(caught.value)
    assert message.startswith(f"{path}:6: ") and "LAN lan0 has no toqueue" in message, message
    assert "only links and LANs have queues" not in message and "[$ns lanlink $lan0 $node] queue" in message
