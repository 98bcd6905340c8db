"""Two public NS files (Emulab's tutorial loop and its testsuite's lan1, tests/data/ns) brought up unchanged:
pings cross their LANs by name (no rtproto: no routes, so node3 is reached on lan2 as node3-lan2), and down
leaves nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import exec_in, nestbed, our_namespaces, state_dir

pytestmark = pytest.mark.needs("tclsh")

CORPUS = Path(__file__).parent.parent / "data" / "ns"


@pytest.mark.parametrize(("file", "name", "pairs"), [
    ("tut-loop.ns", "tut-loop", [("node-1", "node-2"), ("node-3", "node-1")]),
    ("es-lan1.ns", "es-lan1", [("node1", "node3"), ("node4", "node3-lan2"), ("node2", "node1")]),
])
def test_an_ns_file_comes_up_and_pings_cross(file: str, name: str, pairs: list[tuple[str, str]]) -> None:
    try:
        shown = nestbed("up", str(CORPUS / file)).stdout
        assert f"{name} is up" in shown, shown
        for source, target in pairs:
            result = exec_in(name, source, "ping", "-c1", "-W2", target)
            assert "1 received" in result.stdout, (source, target, result.stdout)
    finally:
        nestbed("down", name, check=False)
    assert our_namespaces(name) == [] and not state_dir(name).exists()
