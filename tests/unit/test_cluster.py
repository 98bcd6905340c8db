"""The cluster file (ptopo): good files load with their capacities and units; each mistake is one line with
file:line."""
from __future__ import annotations

import textwrap

import pytest

from nestbed.errors import TopologyError
from nestbed.model.cluster import (
    HostSpec,
    load_cluster,
    load_cluster_text,
    local_cluster,
)


def load(text: str):
    return load_cluster_text(textwrap.dedent(text), "c.yaml")


def test_the_design_example_loads_with_units():
    cluster = load("""\
        hosts:
          h1: {ssh: root@192.0.2.10, cpus: 16, memory: 64G, max_vms: 8, max_containers: 200}
          h2: {ssh: root@192.0.2.11}
        emulate: 0
        """)
    assert list(cluster.hosts) == ["h1", "h2"]
    h1 = cluster.hosts["h1"]
    assert (h1.ssh, h1.cpus, h1.memory, h1.max_vms, h1.max_containers) == ("root@192.0.2.10", 16.0, 64 * 2**30, 8,
                                                                           200)
    assert h1.location == "c.yaml:2"
    assert cluster.hosts["h2"] == HostSpec("h2", ssh="root@192.0.2.11", location="c.yaml:3")
    assert cluster.emulate == 0 and cluster.source == "c.yaml"


def test_emulate_adds_hosts_and_a_listed_emulated_host_keeps_its_capacities():
    cluster = load("""\
        hosts:
          emu1: {max_vms: 2}
        emulate: 3
        """)
    assert sorted(cluster.hosts) == ["emu0", "emu1", "emu2"]
    assert cluster.hosts["emu1"].max_vms == 2 and cluster.hosts["emu0"].max_vms is None
    assert cluster.is_emulated("emu2") and not cluster.is_emulated("h1")


def test_emulate_alone_is_a_cluster():
    assert list(load("emulate: 2\n").hosts) == ["emu0", "emu1"]


def test_underlay_mtu_defaults_to_1500_and_can_be_set():
    assert load("emulate: 2\n").underlay_mtu == 1500
    assert load("emulate: 2\nunderlay_mtu: 9000\n").underlay_mtu == 9000


def test_a_host_with_no_settings_is_fine():
    assert load("hosts:\n  h1:\n").hosts["h1"].cpus is None


def test_local_cluster_is_this_machine_without_limits_unless_given():
    assert list(local_cluster().hosts) == ["local"]
    assert local_cluster().hosts["local"].memory is None
    assert local_cluster(cpus=2, memory=2**30).hosts["local"].cpus == 2


def test_load_from_path(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text("hosts:\n  h1: {cpus: 4}\n")
    assert load_cluster(path).hosts["h1"].location == f"{path}:2"


@pytest.mark.parametrize("text, expected, line", [
    ("hosts:\n  h1: {cpu: 4}\n", "unknown key 'cpu' in host 'h1'; did you mean 'cpus'?", 2),
    ("hosts:\n  h1: {}\nemulte: 2\n", "unknown key 'emulte' in the cluster file; did you mean 'emulate'?", 3),
    ("hosts:\n  h1: {memory: 64GB/s}\n", "host 'h1': memory '64GB/s' is not a size", 2),
    ("hosts:\n  h1: {memory: 512}\n", "below 16M", 2),
    ("hosts:\n  h1: {cpus: -1}\n", "host 'h1': cpus -1 must be a number above 0", 2),
    ("hosts:\n  h1: {max_vms: two}\n", "host 'h1': max_vms 'two' must be an integer of 0 or more", 2),
    ("hosts:\n  h1: {max_containers: -3}\n", "max_containers -3 must be an integer of 0 or more", 2),
    ("hosts:\n  h1: {max_vms: true}\n", "max_vms True must be an integer", 2),
    ("hosts:\n  h1: {ssh: 'root@x y'}\n", "ssh 'root@x y' must be a destination", 2),
    ("hosts:\n  H1: {}\n", "host name 'H1' is not valid", 2),
    ("hosts:\n  h1: [1, 2]\n", "host 'h1' must be a mapping", 2),
    ("hosts: [h1, h2]\n", "hosts must be a mapping of host names", 1),
    ("hosts: {}\n", "the cluster has no hosts", 1),
    ("emulate: -1\n", "emulate -1 must be an integer from 0 to 1000", 1),
    ("emulate: many\n", "emulate 'many' must be an integer", 1),
    ("emulate: 2\nunderlay_mtu: 100\n", "underlay_mtu 100 must be an integer from 576 to 65535", 2),
    ("emulate: 2\nunderlay_mtu: 1500B\n", "underlay_mtu '1500B' must be an integer", 2),
    ("emulate: 2\nunderlay_mtu: true\n", "underlay_mtu True must be an integer", 2),
    ("hosts:\n  emu0: {ssh: root@h}\nemulate: 1\n", "host 'emu0' is emulated (emulate: 1) and cannot have ssh", 2),
    ("hosts:\n  h1: {}\n  h1: {}\n", "key 'h1' appears twice", 3),
    ("hosts:\n  h1: {cpus: [4\n", "YAML syntax", None),
    ("# nothing here\n", "the cluster file is empty", 1),
    ("- h1\n", "the cluster file must be a mapping", 1),
])
def test_bad_cluster_file_is_one_line_with_its_line(text: str, expected: str, line: int | None):
    with pytest.raises(TopologyError) as caught:
        load_cluster_text(text, "c.yaml")
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith(f"c.yaml:{line}: " if line else "c.yaml:"), message


def test_missing_cluster_file_is_one_line():
    with pytest.raises(TopologyError, match="cluster file '/nonexistent.yaml' does not exist"):
        load_cluster("/nonexistent.yaml")
