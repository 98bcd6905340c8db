"""The fast reader (rapidyaml) must read every file exactly as the PyYAML path does, or step aside."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestbed.errors import TopologyError
from nestbed.model import (
    fastyaml,
    load_topology,
    load_topology_text,
    loader,
    with_exact_lines,
)
from nestbed.plan import compile_plan

pytestmark = pytest.mark.needs("rapidyaml")

REPO = Path(__file__).resolve().parents[2]
BAD_FILES = sorted((REPO / "tests" / "corpus" / "bad").glob("*.yaml"))

BLOCK_STYLE = """\
name: lan3
# a comment at the top
nodes:
  a: {}
  b: {kind: process, commands: ["python3 -m http.server 80"]}
  # a comment between nodes
  r1:
    router: true
    commands:
      - echo one
      - |
        echo two
  bot: {count: 3, cpus: 0.5, memory: 64M}
  vm1: {kind: qemu, cpus: 1, memory: 512M}
links:
- {ends: [r1, a], bandwidth: 10Mbit, queue: 100}
-   ends: [r1, b]
    name: uplink
    loss: 0.5%
lans:
  lan0:
    members: [a, b, r1, bot]
    bandwidth: 100Mbit
  lan1: {members: [{node: a, ip: 10.9.0.5/24}, vm1]}
