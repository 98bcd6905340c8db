"""Real hosts in a cluster file: their keys, checked in one line each; how they are reached and what their plans
need (cluster/real.py); the marked iptables rules of a node in its host's own namespace (realize/hostnetns.py)."""
from __future__ import annotations

import textwrap

import pytest

from nestbed.cluster import real
from nestbed.cluster.ssh import ConnectInfo
from nestbed.errors import ExperimentError, TopologyError
from nestbed.model.cluster import load_cluster_text
from nestbed.realize.hostnetns import marked_rules_removal


def load(text: str):
    return load_cluster_text(textwrap.dedent(text), "c.yaml")


def test_a_real_hosts_keys_load():
    cluster = load("""\
        hosts:
          h1: {ssh: root@192.0.2.10, state_dir: /srv/nb, prefix: nq}
          h2: {ssh: admin@h2.lab:2222, address: 10.0.0.2, python: /opt/nestbed/bin/python}
        """)
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    assert (h1.state_dir, h1.prefix, h1.address, h1.python) == ("/srv/nb", "nq", None, None)
    assert (h2.address, h2.python) == ("10.0.0.2", "/opt/nestbed/bin/python")


@pytest.mark.parametrize("spec, says", [
    ("{ssh: root@h, address: h2.lab}", "address 'h2.lab' must be an IPv4 address"),
    ("{ssh: root@h, python: python3}", "python 'python3' must be an absolute path"),
    ("{ssh: root@h, state_dir: var/lib}", "state_dir 'var/lib' must be an absolute path"),
    ("{ssh: root@h, prefix: NB}", "prefix 'NB' must be 1 to 3 lowercase letters"),
    ("{ssh: root@h, prefix: nbxx}", "prefix 'nbxx' must be 1 to 3"),
    ("{ssh: root@h, adress: 10.0.0.1}", "unknown key 'adress'"),
])
def test_bad_keys_of_a_real_host_say_where(spec, says):
    with pytest.raises(TopologyError) as caught:
        load(f"hosts:\n  h1: {spec}\n")
    assert says in str(caught.value) and "c.yaml:2" in str(caught.value)


def test_an_emulated_host_takes_no_real_hosts_keys():
    with pytest.raises(TopologyError, match="emu0.*is emulated.*cannot have python"):
        load("emulate: 2\nhosts:\n  emu0: {python: /usr/bin/python3}\n")


def test_hosts_of_takes_the_ssh_host_as_underlay_address_and_resolves_names(monkeypatch):
    monkeypatch.setattr("socket.getaddrinfo", lambda host, *a, **k: [(2, 1, 6, "", ("127.0.0.1", 0))])
    hosts = real.hosts_of(load("""\
        hosts:
          a: {ssh: root@192.0.2.10}
          b: {ssh: root@localhost:2222}
          c: {ssh: me@c.lab, address: 10.0.0.3}
        """))
    assert [(h.name, h.address) for h in hosts] == [("a", "192.0.2.10"), ("b", "127.0.0.1"), ("c", "10.0.0.3")]
    info = hosts[1].connect_info()
    assert (info.address, info.port, info.username, info.bring) == ("localhost", 2222, "root", True)
    assert real.RealHost.from_json(hosts[2].to_json()) == hosts[2]


def test_an_installed_nestbed_is_used_as_it_is():
    (host,) = real.hosts_of(load("hosts:\n  a: {ssh: root@192.0.2.10, python: /opt/nb/bin/python}\n"))
    info = host.connect_info()
    assert not info.bring and info.command() == "exec env /opt/nb/bin/python -m nestbed.agent.remote --stdio"


def test_a_brought_nestbed_runs_alone_from_its_directory():
    info = ConnectInfo("192.0.2.10", bring=True, state_dir="/srv/nb")
    assert info.command("/srv/nb/bundles/0.1.0-abc") == (
        "exec env PYTHONPATH=/srv/nb/bundles/0.1.0-abc NESTBED_STATE_DIR=/srv/nb python3 -S -m "
        "nestbed.agent.remote --stdio")


@pytest.mark.parametrize("text, says", [
    ("hosts:\n  a: {ssh: root@192.0.2.10}\n  b: {ssh: root@192.0.2.10:2222}\n", "same underlay address"),
    ("hosts:\n  a: {cpus: 4}\n", "host 'a' has no ssh: destination"),
    ("hosts:\n  a: {ssh: root@no-such-host.invalid}\n", "cannot resolve 'no-such-host.invalid'"),
])
def test_real_hosts_that_cannot_be_told_apart_or_reached_are_refused(text, says, monkeypatch):
    def no_dns(host, *args, **kwargs):       # no query leaves this machine
        if host == "localhost":
            return [(2, 1, 6, "", ("127.0.0.1", 0))]
        raise OSError("not known")
    monkeypatch.setattr("socket.getaddrinfo", no_dns)
    with pytest.raises(TopologyError, match=says):
        real.hosts_of(load(text))


