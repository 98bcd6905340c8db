"""Emulab's own checks on NS files (research §1, §3, §4) and DETER's packing attributes, each at the NS line."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed.errors import TopologyError
from nestbed.model import load_topology
from nestbed.model.nsfile import read

pytestmark = pytest.mark.needs("tclsh")

HEAD = "set ns [new Simulator]\nsource tb_compat.tcl\nset a [$ns node]\nset b [$ns node]\n"


def write(tmp_path: Path, body: str, tail: str = "$ns run\n") -> Path:
    path = tmp_path / "t.ns"
    path.write_text(HEAD + body + tail)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("bw", "words"), [("1000", "below Emulab's minimum of 10 kb"),
                                           ("9kb", "below Emulab's minimum"),
                                           ("11Gb", "above Emulab's maximum of 10 Gb")])
def test_bandwidth_outside_emulabs_limits_is_one_line_at_the_link(tmp_path: Path, bw: str, words: str) -> None:
    path = write(tmp_path, f"$ns duplex-link $a $b {bw} 0ms DropTail\n")
    message = error_of(path)
    assert message.startswith(f"{path}:5: ") and words in message


def test_bandwidth_at_the_limits_is_taken(tmp_path: Path) -> None:
    path = write(tmp_path, "$ns duplex-link $a $b 10kb 0ms DropTail\n$ns duplex-link $a $b 10Gb 0ms DropTail\n")
    rates = sorted(s.shaping.bandwidth or 0 for s in load_topology(path).segments.values())
    assert rates == [10_000, 10 * 10**9]


def test_delay_unit_ns_is_emulabs_microseconds_with_a_note(tmp_path: Path) -> None:
    path = write(tmp_path, "$ns duplex-link $a $b 100Mb 5000ns DropTail\n")
    link = next(iter(load_topology(path).segments.values()))
    assert link.shaping.delay == pytest.approx(0.005)          # 5000 µs, as Emulab ran it
    assert any("line 5" in note and "microseconds" in note for note in read(path).notes)


def test_a_lan_of_one_node_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'set lan0 [$ns make-lan "$a" 100Mb 0ms]\n')
    message = error_of(path)
    assert message.startswith(f"{path}:5: ") and "LAN lan0 has only a single node" in message


def test_a_second_run_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "$ns run\n")
    message = error_of(path)
    assert message.startswith(f"{path}:6: ") and "only be run once (first at line 5)" in message


def test_no_run_is_refused_at_the_end(tmp_path: Path) -> None:
    path = write(tmp_path, "$ns duplex-link $a $b 100Mb 0ms DropTail\n", tail="")
    message = error_of(path)
    assert message.startswith(f"{path}:5: ") and "no '$ns run'" in message


def test_partition_passes_become_partitions_of_deters_default_packing() -> None:
    exp = load_topology(Path(__file__).parent.parent / "data" / "ns" / "deter-containers-ex6.ns")
    partitions: dict[str, list[str]] = {}
    for node in exp.nodes.values():
        assert node.partition is not None
        partitions.setdefault(node.partition, []).append(node.name)
    assert partitions["pass0-0"] == ["center"]
    assert [len(partitions[f"pass{p}-{k}"]) for p in (1, 2, 3) for k in (0, 1)] == [10] * 6
    assert partitions["pass1-0"] == [f"n-{i}" for i in range(10)]   # the file's order: one LAN's nodes together
    assert exp.embed.per_host == 1000                               # no colocate factor: no embed settings


def test_colocate_factor_packs_passes_and_sets_the_embed_section(tmp_path: Path) -> None:
    body = "set c [$ns node]\ntb-set-colocate-factor 2\n" + "".join(
        f'tb-add-node-attribute ${n} "containers:PartitionPass" {p}\n' for n, p in (("a", 1), ("b", 1), ("c", 1)))
    body += 'tb-add-node-attribute $c "containers:partition" 7\n'
    exp = load_topology(write(tmp_path, body))
    assert exp.embed.per_host == 2
    assert {n.name: n.partition for n in exp.nodes.values()} == {"a": "pass1-0", "b": "pass1-0", "c": "7"}


def test_a_pass_that_is_not_an_integer_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'tb-add-node-attribute $a "containers:PartitionPass" first\n')
    message = error_of(path)
    assert message.startswith(f"{path}:5: ") and "is not an integer" in message


@pytest.mark.parametrize(("body", "words"), [
    ("tb-set-link-loss $a", "tb-set-link-loss takes link loss | src dst loss, not 1 argument(s)"),
    ("tb-set-ip $a", "tb-set-ip takes node ip, not 1"),
    ("tb-set-node-startcmd $a", "tb-set-node-startcmd takes node command, not 1"),
    ("tb-set-node-startcmd nosuch ls", "'nosuch' is not a node"),
    ("tb-set-netmask $a 255.255.255.0", "tb-set-netmask: 'a' is not a link or LAN"),
    ("set c [$ns node]\ntb-set-ip-interface $a $c 10.1.1.1", "no connection between a and c"),
    ("tb-set-colocate-factor", "tb-set-colocate-factor takes factor, not 0"),
    ("tb-set-node-startcmd $a ls\ntb-set-node-startcmd $a pwd", "a has a start command already (line 5)"),
    ("$ns at 1", 'wrong # args: should be "ns at time event"'),
])
def test_bad_arguments_are_one_line_at_their_line_never_a_traceback(tmp_path: Path, body: str, words: str) -> None:
    path = write(tmp_path, body + "\n")
    message = error_of(path)
    line = 4 + body.count("\n") + 1
    assert message.startswith(f"{path}:{line}: ") and words in message, message


def test_startup_last_wins_and_joins_the_start_command(tmp_path: Path) -> None:
    path = write(tmp_path, "tb-set-node-startcmd $a one\ntb-set-node-startup $a two\ntb-set-node-startup $a three\n")
    assert load_topology(path).nodes["a"].commands == ["one", "three"]


def test_control_characters_puts_unknown_methods_and_protocols_are_taken_or_listed(tmp_path: Path) -> None:
    path = write(tmp_path, 'tb-set-node-startcmd $a "printf \\001\\033"\nputs "progress"\n$a frob\n'
                           "set l [$ns duplex-link $a $b 10Mb 0ms DropTail]\n$l trace\n$ns rtproto OSPF\n"
                           "$ns simplex-link $a $b 1Mb 0ms DropTail\n")
    exp = load_topology(path)
    assert exp.nodes["a"].commands == ["printf \x01\x1b"] and exp.routing == "none"
    ignored = read(path).ignored
    for words in ("line 7: a frob", "line 9: l trace", "line 10: rtproto OSPF", "line 11: ns simplex-link"):
        assert any(entry.startswith(words) for entry in ignored), (words, ignored)


def test_a_line_number_the_file_forges_cannot_break_the_records(tmp_path: Path) -> None:
    path = write(tmp_path, '__nb_global "1,\\"x" tb-set-node-os $a b\n')
    assert sorted(load_topology(path).nodes) == ["a", "b"]          # the forged line became 0, the record stayed JSON
    assert "line 0: tb-set-node-os (testbed-only)" in read(path).ignored
