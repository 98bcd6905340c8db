"""Bring experiments up, send real packets, tear them down; the kernel objects must come and go."""
from __future__ import annotations

import json
import os

from conftest import exec_in, nestbed, our_namespaces, state_dir
from nestbed.plan.compile import netns_name

CHAIN = """
nodes:
  a: {}
  r1: {}
  r2: {}
  b: {}
links:
  - {ends: [a, r1]}
  - {ends: [r1, r2]}
  - {ends: [r2, b]}
"""


def test_ping_across_three_hops_by_name(experiments):
    name = experiments.up(CHAIN)
    result = exec_in(name, "a", "ping", "-c1", "-W2", "b")
    assert "1 received" in result.stdout
    assert "ttl=62" in result.stdout            # two routers forwarded it
    back = exec_in(name, "b", "ping", "-c1", "-W2", "a-link0")
    assert "1 received" in back.stdout


def test_routing_none_leaves_remote_subnets_unreachable(experiments):
    name = experiments.up(CHAIN + "routing: none\n")
    assert exec_in(name, "a", "ping", "-c1", "-W1", "r1").returncode == 0      # neighbour: connected
    far = exec_in(name, "a", "ping", "-c1", "-W1", "b", check=False)
    assert far.returncode != 0


def test_exec_passes_exit_code_and_output(experiments):
    name = experiments.up("nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n")
    result = exec_in(name, "a", "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert result.returncode == 7
    assert result.stdout == "out\n" and "err" in result.stderr
    assert exec_in(name, "b", "hostname").stdout.strip() == "b"
    hosts = exec_in(name, "a", "cat", "/etc/hosts").stdout
    assert "a-link0 a" in hosts and "b-link0 b" in hosts
    interfaces = exec_in(name, "a", "ip", "-o", "link").stdout
    assert "eth0" in interfaces and "lo" in interfaces


def test_shell_prompt_names_experiment_and_node(experiments):
    name = experiments.up("nodes: {a: {}}\n")
    result = nestbed("shell", name, "a", input='echo "P=${PS1@P}"; hostname; exit\n', check=False)
    assert f"[{name}:a]" in result.stdout + result.stderr
    assert "\na\n" in "\n" + result.stdout


def test_start_commands_run_after_network_and_log(experiments):
    name = experiments.up("""
nodes:
  web: {commands: ["echo started on $(hostname)", "python3 -m http.server 8080 --bind 0.0.0.0"]}
  client: {}
lans:
  lan0: {members: [web, client]}
""")
    probe = ("import time,urllib.request\n"
             "for _ in range(50):\n"
             "  try: print(urllib.request.urlopen('http://web:8080/', timeout=1).status); break\n"
             "  except Exception: time.sleep(0.1)\n")
    assert exec_in(name, "client", "python3", "-c", probe).stdout.strip() == "200"
    log = open(state_dir(name) / "logs" / "web.log").read()
    assert "started on web" in log


def test_status_json_and_down_is_idempotent(experiments):
    name = experiments.up("nodes: {a: {}, b: {}, c: {}}\nlans: {lan0: {members: [a, b, c], bandwidth: 50Mbit}}\n")
    listing = json.loads(nestbed("status", "--json").stdout)
    assert any(e["name"] == name and e["state"] == "up" for e in listing["experiments"])
    detail = json.loads(nestbed("status", name, "--json").stdout)
    assert [n["name"] for n in detail["nodes"]] == ["a", "b", "c"]
    assert detail["links"][0]["name"] == "lan0" and len(detail["links"][0]["members"]) == 3
    assert len(our_namespaces(name)) == 4        # three nodes and the LAN's switch
    first = nestbed("down", name)
    assert "is down" in first.stdout
    assert not our_namespaces(name)
    assert not state_dir(name).exists()
    second = nestbed("down", name)
    assert second.returncode == 0 and "nothing to do" in second.stdout


def test_two_experiments_with_same_node_names_coexist(experiments):
    topo = "nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n"
    first, second = experiments.up(topo), experiments.up(topo)
    for name in (first, second):
        assert "1 received" in exec_in(name, "a", "ping", "-c1", "-W2", "b").stdout
    nestbed("down", first)
    assert "1 received" in exec_in(second, "a", "ping", "-c1", "-W2", "b").stdout


def test_same_file_twice_changes_nothing(experiments):
    """A running experiment's `up` is a modify in place (tests/integration/test_modify_in_place.py)."""
    name, path = experiments.write("nodes: {a: {}}\n")
    nestbed("up", str(path))
    again = nestbed("up", str(path))
    assert "nothing to change" in again.stdout and not again.stderr.strip()


def test_exec_unknown_node_is_one_line(experiments):
    name = experiments.up("nodes: {alpha: {}}\n")
    result = nestbed("exec", name, "alpah", "--", "true", check=False)
    assert result.returncode != 0 and "did you mean 'alpha'" in result.stderr
    assert "Traceback" not in result.stderr


def test_exec_missing_command_and_missing_namespace(experiments):
    name = experiments.up("nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n")
    missing = nestbed("exec", name, "a", "--", "no-such-program", check=False)
    assert missing.returncode == 127 and "not found in node a" in missing.stderr
    handle = f"/run/netns/{netns_name(name, 'b')}"
    os.system(f"umount -l {handle} && rm {handle}")   # lazy: the host agent holds it open
    gone = nestbed("exec", name, "b", "--", "true", check=False)
    assert gone.returncode == 1 and "cannot enter node b" in gone.stderr and "Traceback" not in gone.stderr
    assert "degraded" in nestbed("status", name).stdout


def test_node_interfaces_send_no_ipv6_chatter(experiments):
    """No IPv6 link-local address on experiment interfaces (so no DAD, router or MLD packets in the counters),
    on both ends of a link, where the second end comes up with its peer already up, and on LAN members."""
    import time
    name = experiments.up("nodes: {a: {}, b: {}, c: {}}\nlinks:\n  - {ends: [a, b]}\n"
                          "lans:\n  lan0: {members: [a, b, c]}\n")
    time.sleep(1.5)                       # DAD and router solicitations would have gone out by now
    for node in ("a", "b", "c"):
        addresses = exec_in(name, node, "ip", "-6", "-o", "addr").stdout
        assert "fe80" not in addresses, (node, addresses)
        stats = exec_in(name, node, "cat", "/sys/class/net/eth0/statistics/tx_packets").stdout.strip()
        assert stats == "0", (node, stats)     # nothing sent on its own