def test_a_cluster_is_either_emulated_or_real():
    with pytest.raises(TopologyError, match="mixes emulated hosts"):
        real.is_real(load("emulate: 1\nhosts:\n  a: {ssh: root@192.0.2.10}\n"))
    assert real.is_real(load("hosts:\n  a: {ssh: root@192.0.2.10}\n"))
    assert not real.is_real(load("emulate: 2\n"))


def test_sites_come_from_the_hosts_hellos():
    hosts = real.hosts_of(load("hosts:\n  a: {ssh: root@192.0.2.10}\n  b: {ssh: root@192.0.2.11}\n"))
    hellos = {"a": {"prefix": "nb", "links": {"192.0.2.10": "eth1", "10.1.1.1": "eth0"}},
              "b": {"prefix": "nq", "links": {"192.0.2.11": "bond0"}}}
    sites = real.sites(hosts, hellos, {"a": 9000, "b": 1500})
    assert (sites["a"].prefix, sites["a"].underlay, sites["a"].mtu, sites["a"].netns) == ("nb", "eth1", 9000, None)
    assert (sites["b"].prefix, sites["b"].underlay, sites["b"].address) == ("nq", "bond0", "192.0.2.11")
    hellos["b"]["links"] = {"10.9.9.9": "eth0"}
    with pytest.raises(ExperimentError, match="host b has no interface with address 192.0.2.11.*it has 10.9.9.9"):
        real.sites(hosts, hellos, {"a": 1500, "b": 1500})


class Prober:
    """A host's transport answering probe_mtu from a table of (source, target address) → MTU."""

    def __init__(self, name: str, table: dict[tuple[str, str], int | None]):
        self.name, self.table = name, table

    def request(self, op: str, **args):
        assert op == "probe_mtu"
        mtu = self.table[(self.name, args["peer"])]
        return {"peer": args["peer"], "mtu": mtu, "why": None if mtu else "no echo reply"}


def test_each_hosts_underlay_mtu_is_its_smallest_path_either_way():
    hosts = real.hosts_of(load("hosts:\n" + "".join(f"  {n}: {{ssh: root@10.0.0.{i}}}\n"
                                                        for i, n in enumerate("abc", 1))))
    table = {("a", "10.0.0.2"): 9000, ("b", "10.0.0.1"): 9000, ("a", "10.0.0.3"): 1500,
             ("c", "10.0.0.1"): 1500, ("b", "10.0.0.3"): 9000, ("c", "10.0.0.2"): 4000}
    transports = {h.name: Prober(h.name, table) for h in hosts}
    assert real.underlay_mtus(transports, hosts) == {"a": 1500, "b": 4000, "c": 1500}   # type: ignore[arg-type]
    table[("c", "10.0.0.2")] = None
    with pytest.raises(ExperimentError, match="host c: no IPv4 packet reaches host b at 10.0.0.2"):
        real.underlay_mtus(transports, hosts)                                             # type: ignore[arg-type]


SAVED = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -o eth1 -m statistic --mode random --probability 0.100000 -m comment --comment nestbed:lab:0000abcd -j DROP
-A OUTPUT -o eth9 -m comment --comment "the host's own rule" -j ACCEPT
-A FORWARD -o eth1 -m statistic --mode random --probability 0.100000 -m comment --comment "nestbed:lab:0000abcd" -j DROP
-A FORWARD -o eth1 -m comment --comment nestbed:lab:0000abcdX -j DROP
COMMIT
"""


def test_only_rules_carrying_the_experiments_mark_are_deleted():
    script = marked_rules_removal(SAVED, "nestbed:lab:0000abcd")
    assert script.splitlines() == [
        "*filter",
        "-D OUTPUT -o eth1 -m statistic --mode random --probability 0.100000 -m comment --comment "
        "nestbed:lab:0000abcd -j DROP",
        "-D FORWARD -o eth1 -m statistic --mode random --probability 0.100000 -m comment --comment "
        "\"nestbed:lab:0000abcd\" -j DROP",
        "COMMIT"]
    assert marked_rules_removal(SAVED, "nestbed:other:0000abcd") == ""


def test_the_example_of_real_hosts_loads():
    from pathlib import Path

    from nestbed.model.cluster import load_cluster
    cluster = load_cluster(Path(__file__).parents[2] / "examples" / "lab-real.yaml")
    assert [h.ssh for h in cluster.hosts.values()] == ["root@192.0.2.10", "root@192.0.2.11",
                                                       "root@h3.lab.example:2222"]
    assert cluster.hosts["h3"].address == "10.10.0.3" and cluster.hosts["h3"].max_vms == 4
