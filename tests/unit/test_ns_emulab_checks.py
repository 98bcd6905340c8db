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
