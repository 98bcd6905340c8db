"""NS files through a real Tcl (tclsh, safe interp): Emulab's object naming, units and the located one-line
errors of the malformed corpus files (tests/data/ns: public files, provenance in SOURCES.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed.errors import TopologyError
from nestbed.model import load_topology
from nestbed.model.nsfile.semantics import bandwidth, delay, experiment_name

pytestmark = pytest.mark.needs("tclsh")

CORPUS = Path(__file__).parent.parent / "data" / "ns"
GOOD = sorted(p for p in CORPUS.glob("*.ns") if not p.name.startswith("bad-"))


def write(tmp_path: Path, text: str, name: str = "t.ns") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_every_good_corpus_file_imports(path: Path) -> None:
    exp = load_topology(path)
    assert exp.name


@pytest.mark.parametrize(("name", "line", "words"), [
    ("bad-es-negprerun", 1, 'unknown command "foo"'),
    ("bad-tut-advanced", 43, "can't read \"nodeb\""),
    ("bad-deter-advanced", 13, 'can\'t rename to "link0"'),
    ("bad-es-mini-tbcmd", 39, "unknown command 'tb-set-node-deltas'"),
])
def test_malformed_files_are_one_line_at_their_ns_line(name: str, line: int, words: str) -> None:
    with pytest.raises(TopologyError) as caught:
        load_topology(CORPUS / f"{name}.ns")
    message = str(caught.value)
    assert message.startswith(f"{CORPUS / name}.ns:{line}: ") and words in message and "\n" not in message


def test_es_basic_nodes_links_lan_and_shaping() -> None:
    exp = load_topology(CORPUS / "es-basic.ns")
    assert sorted(exp.nodes) == ["node1", "node2", "node3", "node4"]
    segments = {s.name: s for s in exp.segments.values()} if isinstance(exp.segments, dict) else \
        {s.name: s for s in exp.segments}
    assert sorted(segments) == ["lan1", "link1", "link2"]
    assert segments["link2"].shaping.bandwidth == 10_000_000 and segments["link2"].shaping.delay == 0.1


def test_emulab_naming_arrays_unnamed_objects_and_bare_names(tmp_path: Path) -> None:
    text = """set ns [new Simulator]
source tb_compat.tcl
for {set i 0} {$i < 2} {incr i} { set n($i) [$ns node] }
set r [$ns node]
$ns duplex-link $n(0) $r 100Mb 2ms DropTail
ns duplex-link n-1 r 10Mb 0.5ms DropTail
tb-set-node-startcmd r "echo hi"
$ns rtproto Static
$ns run
"""
    exp = load_topology(write(tmp_path, text))
    assert sorted(exp.nodes) == ["n-0", "n-1", "r"]
    names = sorted(s.name for s in (exp.segments.values() if isinstance(exp.segments, dict) else exp.segments))
    assert names == ["tblink-l4", "tblink-l5"]          # one counter for nodes and links, as Emulab's
    assert exp.routing == "static" and exp.nodes["r"].commands == ["echo hi"]


def test_the_file_runs_without_exec_open_or_socket(tmp_path: Path) -> None:
    for command in ("exec ls", "open /etc/passwd", "socket 127.0.0.1 9", "source /etc/hosts"):
        path = write(tmp_path, f"set ns [new Simulator]\n{command}\n")
        with pytest.raises(TopologyError) as caught:
            load_topology(path)
        assert str(caught.value).startswith(f"{path}:2: "), caught.value


def test_units_as_emulab_reads_them() -> None:
    assert bandwidth("100Mb", "x") == 100_000_000 and bandwidth("1.5Mbps", "x") == 1_500_000
    assert bandwidth("64000", "x") == 64_000 and bandwidth("1Gb", "x") == 10**9
    with pytest.raises(TopologyError, match="100mb"):
        bandwidth("100mb", "x")
    assert delay("10ms", "x") == pytest.approx(0.01) and delay("0.1ms", "x") == pytest.approx(0.0001)
    assert delay("0.05", "x") == pytest.approx(0.05)
    with pytest.raises(TopologyError):
        delay("5us", "x")
    assert experiment_name("magi-clientserver55") == "magi-clientserv" and experiment_name("1x") == "ns-1x"
