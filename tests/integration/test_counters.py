"""Interface counters of real namespaces: exact deltas after pings, DSCP-marked traffic counted as attack."""
from __future__ import annotations

import json
import subprocess
import time

from conftest import exec_in, nestbed
from nestbed.agent.attack_counters import ATTACK_TOS, install_attack_counters
from nestbed.agent.sampler import Sampler
from nestbed.realize.state import experiment

PAIR = "nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n"
FRAME = 14 + 20 + 8          # Ethernet + IP + ICMP headers around a ping's payload


def _nodes(name):
    plan = experiment(name).load_plan()
    return [(n.name, n.netns) for n in plan.local_nodes]


def _by_node(rows):
    return {(r.node, r.iface): r for r in rows}


def _delta(after, before, key):
    return {k: getattr(after[k], key) - getattr(before[k], key) for k in after}


def _ping(name, *options, count=5, size=200):
    result = exec_in(name, "a", "ping", "-q", "-c", str(count), "-i", "0.05", "-s", str(size), *options, "b")
    assert f"{count} received" in result.stdout


def _quiet(name):
    """No IPv6 chatter (router solicitations, MLD) and ARP resolved, so only the pings cross the link."""
    for node in ("a", "b"):
        exec_in(name, node, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    exec_in(name, "a", "ping", "-c1", "-W2", "b")


def test_counters_increase_by_the_pings_sent(experiments):
    name = experiments.up(PAIR)
    _quiet(name)
    with Sampler(_nodes(name)) as sampler:
        for _attempt in range(3):              # an ARP re-check may fall in the window: measure again then
            before = _by_node(sampler.sample())
            assert set(before) == {("a", "eth0"), ("b", "eth0")}
            _ping(name, count=5, size=200)
            after = _by_node(sampler.sample())
            if _delta(after, before, "rx_packets") == {("a", "eth0"): 5, ("b", "eth0"): 5}:
                break
    for key in ("tx_packets", "rx_packets"):
        assert _delta(after, before, key) == {("a", "eth0"): 5, ("b", "eth0"): 5}
    for key in ("tx_bytes", "rx_bytes"):
        assert _delta(after, before, key) == {("a", "eth0"): 5 * (200 + FRAME), ("b", "eth0"): 5 * (200 + FRAME)}
    assert _delta(after, before, "attack_tx_packets") == {("a", "eth0"): 0, ("b", "eth0"): 0}


def test_dscp_marked_traffic_is_attack_and_unmarked_is_not(experiments):
    name = experiments.up(PAIR)
    _quiet(name)
    nodes = _nodes(name)
    with Sampler(nodes) as sampler:
        # The host agent installs attack counters when it starts: installing again changes nothing.
        report = install_attack_counters(nodes, sampler)
        assert report.installed + report.already == 2 and not report.failed, report
        assert sampler.attack_state == "counting"
        start = _by_node(sampler.sample())
        _ping(name, "-Q", hex(ATTACK_TOS), count=4, size=100)     # marked: echo requests, and replies (TOS copied)
        marked = _by_node(sampler.sample())
        _ping(name, count=3, size=100)                          # unmarked
        _ping(name, "-Q", "0x10", count=2, size=100)            # another DSCP (4): not attack either
        unmarked = _by_node(sampler.sample())
    a, b = ("a", "eth0"), ("b", "eth0")
    assert _delta(marked, start, "attack_tx_packets") == {a: 4, b: 4}
    assert _delta(marked, start, "attack_rx_packets") == {a: 4, b: 4}
    assert _delta(marked, start, "attack_tx_bytes") == {a: 4 * (100 + FRAME), b: 4 * (100 + FRAME)}
    assert _delta(marked, start, "attack_rx_bytes") == {a: 4 * (100 + FRAME), b: 4 * (100 + FRAME)}
    for key in ("attack_tx_packets", "attack_rx_packets", "attack_tx_bytes", "attack_rx_bytes"):
        assert _delta(unmarked, marked, key) == {a: 0, b: 0}
    assert all(n >= 5 for n in _delta(unmarked, marked, "tx_packets").values())
    again = install_attack_counters(nodes)                       # idempotent: counters keep their values
    assert again.already == 2 and again.installed == 0
    rules = subprocess.run(["ip", "netns", "exec", nodes[0][1], "nft", "list", "table", "ip", "nestbed"],
                           capture_output=True, text=True, check=True).stdout
    assert 'ip dscp cs1 iifname "eth0" counter name "rx-eth0"' in rules


def test_sampler_drops_nodes_of_an_experiment_taken_down(experiments):
    name = experiments.up(PAIR)
    with Sampler(_nodes(name), check_every=0) as sampler:
        assert len(sampler.sample()) == 2
        nestbed("down", name)
        rows = sampler.sample()
        assert rows == [] and sorted(sampler.dropped) == ["a", "b"]


def test_counters_command_json_keys_and_attack_state(experiments):
    name = experiments.up(PAIR)
    exec_in(name, "a", "ping", "-c2", "-i0.1", "b")
    for _ in range(5):        # with a host agent running, its store answers: wait for a sample after the ping
        data = json.loads(nestbed("counters", name, "--json").stdout)
        if all(r["tx_packets"] >= 2 for r in data["interfaces"]):
            break
        time.sleep(1)
    assert data["experiment"] == name and data["source"] in ("sampled", "store") and data["attack_dscp"] == 8
    assert data["attack_counters"] == "counting"              # installed by the host agent at start
    rows = {(r["node"], r["iface"]): r for r in data["interfaces"]}
    assert set(rows) == {("a", "eth0"), ("b", "eth0")}
    for row in rows.values():
        assert {"rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "attack_rx_bytes", "attack_tx_bytes",
                "attack_rx_packets", "attack_tx_packets", "time"} <= set(row)
        assert row["tx_packets"] >= 2 and row["time"] == data["time"]
    install_attack_counters(_nodes(name))
    assert json.loads(nestbed("counters", name, "--json").stdout)["attack_counters"] == "counting"
    table = nestbed("counters", name).stdout
    assert "eth0" in table and "attack counters (DSCP 8): counting" in table


def test_counters_command_reads_the_store_when_the_agent_fills_it(experiments):
    from nestbed.agent.store import CounterRow, Store
    name = experiments.up(PAIR)
    store = Store(experiment(name).directory / "control.sqlite")
    store.add_counters(time.time() + 3600, [CounterRow("a", "eth0", 11, 22, 1, 2, 5, 6, 1, 1)])
    store.close()
    data = json.loads(nestbed("counters", name, "--json").stdout)
    assert data["source"] == "store"
    assert data["interfaces"][0]["rx_bytes"] == 11 and data["interfaces"][0]["attack_tx_bytes"] == 6


def test_counters_of_an_unknown_experiment_is_one_line():
    result = nestbed("counters", "no-such-exp", "--json", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no experiment named 'no-such-exp'" in result.stderr
