"""Placement details: vhost packing, pins, partitions, physical nodes, and the cut against METIS called directly."""
from __future__ import annotations

import math
import random

import numpy as np
import pymetis

from nestbed.embed import embed, evaluate, violations
from nestbed.model.cluster import Cluster, HostSpec
from nestbed.model.topology import EmbedSettings, Experiment


def hosts(*specs: HostSpec) -> Cluster:
    return Cluster({spec.name: spec for spec in specs})


def test_processes_fill_the_fewest_vhosts_evenly():
    exp = Experiment("v", embed=EmbedSettings(processes_in="qemu", per_vhost=10))
    for i in range(11):
        exp.process(f"p{i}")
    embedding = embed(exp, hosts(HostSpec("h1")))
    assert sorted(embedding.vhosts) == ["vh-h1-0", "vh-h1-1"]
    sizes = sorted(len(nodes) for vhost, nodes in embedding.hosts()["h1"].items() if vhost)
    assert sizes == [5, 6]


def test_a_vhost_pin_names_the_vm_and_others_fill_it():
    exp = Experiment("v", embed=EmbedSettings(processes_in="qemu", per_vhost=3))
    exp.process("a", host="vh-h2-4")
    for i in range(2):
        exp.process(f"p{i}")
    embedding = embed(exp, hosts(HostSpec("h1", max_containers=0), HostSpec("h2")))
    assert embedding.placement["a"].vhost == "vh-h2-4"
    assert embedding.vhosts == {"vh-h2-4": "h2"}          # one VM is enough for all three
    assert {embedding.placement[f"p{i}"].vhost for i in range(2)} == {"vh-h2-4"}


def test_vhosts_count_in_max_vms():
    exp = Experiment("v", embed=EmbedSettings(processes_in="qemu", per_vhost=2))
    for i in range(4):
        exp.process(f"p{i}")
    exp.qemu("vm")
    embedding = embed(exp, hosts(HostSpec("h1", max_vms=1), HostSpec("h2", max_vms=2)))
    per_host = embedding.hosts()
    assert sum(1 for v in per_host["h1"] if v) + len(per_host["h1"].get(None, [])) <= 1
    assert violations(exp, hosts(HostSpec("h1", max_vms=1), HostSpec("h2", max_vms=2)), embedding) == []


def test_pins_and_partitions_hold_and_traffic_follows_them():
    exp = Experiment("p")
    for name in "abcdef":
        exp.process(name, partition="x" if name in "ab" else None, host="h2" if name == "a" else None)
    for x, y in ("bc", "cd", "de", "ef"):
        exp.link(x, y, bandwidth="1Gbit")
    embedding = embed(exp, hosts(HostSpec("h1"), HostSpec("h2")))
    assert embedding.placement["a"].host == embedding.placement["b"].host == "h2"
    assert embedding.metrics.inter_host_bandwidth_bps == 1e9      # one cut on the chain, 3 + 3


def test_physical_node_gets_a_host_to_itself_and_its_links_are_cut():
    exp = Experiment("p")
    exp.physical("t")
    for name in "ab":
        exp.process(name)
        exp.link(name, "t", bandwidth="10Mbit")
    cluster = hosts(HostSpec("h1"), HostSpec("h2"), HostSpec("h3"))
    embedding = embed(exp, cluster)
    t_host = embedding.placement["t"].host
    assert [n for n, p in embedding.placement.items() if p.host == t_host] == ["t"]
    assert embedding.metrics.inter_host_bandwidth_bps == 20e6


def test_the_physical_node_leaves_the_host_the_vms_need():
    exp = Experiment("p")
    exp.physical("t")
    exp.qemu("v1")
    exp.qemu("v2")
    cluster = hosts(HostSpec("big", max_containers=4, max_vms=1), HostSpec("small", max_containers=2))
    embedding = embed(exp, cluster)
    assert embedding.placement["t"].host == "big"


def random_geometric(n: int, seed: int) -> tuple[list[tuple[int, int, int]], int]:
    rng = random.Random(seed)
    points = [(rng.random(), rng.random()) for _ in range(n)]
    radius = math.sqrt(4.0 / (math.pi * n))
    cells: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(points):
        cells.setdefault((int(x / radius), int(y / radius)), []).append(i)
    edges = []
    for (cx, cy), members in cells.items():
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for i in members:
                    for j in cells.get((cx + dx, cy + dy), []):
                        if i < j and math.dist(points[i], points[j]) <= radius:
                            edges.append((i, j, rng.choice([10**7, 10**8, 10**9])))
    return edges, n


def test_cut_is_no_worse_than_metis_called_directly():
    edges, n = random_geometric(2000, seed=5)
    k = 10
    exp = Experiment("rgg", embed=EmbedSettings(per_host=10**6))
    for i in range(n):
        exp.process(f"n{i}")
    for number, (i, j, bw) in enumerate(edges):
        exp.link(f"n{i}", f"n{j}", bandwidth=bw, name=f"l{number}")
    cluster = Cluster({f"h{i}": HostSpec(f"h{i}", max_containers=math.ceil(1.1 * n / k)) for i in range(k)})
    ours = embed(exp, cluster).metrics

    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for i, j, bw in edges:
        adjacency[i].append((j, bw // 10**6))
        adjacency[j].append((i, bw // 10**6))
    xadj = np.cumsum([0] + [len(a) for a in adjacency])
    adjncy = [j for a in adjacency for j, _ in a]
    weights = [w for a in adjacency for _, w in a]
    _, parts = pymetis.part_graph(k, pymetis.CSRAdjacency(xadj, adjncy), eweights=weights,
                                  options=pymetis.Options(seed=0))
    direct = evaluate(exp, cluster, {f"n{i}": f"h{p}" for i, p in enumerate(parts)})
    assert ours.violations == 0
    assert ours.inter_host_bandwidth_bps <= 1.05 * direct.inter_host_bandwidth_bps


def test_a_physical_node_leaves_the_hosts_the_rest_needs():
    """Found by hypothesis: the least roomy host by average containers (no VMs) is the one the processes need;
    the physical node must take the host with one container slot instead."""
    from nestbed.embed import embed
    from nestbed.model.cluster import Cluster, HostSpec
    from nestbed.model.topology import Experiment
    exp = Experiment("phys")
    for name in ("n0", "n3", "n4"):
        exp.process(name)
    exp.process("n1", cpus=1)
    exp.physical("n2")
    exp.process("n5", host="h0", cpus=1)
    exp.qemu("n6")
    exp.process("n7", cpus=0.5)
    cluster = Cluster({"h0": HostSpec("h0", cpus=2), "h1": HostSpec("h1", max_vms=0),
                       "h2": HostSpec("h2", max_containers=1)})
    embedding = embed(exp, cluster, seed=1)
    assert embedding.placement["n2"].host == "h2" and embedding.placement["n6"].host == "h0"
