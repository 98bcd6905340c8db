"""NS per-member LAN settings and simplex settings (model/nsfile/lanmembers.py) give Emulab's values: the corpus
files' members as Emulab's own parse records them (tests/data/ns/SOURCES.md), file order (the last command wins),
and Emulab's checks as one line at the NS line."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed.errors import TopologyError
from nestbed.model import load_topology
from nestbed.model.nsfile import semantics
from nestbed.model.topology import Shaping
from nestbed.plan import compile_plan, pathshaping

pytestmark = pytest.mark.needs("tclsh")

CORPUS = Path(__file__).parent.parent / "data" / "ns"
MS = 1e-3


def members(path: Path, segment: str) -> dict[str, tuple[Shaping, Shaping]]:
    exp = load_topology(path)
    seg = exp.segments[segment]
    assert seg.shaping == Shaping(), "a segment with per-member settings has no segment-wide shaping"
    return {end.node: (end.egress, end.ingress) for end in seg.endpoints}


def own(delay_ms: float = 0, bandwidth: int | None = None, loss: float | None = None) -> Shaping:
    return Shaping(bandwidth=bandwidth, delay=delay_ms * MS or None, loss=loss)


def test_tbcmd_lan0_is_emulabs_golden_rows() -> None:
    # LAN lan0: node0 d=100/100 bw=20000/20000 loss=0.4/0.4; node1 d=150/150 bw=30000/30000 loss=0/0;
    # node2 d=0/0 bw=100000/100000 loss=0.105573/0.105573 (tb-set-lan-loss 0.2 first, then the members')
    got = members(CORPUS / "es-tbcmd.ns", "lan0")
    assert got["node0"] == (own(100, 20_000_000, 0.4), own(100, 20_000_000, 0.4))
    assert got["node1"] == (own(150, 30_000_000), own(150, 30_000_000))
    assert got["node2"][0].bandwidth == 100_000_000 and got["node2"][0].loss == pytest.approx(0.105573, abs=1e-6)
    assert got["node2"][0] == got["node2"][1]
    exp = load_topology(CORPUS / "es-tbcmd.ns")
    assert exp.segments["tblan-lan11"].shaping.bandwidth == 100_000_000     # no per-member setting: as before
    assert exp.segments["link0"].shaping.loss == pytest.approx(0.1)


def test_simplex_lan_and_link_are_emulabs_values() -> None:
    # LAN lan1: node1 d=0/100 bw=100000/10000 loss=0/0.2; node2, node3 d=0/0 bw=100000/100000 loss=0/0
    got = members(CORPUS / "es-simplex.ns", "lan1")
    assert got["node1"] == (own(0, 100_000_000), own(100, 10_000_000, 0.2))
    assert got["node2"] == got["node3"] == (own(0, 100_000_000), own(0, 100_000_000))
    # link link1: node4 d=150/25 bw=20000/100000 loss=0.225403/0; node1 d=25/150 bw=100000/20000 loss=0/0.225403
    # → node4→node1 300 ms, 20Mb, 0.4 end to end; node1→node4 50 ms, 100Mb, no loss
    ends = members(CORPUS / "es-simplex.ns", "link1")
    assert ends["node4"][0] == own(300, 20_000_000, 0.4) and ends["node4"][1] == Shaping()
    assert ends["node1"][0] == own(50, 100_000_000) and ends["node1"][1] == Shaping()
    exp = load_topology(CORPUS / "es-simplex.ns")
    assert exp.segments["link2"].shaping == Shaping(bandwidth=10_000_000, delay=0.1)


def test_buddycache_or_is_20ms_each_way_the_others_half_the_lans() -> None:
    got = members(CORPUS / "es-buddycache.ns", "lan0")
    assert got["or"] == (own(20, 100_000_000), own(20, 100_000_000))
    assert got["fe1"] == (own(0.05, 100_000_000), own(0.05, 100_000_000))
    plan = compile_plan(load_topology(CORPUS / "es-buddycache.ns"))
    seg = plan.segments[0]
    assert pathshaping.between(plan, seg, "fe1", "or").delay == pytest.approx(20.05 * MS)   # fe↔or 20.05 ms
    assert pathshaping.between(plan, seg, "fe1", "fe2").delay == pytest.approx(0.1 * MS)    # fe↔fe 0.1 ms


def test_every_corpus_file_with_such_settings_plans(tmp_path: Path) -> None:
    # (es-tbcmd puts a link and a LAN in one subnet, which nestbed refuses before this)
    for name in ("es-simplex", "es-buddycache", "es-toomanylinks", "it-linktest-hilat",
                 "das-blockstore"):
        plan = compile_plan(load_topology(CORPUS / f"{name}.ns"))
        assert plan.nodes, name


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "t.ns"
    path.write_text("source tb_compat.tcl\nset ns [new Simulator]\nset a [$ns node]\nset b [$ns node]\n"
                    "set c [$ns node]\nset lan0 [$ns make-lan \"$a $b\" 100Mb 10ms]\n"
                    "set l [$ns duplex-link $a $c 10Mb 0ms DropTail]\n" + body + "$ns run\n")
    return path


def test_the_last_command_wins_a_later_lan_loss_overwrites_the_members(tmp_path: Path) -> None:
    got = members(write(tmp_path, "tb-set-node-lan-loss $a $lan0 0.5\ntb-set-lan-loss $lan0 0.19\n"), "lan0")
    assert got["a"][0].loss == pytest.approx(0.1) and got["b"][1].loss == pytest.approx(0.1)
    got = members(write(tmp_path, "tb-set-lan-loss $lan0 0.19\ntb-set-node-lan-loss $a $lan0 0.5\n"
                                  "tb-set-node-lan-delay $a $lan0 1ms\ntb-set-node-lan-params $a $lan0 2ms 1Mb 0.3\n"),
                  "lan0")
    assert got["a"] == (own(2, 1_000_000, 0.3), own(2, 1_000_000, 0.3))
    assert got["b"] == (own(5, 100_000_000, pytest.approx(0.1)), own(5, 100_000_000, pytest.approx(0.1)))


@pytest.mark.parametrize(("body", "words"), [
    ("tb-set-node-lan-delay $a $l 5ms\n", "[tb-set-node-lan-delay] l is not a lan."),
    ("tb-set-node-lan-bandwidth $c $lan0 5Mb\n", "[tb-set-node-lan-bandwidth] c is not a member of lan0."),
    ("tb-set-lan-simplex-params $l $a 0ms 1Mb 0 0ms 1Mb 0\n", "[tb-set-lan-simplex-params] l is not a lan."),
    ("tb-set-link-simplex-params $lan0 $a 5ms 1Mb 0\n", "[tb-set-link-simplex-params] lan0 is not a link."),
    ("tb-set-link-simplex-params $l $b 5ms 1Mb 0\n", "[tb-set-link-simplex-params] b is not a node of link l."),
    ("tb-set-node-lan-params $a $lan0 5ms 1Mb\n", "tb-set-node-lan-params takes 5 arguments"),
    ("tb-set-node-lan-loss $a $lan0 1.5\n", "loss rate '1.5' is not a number from 0 to 1"),
    ("tb-set-node-lan-bandwidth $a $lan0 100mb\n", "bandwidth '100mb' is not NS's"),
])
def test_emulabs_checks_are_one_line_at_the_ns_line(tmp_path: Path, body: str, words: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:8: ") and words in message and "\n" not in message


def test_the_commands_are_no_longer_listed_as_not_supported() -> None:
    for cmd in ("tb-set-node-lan-delay", "tb-set-node-lan-bandwidth", "tb-set-node-lan-loss",
                "tb-set-node-lan-params", "tb-set-link-simplex-params", "tb-set-lan-simplex-params"):
        assert cmd not in semantics.NOT_YET and cmd in semantics.HANDLED
