"""An NS file's events played by `nestbed run NAME file.ns` (tests/data/ns/nb-events.ns, nestbed's own): its
Program, started at t=1 in node a, writes a file; its link goes down at t=2 (links.json says so, a ping across it
fails); down leaves nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import exec_in, nestbed, our_namespaces, state_dir

pytestmark = pytest.mark.needs("tclsh")

TEMPLATE = Path(__file__).parent.parent / "data" / "ns" / "nb-events.ns"
NAME = "nb-events"


def test_nestbed_run_plays_an_ns_files_program_and_link_down(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "nb-events.ns"
    path.write_text(TEMPLATE.read_text().replace("@DIR@", str(tmp_path)))
    stamp = tmp_path / "program-ran"
    try:
        shown = nestbed("up", str(path)).stdout
        assert f"{NAME} is up" in shown, shown
        assert "1 received" in exec_in(NAME, "a", "ping", "-c1", "-W2", "b").stdout       # the link is up first
        assert not stamp.exists()
        played = nestbed("run", NAME, str(path), "--timeout", "60")
        assert "scenario reached exit" in played.stdout, played.stdout + played.stderr
        assert stamp.read_text() == "ran-in-a\n", stamp.read_text()        # in node a (its hostname)
        links = json.loads((state_dir(NAME) / "links.json").read_text())
        assert links["segments"]["link0"]["state"] == "down", links
        lost = exec_in(NAME, "a", "ping", "-c1", "-W1", "b", check=False)
        assert lost.returncode != 0 and "1 received" not in lost.stdout, lost.stdout
    finally:
        nestbed("down", NAME, check=False)
    assert our_namespaces(NAME) == [] and not state_dir(NAME).exists()