routing: static
embed: {processes_in: qemu, per_vhost: 4}
"""


def both(text: str):
    fast = load_topology_text(text, "t.yaml", fast=True)
    exact = load_topology_text(text, "t.yaml", fast=False)
    return fast, exact


def same_experiment(fast, exact) -> None:
    assert (fast.name, fast.routing, fast.embed) == (exact.name, exact.routing, exact.embed)
    assert fast.nodes == exact.nodes                     # locations included: nodes keep their exact lines
    assert list(fast.segments) == list(exact.segments)
    for name, segment in exact.segments.items():
        other = fast.segments[name]
        assert (other.kind, other.shaping, other.location) == (segment.kind, segment.shaping, segment.location)
        assert [(e.node, e.ip) for e in other.endpoints] == [(e.node, e.ip) for e in segment.endpoints]
    assert compile_plan(fast).to_json() == compile_plan(exact).to_json()


def test_block_style_file_is_read_fast_and_identically():
    fast, exact = both(BLOCK_STYLE)
    assert fast.read_fast and not exact.read_fast
    same_experiment(fast, exact)
    assert fast.nodes["r1"].location == "t.yaml:7"
    assert fast.segments["uplink"].location == "t.yaml:17"
    assert fast.segments["lan1"].location == "t.yaml:24"


def test_the_example_is_read_fast_and_identically():
    text = (REPO / "examples" / "lan3.yaml").read_text()
    fast, exact = both(text)
    assert fast.read_fast
    same_experiment(fast, exact)


@pytest.mark.parametrize("risky", [
    "control: yes", "control: on", "count: 010", "count: 0x10", "count: 1_000", "cpus: 1e3", "cpus: .5",
    "memory: ~", "count: 1:30", "partition: 2001-12-14", "partition: &p x", "cpus: !!int 1", "cpus: +1",
    "partition: NaN", "partition: True",
])
def test_yaml_11_forms_go_to_pyyaml(risky):
    text = f"name: t\nnodes:\n  a: {{{risky}}}\n"
    assert fastyaml.parse(text) is None


@pytest.mark.parametrize("text", [
    "name: t\nnodes: {a: {}, b: {}}\n",                     # flow mapping: lines cannot be found exactly
    "name: t\nnodes:\n  a: {}\n  a: {}\n",                    # duplicate key
    "name: t\nnodes:\n  a: {kind: qemu, kind: process}\n",    # duplicate inner key
    "name: t\nlinks: [{ends: [a, b]}]\nnodes:\n  a: {}\n  b: {}\n",
    "- just\n- a list\n",
    "name: t\nnodes:\n  \"a\": {}\n",
])
def test_unsure_shapes_go_to_pyyaml(text):
    assert fastyaml.parse(text) is None


def test_every_bad_file_gives_the_same_line_fast_or_not(monkeypatch):
    monkeypatch.setattr(loader, "FAST_READ_BYTES", 0)
    for path in BAD_FILES:
        with pytest.raises(TopologyError) as exact:
            compile_plan(load_topology(path, fast=False))
        with pytest.raises(TopologyError) as fast:
            with_exact_lines(path, compile_plan)
        assert str(fast.value) == str(exact.value), path.name


def test_errors_after_loading_are_relocated_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "FAST_READ_BYTES", 0)
    path = tmp_path / "dup.yaml"
    path.write_text("name: t\nnodes:\n  a: {}\n  c: {}\nlans:\n  lan0:\n    members:\n"
                    "      - {node: a, ip: 10.1.0.5/24}\n      - {node: c, ip: 10.1.0.5/24}\n")
    assert load_topology(path).read_fast
    with pytest.raises(TopologyError, match=r"dup.yaml:9: lan 'lan0': address 10.1.0.5 is given to both"):
        with_exact_lines(path, compile_plan)


def test_big_files_take_the_fast_reader_by_default(tmp_path):
    lines = ["name: big", "routing: none", "nodes:"] + [f"  n{i}: {{}}" for i in range(60_000)]
    lines += ["links:"] + [f"  - {{ends: [n{i}, n{i + 1}], bandwidth: 1Gbit}}" for i in range(0, 59_999, 2)]
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size >= loader.FAST_READ_BYTES
    exp = load_topology(path)
    assert exp.read_fast and len(exp.nodes) == 60_000 and len(exp.segments) == 30_000
    assert exp.nodes["n59999"].location == f"{path}:60003"
    assert exp.segments["link29999"].location == f"{path}:{60005 + 29_999}"


NAMES = st.sampled_from(["a", "b", "c", "r1", "bot", "n-2", "x9"])
SHAPING = st.fixed_dictionaries({}, optional={
    "bandwidth": st.sampled_from(["10Mbit", "1Gbit", 5000000, "100M"]),
    "loss": st.sampled_from(["1%", 0.01, "0.5%"]),
    "queue": st.integers(1, 1000),
})


@st.composite
def topologies(draw) -> str:
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    lines = ["name: gen", f"routing: {draw(st.sampled_from(['static', 'none']))}", "nodes:"]
    for name in names:
        options = draw(st.fixed_dictionaries({}, optional={
            "router": st.booleans(), "cpus": st.sampled_from([1, 0.5, 2]), "memory": st.sampled_from(["64M", "1G"]),
            "partition": st.sampled_from(["p1", "p2", 3])}))
        body = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())
        if draw(st.booleans()):
            lines.append(f"  {name}: {{{body}}}")
        else:
            lines.append(f"  {name}:" + "".join(f"\n    {part.strip()}" for part in body.split(",") if part) +
                         ("" if body else " {}"))
    pairs = draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=5))
    if pairs:
        lines.append("links:")
        for a, b in pairs:
            shaping = draw(SHAPING)
            extra = "".join(f", {k}: {v}" for k, v in shaping.items())
            lines.append(f"  - {{ends: [{a}, {b}]{extra}}}")
    if draw(st.booleans()):
        members = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4))
        lines.append("lans:\n  lan0:\n    members: [" + ", ".join(members) + "]")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(topologies())
def test_generated_topologies_read_the_same_fast_or_not(text):
    try:
        exact = load_topology_text(text, "t.yaml", fast=False)
    except TopologyError as error:
        with pytest.raises(TopologyError) as caught:
            load_topology_text(text, "t.yaml", fast=True)
        assert str(caught.value) == str(error)
        return
    fast = load_topology_text(text, "t.yaml", fast=True)
    assert fast.read_fast, textwrap.indent(text, "  ")
    same_experiment(fast, exact)
