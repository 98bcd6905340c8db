"""The topology file: good files load into the right model; every bad file in tests/corpus/bad gets one clear line
with file:line, and no input makes the loader fail with anything but a TopologyError."""
from __future__ import annotations

import ipaddress
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestbed.errors import TopologyError
from nestbed.model import load_topology, load_topology_text
from nestbed.plan import compile_plan

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus" / "bad"
BAD_FILES = sorted(CORPUS.glob("*.yaml"))


def load(text: str, path: str = "t.yaml"):
    return load_topology_text(textwrap.dedent(text), path)


# -- the corpus of bad topologies ------------------------------------------------------------------------------
def corpus_expectations(path: Path) -> tuple[str, int | None]:
    lines = path.read_text().splitlines()
    match = re.fullmatch(r"# expect: (.+)", lines[0]) if lines else None
    assert match, f"{path.name}: the first line must be '# expect: <part of the error>'"
    line = re.fullmatch(r"# line: (\d+)", lines[1]) if len(lines) > 1 else None
    return match.group(1), int(line.group(1)) if line else None


def test_the_corpus_covers_the_mistakes_users_make():
    assert len(BAD_FILES) >= 30
    for path in BAD_FILES:
        corpus_expectations(path)


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_topology_gets_one_clear_line(path: Path):
    expected, line = corpus_expectations(path)
    with pytest.raises(TopologyError) as caught:
        compile_plan(load_topology(path))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message and message == message.strip()
    assert "{path}" not in message and "Located" not in message
    if line is not None:
        assert message.startswith(f"{path}:{line}: "), message
    else:
        assert message.startswith(f"{path}:"), message


def test_missing_file_is_one_line():
    with pytest.raises(TopologyError, match="does not exist"):
        load_topology("/nonexistent/topology.yaml")


def test_directory_is_one_line(tmp_path):
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load_topology(tmp_path)


def test_binary_file_is_one_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(TopologyError):
        load_topology(path)


# -- good files ------------------------------------------------------------------------------------------------
def test_the_example_loads():
    exp = load_topology(REPO / "examples" / "lan3.yaml")
    assert exp.name == "lan3"
    assert list(exp.nodes) == ["a", "b", "r1", "c"]
    assert exp.nodes["r1"].router and not exp.nodes["a"].router
    assert exp.nodes["b"].commands == ["python3 -m http.server 80"]
    assert [s.name for s in exp.segments.values()] == ["link0", "lan0"]


def test_the_design_example_loads():
    exp = load("""
        name: lan3
        nodes:
          a: {}
          b: {kind: process, commands: ["python3 -m http.server 80"]}
          r1: {kind: process, router: true}
          vm1: {kind: qemu, cpus: 1, memory: 512M}
          t: {kind: physical}
          bot: {count: 5}
        links:
          - {ends: [r1, t], bandwidth: 10Mbit, delay: 20ms, jitter: 2ms, loss: 0.5%, queue: 100}
        lans:
          lan0: {members: [a, b, r1, vm1, bot], bandwidth: 100Mbit, delay: 1ms}
        routing: static
        embed:
          processes_in: host
          per_vhost: 10
          per_host: 1000
        """)
    assert exp.nodes["a"].kind == "process"
    assert exp.nodes["vm1"].kind == "qemu" and exp.nodes["vm1"].cpus == 1.0
    assert exp.nodes["vm1"].memory == 512 * 2**20
    assert exp.nodes["t"].kind == "physical"
    assert exp.nodes["bot"].count == 5
    link = exp.segments["link0"]
    assert [e.node for e in link.ends] == ["r1", "t"]
    shaping = link.shaping
    assert (shaping.bandwidth, shaping.queue) == (10_000_000, 100)
    assert shaping.delay == pytest.approx(0.020) and shaping.jitter == pytest.approx(0.002)
    assert shaping.loss == pytest.approx(0.005)
    assert shaping.needs_netem
    lan = exp.segments["lan0"]
    assert [m.node for m in lan.members] == ["a", "b", "r1", "vm1", "bot"]
    assert lan.shaping.bandwidth == 100_000_000 and lan.shaping.delay == pytest.approx(0.001)
    assert exp.routing == "static"
    assert (exp.embed.processes_in, exp.embed.per_vhost, exp.embed.per_host) == ("host", 10, 1000)


def test_node_options():
    exp = load("""
        name: opts
        nodes:
          a:
          b: {host: h1, partition: 3, control: true}
          c: {router: false, commands: ["echo hi", "sleep 1"]}
          d: {kind: qemu, cpus: 0.5, memory: 1G}
        """)
    a, b, c, d = (exp.nodes[n] for n in "abcd")
    assert (a.kind, a.router, a.commands, a.count, a.control) == ("process", False, [], None, False)
    assert (b.host, b.partition, b.control) == ("h1", "3", True)
    assert c.commands == ["echo hi", "sleep 1"]
    assert (d.cpus, d.memory) == (0.5, 2**30)


def test_count_expands_in_order():
    exp = load("""
        name: cnt
        nodes:
          a: {}
          bot: {count: 3, router: true, commands: [run]}
          z: {}
        """)
    nodes = exp.expanded_nodes()
    assert list(nodes) == ["a", "bot-0", "bot-1", "bot-2", "z"]
    assert all(nodes[f"bot-{i}"].router and nodes[f"bot-{i}"].count is None for i in range(3))
    assert nodes["bot-1"].commands == ["run"] and nodes["bot-1"].commands is not nodes["bot-2"].commands
    assert exp.nodes["bot"].count == 3       # the declared group stays as written


