"""The seed's example (two processes and a qemu VM on a LAN) embedded three ways by changing only the cluster
file and `embed`, plus the output shape that planning and the CLI read."""
from __future__ import annotations

import json
import textwrap

from nestbed.embed import Embedding, Placement, embed, violations
from nestbed.model import load_topology_text
from nestbed.model.cluster import load_cluster_text, local_cluster

SEED = """\
    name: seed
    nodes:
      a: {}
      b: {}
      vm1: {kind: qemu}
    lans:
      lan0: {members: [a, b, vm1], bandwidth: 100Mbit}
    """


def topology(extra: str = ""):
    return load_topology_text(textwrap.dedent(SEED) + extra, "seed.yaml")


def test_one_host_everything_on_it_as_today():
    embedding = embed(topology(), local_cluster())
    assert embedding.placement == {n: Placement("local", None) for n in ("a", "b", "vm1")}
    assert embedding.vhosts == {} and embedding.cut_segments == {}
    assert embedding.metrics.inter_host_bandwidth_bps == 0 and embedding.metrics.violations == 0
    assert embedding.hosts() == {"local": {None: ["a", "b", "vm1"]}}


def test_one_host_processes_in_qemu_share_one_vhost_beside_the_vm():
    exp = topology("embed: {processes_in: qemu}\n")
    cluster = load_cluster_text("hosts:\n  h1: {max_vms: 2}\n", "lab.yaml")
    embedding = embed(exp, cluster)
    assert embedding.placement["a"] == Placement("h1", "vh-h1-0")
    assert embedding.placement["b"] == Placement("h1", "vh-h1-0")
    assert embedding.placement["vm1"] == Placement("h1", None)
    assert embedding.vhosts == {"vh-h1-0": "h1"}
    assert embedding.hosts() == {"h1": {"vh-h1-0": ["a", "b"], None: ["vm1"]}}


def test_two_hosts_spread_the_nodes_and_report_the_cut():
    cluster = load_cluster_text("hosts:\n  h1: {}\n  h2: {}\n", "lab.yaml")
    embedding = embed(topology(), cluster)
    hosts = {p.host for p in embedding.placement.values()}
    assert hosts == {"h1", "h2"}                              # both hosts used: 2 + 1
    assert embedding.cut_segments == {"lan0": ["h1", "h2"]}
    assert embedding.metrics.inter_host_bandwidth_bps == 100e6   # the LAN touches one extra host
    assert embedding.metrics.cut_segments == 1
    assert abs(embedding.metrics.imbalance - 1 / 3) < 1e-9       # 2 nodes where 1.5 is fair
    assert embedding.metrics.violations == 0


def test_the_json_shape():
    cluster = load_cluster_text("hosts:\n  h1: {}\n  h2: {}\n", "lab.yaml")
    data = embed(topology("embed: {processes_in: qemu}\n"), cluster).to_json()
    json.dumps(data)
    assert set(data) == {"placement", "vhosts", "metrics", "cut_segments"}
    assert set(data["placement"]["a"]) == {"host", "vhost"}
    assert all(set(v) == {"host"} for v in data["vhosts"].values())
    assert set(data["metrics"]) == {"inter_host_bandwidth_bps", "cut_segments", "imbalance", "violations",
                                    "seconds"}
    for place in data["placement"].values():
        if place["vhost"] is not None:
            assert data["vhosts"][place["vhost"]]["host"] == place["host"]


def test_hosts_tree_lists_empty_hosts_too():
    cluster = load_cluster_text("hosts:\n  h1: {}\n  h2: {}\n  h3: {}\n  h4: {}\n", "lab.yaml")
    exp = load_topology_text("name: one\nnodes:\n  a: {}\n", "t.yaml")
    tree = embed(exp, cluster).hosts()
    assert list(tree) == ["h1", "h2", "h3", "h4"]
    assert sum(len(nodes) for vhosts in tree.values() for nodes in vhosts.values()) == 1


def test_same_seed_same_answer():
    cluster = load_cluster_text("emulate: 3\n", "lab.yaml")
    text = "name: ring\nnodes:\n  n: {count: 12}\nlans:\n  l0: {members: [n]}\n"
    exp = load_topology_text(text, "t.yaml")
    first, second = embed(exp, cluster, seed=7), embed(exp, cluster, seed=7)
    assert first.placement == second.placement and first.vhosts == second.vhosts


def test_violations_sees_a_broken_embedding():
    exp = topology()
    cluster = load_cluster_text("hosts:\n  h1: {max_containers: 1}\n  h2: {}\n", "lab.yaml")
    bad = Embedding({n: Placement("h1") for n in ("a", "b", "vm1")}, {}, {}, embed(exp, cluster).metrics)
    assert any("containers" in v for v in violations(exp, cluster, bad))
