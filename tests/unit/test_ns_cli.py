"""`nestbed convert exp.ns` and `nestbed validate exp.ns`, as a user runs them: the YAML loads back as the same
experiment, what was ignored is said, errors are one line at the NS line with a non-zero exit."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nestbed.cli.main import main
from nestbed.model import load_topology

pytestmark = pytest.mark.needs("tclsh")

CORPUS = Path(__file__).parent.parent / "data" / "ns"


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["nestbed", *args])
    code = 0
    try:
        main()
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def shape(path: Path) -> dict[str, object]:
    exp = load_topology(path)
    return {"nodes": {n.name: (n.kind, n.partition, tuple(n.commands)) for n in exp.nodes.values()},
            "routing": exp.routing, "per_host": exp.embed.per_host,
            "segments": {s.name: (s.kind, s.shaping, tuple((e.node, str(e.ip)) for e in s.endpoints))
                         for s in exp.segments.values()}}


@pytest.mark.parametrize("name", ["es-basic", "es-red", "deter-containers-ex6", "crouter-lab8", "es-db1"])
def test_convert_writes_yaml_that_loads_as_the_same_experiment(name: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    source = CORPUS / f"{name}.ns"
    target = tmp_path / f"{name}.yaml"
    code, _, err = run(capsys, monkeypatch, "convert", str(source), "-o", str(target))
    assert code == 0, err
    text = target.read_text()
    assert text.startswith(f"# converted from {source}")
    assert shape(target) == shape(source)


def test_convert_lists_ignored_lines_as_comments(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "convert", str(CORPUS / "es-vtypes.ns"))
    assert code == 0
    assert any(line.startswith("# ignored: line ") and "testbed-only" in line for line in out.splitlines())


def test_convert_of_a_yaml_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nnodes: {a: {}}\n")
    code, out, err = run(capsys, monkeypatch, "convert", str(path))
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1 and "convert reads NS files" in err


def test_validate_says_what_was_ignored(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "validate", str(CORPUS / "es-vtypes.ns"))
    assert code == 0 and ": ok — experiment es-vtypes: 6 nodes" in out
    assert any(line.strip().startswith("ignored: line ") for line in out.splitlines())


def test_validate_refuses_emulabs_shared_subnets_at_the_ns_line(capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Emulab let two links share a subnet and even an address (es-set-ip, es-tbcmd test exactly that); nestbed's
    # routes need one subnet per link or LAN, so it says so, at the link's line.
    path = CORPUS / "es-set-ip.ns"
    code, out, err = run(capsys, monkeypatch, "validate", str(path))
    assert code != 0 and out == ""
    assert err.startswith(f"nestbed: {path}:13: ") and "overlaps" in err and len(err.strip().splitlines()) == 1


def test_every_other_good_corpus_file_validates(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shared_subnets = {"es-set-ip.ns", "es-tbcmd.ns"}
    for path in sorted(CORPUS.glob("*.ns")):
        if path.name.startswith("bad-") or path.name in shared_subnets:
            continue
        code, out, err = run(capsys, monkeypatch, "validate", str(path))
        assert code == 0 and ": ok — experiment" in out, (path.name, err)