def test_a_group_name_and_its_members_do_not_collide_with_similar_names():
    exp = load("""
        name: cnt
        nodes:
          bot: {count: 2}
          bot-2: {}
          bot-0-0: {}
        """)
    assert list(exp.expanded_nodes()) == ["bot-0", "bot-1", "bot-2", "bot-0-0"]


def test_lan_members_keep_their_order_and_groups_expand_in_place():
    exp = load("""
        name: order
        nodes:
          z: {}
          a: {}
          bot: {count: 2}
          m: {}
        lans:
          lan0: {members: [m, bot, z, a]}
        """)
    members = exp.segment_members(exp.segments["lan0"], exp.expanded_nodes())
    assert [m.node for m in members] == ["m", "bot-0", "bot-1", "z", "a"]


def test_links_are_named_in_file_order_unless_named():
    exp = load("""
        name: names
        nodes: {a: {}, b: {}, c: {}}
        links:
          - {ends: [a, b]}
          - {ends: [b, c]}
          - {name: wan, ends: [a, c]}
          - {ends: [a, c]}
        """)
    assert list(exp.segments) == ["link0", "link1", "wan", "link3"]
    assert [e.node for e in exp.segments["link3"].ends] == ["a", "c"]


def test_links_and_lans_keep_file_order_between_them():
    exp = load("""
        name: mixed
        nodes: {a: {}, b: {}, c: {}}
        lans:
          first: {members: [a, b]}
        links:
          - {ends: [b, c]}
        """)
    assert list(exp.segments) == ["first", "link0"]


def test_block_style_members_with_addresses():
    exp = load("""
        name: addr
        nodes: {a: {}, b: {}}
        lans:
          lan0:
            members:
              - a
              - node: b
                ip: 10.1.0.20/24
        links:
          - ends:
              - {node: a, ip: 192.168.9.1/30}
              - b
        """)
    a, b = exp.segments["lan0"].members
    assert a.ip is None and b.ip == ipaddress.IPv4Interface("10.1.0.20/24")
    assert b.location == "t.yaml:8"      # each member remembers its own line
    end_a, end_b = exp.segments["link0"].ends
    assert end_a.ip == ipaddress.IPv4Interface("192.168.9.1/30") and end_a.location == "t.yaml:12"


def test_routing_none_and_embed_qemu():
    exp = load("""
        name: opts
        nodes: {a: {}}
        routing: none
        embed: {processes_in: qemu, per_vhost: 4}
        """)
    assert exp.routing == "none"
    assert (exp.embed.processes_in, exp.embed.per_vhost, exp.embed.per_host) == ("qemu", 4, 1000)


@pytest.mark.parametrize("text", ["name: solo", "name: solo\nnodes:\nlinks:\nlans:", "name: solo\nnodes: {}"])
def test_an_experiment_may_be_empty(text):
    exp = load_topology_text(text, "t.yaml")
    assert exp.nodes == {} and exp.segments == {}
    assert compile_plan(exp).nodes == []


def test_yaml_anchors_are_allowed():
    exp = load("""
        name: anchors
        nodes:
          r1: &router {router: true}
          r2: *router
        """)
    assert exp.nodes["r2"].router


def test_location_of_errors_is_the_path_given():
    with pytest.raises(TopologyError, match=r"^some/where\.yaml:3: unknown key 'bogus'"):
        load_topology_text("name: x\nnodes: {}\nbogus: 1\n", "some/where.yaml")


def test_duplicate_keys_anywhere_are_refused():
    with pytest.raises(TopologyError, match=r"t\.yaml:4: key 'name' appears twice \(first on line 1\)"):
        load_topology_text("name: x\nnodes: {}\n\nname: y\n", "t.yaml")


# -- no input crashes the loader -------------------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["10Mbit", "5ms", "1%", "10MB", "512M", "a", "b",
                                                           "10.0.0.1/24", "10.0.0.0/24", "bot", "-1", "1e999"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["node", "ip", "ends", "members", "count", "x"]), inner,
                                        max_size=3), max_leaves=6)
FIELDS = [("nodes", "a", "kind"), ("nodes", "a", "count"), ("nodes", "a", "memory"), ("nodes", "a", "cpus"),
          ("nodes", "a", "commands"), ("nodes", "a", "router"), ("nodes", "a", "host"),
          ("links", 0, "ends"), ("links", 0, "bandwidth"), ("links", 0, "delay"), ("links", 0, "jitter"),
          ("links", 0, "loss"), ("links", 0, "queue"), ("links", 0, "name"),
          ("lans", "lan0", "members"), ("lans", "lan0", "bandwidth"), ("embed", None, "per_host"),
          (None, None, "routing"), (None, None, "name"), (None, None, "nodes"), (None, None, "links")]


def good_topology() -> dict:
    return {"name": "fuzz", "nodes": {"a": {}, "b": {}, "bot": {"count": 2}},
            "links": [{"ends": ["a", "b"], "delay": "5ms"}],
            "lans": {"lan0": {"members": ["a", "bot", {"node": "b", "ip": "10.9.0.2/24"}]}},
            "embed": {}}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=values)
def test_any_value_anywhere_gives_a_topology_error_or_a_plan(field, value):
    topo = good_topology()
    section, item, key = field
    target = topo if section is None else topo[section] if item is None else topo[section][item]
    target[key] = value
    text = yaml.safe_dump(topo)
    try:
        compile_plan(load_topology_text(text, "f.yaml"))
    except TopologyError as err:
        assert "\n" not in str(err) and str(err).startswith("f.yaml:")


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("name: {}[]-,&*!|>'\"#\n\t abc123%")), max_size=60))
def test_any_text_gives_a_topology_error_or_a_plan(text):
    try:
        compile_plan(load_topology_text(text, "f.yaml"))
    except TopologyError as err:
        assert "\n" not in str(err)
