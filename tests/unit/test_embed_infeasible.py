"""Infeasible input gets one line naming the constraint that fails and by how much (and where, when a line of
the topology is to blame)."""
from __future__ import annotations

import textwrap

import pytest

from nestbed.embed import EmbeddingError, embed
from nestbed.errors import TopologyError
from nestbed.model import load_topology_text
from nestbed.model.cluster import load_cluster_text

TWO = "hosts:\n  h1: {}\n  h2: {}\n"


def attempt(topology: str, cluster: str) -> str:
    exp = load_topology_text("name: t\n" + textwrap.dedent(topology), "t.yaml")
    with pytest.raises(EmbeddingError) as caught:
        embed(exp, load_cluster_text(textwrap.dedent(cluster), "c.yaml"))
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, TopologyError)
    return message


CASES = [
    ("more physical nodes than hosts",
     "nodes:\n  t: {kind: physical, count: 3}\n", TWO,
     "3 physical nodes but 2 hosts; a physical node takes a whole host: add hosts or use qemu nodes"),
    ("physical nodes leave no host",
     "nodes:\n  t: {kind: physical, count: 2}\n  a: {}\n", TWO,
     "2 physical nodes take all 2 hosts, leaving none for 1 other node; add a host"),
    ("pins over per_host",
     "nodes:\n  a: {count: 14, host: h2}\nembed: {per_host: 10}\n", TWO,
     "host 'h2' pinned by 14 nodes but per_host is 10; pin fewer nodes there or raise its capacity"),
    ("pins over max_containers",
     "nodes:\n  a: {count: 3, host: h1}\n", "hosts:\n  h1: {max_containers: 2}\n  h2: {}\n",
     "host 'h1' pinned by 3 nodes but max_containers is 2"),
    ("pins over cpus",
     "nodes:\n  v: {kind: qemu, count: 3, host: h1, cpus: 2}\n", "hosts:\n  h1: {cpus: 4}\n  h2: {}\n",
     "host 'h1' pinned by nodes needing 6 cpus but it has 4"),
    ("partition too big for any host",
     "nodes:\n  a: {count: 12, partition: p}\nembed: {per_host: 10}\n", TWO,
     "t.yaml:3: partition 'p' fits no host: on 'h1' it needs 12 nodes but per_host is 10"),
    ("qemu nodes over max_vms",
     "nodes:\n  v: {kind: qemu, count: 12}\n", "hosts:\n  h1: {max_vms: 4}\n  h2: {max_vms: 4}\n",
     "12 qemu nodes but the 2 hosts allow at most 8 VMs (max_vms); add hosts or raise max_vms"),
    ("vhosts count in max_vms",
     "nodes:\n  v: {kind: qemu, count: 2}\n  p: {count: 25}\nembed: {processes_in: qemu}\n",
     "hosts:\n  h1: {max_vms: 2}\n  h2: {max_vms: 2}\n",
     "2 qemu nodes and at least 3 vhosts but the 2 hosts allow at most 4 VMs (max_vms)"),
    ("memory of one node over every host",
     "nodes:\n  vm1: {kind: qemu, memory: 4G}\n", "hosts:\n  h1: {memory: 2G}\n  h2: {memory: 1G}\n",
     "t.yaml:3: node 'vm1' fits no host: on 'h1' it needs 4G memory but it has 2G"),
    ("memory of all nodes over all hosts",
     "nodes:\n  vm: {kind: qemu, count: 5, memory: 1G}\n", "hosts:\n  h1: {memory: 2G}\n  h2: {memory: 2G}\n",
     "the nodes need 5G memory but the 2 hosts have 4G"),
    ("cpus of all nodes over all hosts",
     "nodes:\n  vm: {kind: qemu, count: 5}\n", "hosts:\n  h1: {cpus: 2}\n  h2: {cpus: 2}\n",
     "the nodes need 5 cpus but the 2 hosts have 4"),
    ("containers over all hosts",
     "nodes:\n  a: {count: 30}\n", "hosts:\n  h1: {max_containers: 10}\n  h2: {max_containers: 10}\n",
     "30 process and qemu nodes but the 2 hosts take at most 20 (max_containers is 10)"),
    ("pin to an unknown host",
     "nodes:\n  a: {}\n  b: {host: h9}\n", TWO,
     "t.yaml:4: node 'b' is pinned to host 'h9', which the cluster does not have; hosts: h1, h2"),
    ("pin to a vhost of an unknown host",
     "nodes:\n  a: {host: vh-h9-0}\nembed: {processes_in: qemu}\n", TWO,
     "node 'a' is pinned to host 'vh-h9-0', which the cluster does not have"),
    ("pin to a vhost without nesting",
     "nodes:\n  a: {host: vh-h1-0}\n", TWO,
     "t.yaml:3: node 'a' is pinned to vhost 'vh-h1-0' but embed.processes_in is host"),
    ("qemu node pinned into a vhost",
     "nodes:\n  v: {kind: qemu, host: vh-h1-0}\nembed: {processes_in: qemu}\n", TWO,
     "node 'v' is pinned to vhost 'vh-h1-0' but a qemu node runs on a host, not inside a vhost"),
    ("vhost pinned by more than per_vhost",
     "nodes:\n  a: {count: 3, host: vh-h1-0}\nembed: {processes_in: qemu, per_vhost: 2}\n", TWO,
     "vhost 'vh-h1-0' pinned by 3 processes but per_vhost is 2"),
    ("partition pinned to two hosts",
     "nodes:\n  a: {partition: p, host: h1}\n  b: {partition: p, host: h2}\n", TWO,
     "t.yaml:4: partition 'p' is pinned to host 'h1' (t.yaml:3) and to host 'h2'"),
    ("physical node in a partition with others",
     "nodes:\n  t: {kind: physical, partition: p}\n  a: {partition: p}\n", TWO,
     "partition 'p' holds physical node 't' and 1 other node, but a physical node takes a whole host"),
    ("two physical nodes pinned to one host",
     "nodes:\n  t: {kind: physical, host: h1}\n  u: {kind: physical, host: h1}\n", TWO,
     "physical nodes 't' and 'u' are both pinned to host 'h1'"),
    ("physical node pinned beside other nodes",
     "nodes:\n  t: {kind: physical, host: h1}\n  a: {host: h1}\n", TWO,
     "host 'h1' is pinned by physical node 't' and 1 other node"),
    ("physical node over its host's memory",
     "nodes:\n  t: {kind: physical, host: h1, memory: 8G}\n", "hosts:\n  h1: {memory: 4G}\n",
     "physical node 't' pinned to host 'h1' needs 8G memory but it has 4G"),
    ("partitions that no packing fits",
     "nodes:\n  a: {count: 2, partition: p}\n  b: {count: 2, partition: q}\n  c: {count: 2, partition: r}\n",
     "hosts:\n  h1: {max_containers: 3}\n  h2: {max_containers: 3}\n",
     "no placement meets every constraint: host"),
    ("one host, too small",
     "nodes:\n  a: {count: 5}\n", "hosts:\n  h1: {max_containers: 4}\n",
     "5 process and qemu nodes but the host takes at most 4 (max_containers is 4)"),
]


@pytest.mark.parametrize("topology, cluster, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_infeasible_input_is_one_line(topology: str, cluster: str, expected: str):
    message = attempt(topology, cluster)
    assert expected in message, message
