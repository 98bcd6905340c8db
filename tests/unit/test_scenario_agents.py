"""Built-in agents against a fake runner, and the programs they start (run here, without namespaces)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_runner import FakeRunner  # noqa: E402

from nestbed.scenario import Engine, load_scenario  # noqa: E402
from nestbed.scenario.agents import AgentError, agent_kind, builtin_of  # noqa: E402
from nestbed.scenario.agents.control import LinkUpDown  # noqa: E402
from nestbed.scenario.agents.measure import PktCounters, parse_ip_link  # noqa: E402
from nestbed.scenario.agents.traffic import ATTACK_DSCP, Flooder  # noqa: E402


def test_paths_name_agents():
    assert agent_kind("/share/magi/modules/http_client/http_client.tar.gz") == "http_client"
    assert agent_kind("apache") == "apache" and agent_kind("./agents/mine.py") == "mine"
    assert builtin_of("apache").kind == "http_server" and builtin_of("nodestats").kind == "nodeStats"
    assert builtin_of("mine") is None


def test_flooder_refuses_targets_outside_the_experiment():
    runner = FakeRunner(["a", "b"])
    flooder = Flooder(runner, "attack", ["a"], {})
    with pytest.raises(AgentError, match=r"target 8\.8\.8\.8 is outside the experiment's subnets \(10\.0\.0\.0/16\)"):
        flooder.setConfiguration(dst="8.8.8.8", proto="udp")
    with pytest.raises(AgentError, match="proto 'gre' is not one of udp, tcp-syn, icmp"):
        flooder.setConfiguration(dst="b", proto="gre")
    flooder.setConfiguration(dst="b", proto="tcp", rate=500, length=100)
    flooder.startFlood()
    (node, argv), = runner.spawned.values()
    assert node == "a" and argv[argv.index("--dst") + 1] == "10.0.0.3"
    assert argv[argv.index("--proto") + 1] == "tcp-syn" and argv[argv.index("--dscp") + 1] == str(ATTACK_DSCP)
    flooder.stopFlood()
    assert runner.stopped == list(runner.spawned)


def test_the_flooder_program_refuses_too(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nestbed.apps.flooder", "--dst", "192.0.2.1",
                             "--subnets", "10.0.0.0/8"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "outside the experiment's subnets" in result.stderr


def test_the_flooder_marks_its_packets():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    subprocess.run([sys.executable, "-m", "nestbed.apps.flooder", "--dst", "127.0.0.1", "--subnets", "127.0.0.0/8",
                    "--dport", str(port), "--rate", "100", "--duration", "0.1", "--dscp", "8"], check=True,
                   capture_output=True, timeout=30)
    data, ancillary, _, _ = receiver.recvmsg(2048, 64)
    tos = [d for level, kind, d in ancillary if kind == socket.IP_TOS]
    assert len(data) == 64 and tos and tos[0][0] == 8 << 2


def test_http_server_and_client_record_transfers(tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env = {**os.environ, "NESTBED_MAILBOX": str(tmp_path), "NESTBED_NODE": "a"}
    server = subprocess.Popen([sys.executable, "-m", "nestbed.apps.http_server", "--port", str(port)])
    try:
        subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import socket, sys, time
            for _ in range(100):
                try: socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2).close(); break
                except OSError: time.sleep(0.05)"""), str(port)], check=True, timeout=30)
        subprocess.run([sys.executable, "-m", "nestbed.apps.http_client", "--servers", "127.0.0.1", "--port",
                        str(port), "--sizes", "minmax(1000,2000)", "--interval", "0.05", "--count", "3"],
                       env=env, check=True, timeout=30)
    finally:
        server.terminate()
        server.wait(10)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and {line["record"] for line in lines} == {"http_client"}
    for line in lines:
        data = line["data"]
        assert line["node"] == "a" and data["status"] == 200 and 1000 <= data["bytes"] <= 2000
        assert data["bytes"] == data["size"] and data["seconds"] > 0


IP_LINK = json.dumps([
    {"ifname": "lo", "stats64": {"rx": {"bytes": 1, "packets": 1}, "tx": {"bytes": 1, "packets": 1}}},
    {"ifname": "eth0", "stats64": {"rx": {"bytes": 1000, "packets": 10}, "tx": {"bytes": 500, "packets": 5}}}])


def test_pktcounters_record_deltas():
    runner = FakeRunner(["a"])
    samples = iter([IP_LINK, IP_LINK.replace("1000", "4000").replace('"packets": 5', '"packets": 8')])
    runner.result = lambda node, argv: (0, next(samples), "")
    agent = PktCounters(runner, "counters", ["a"], {})
    assert agent.startCollection() == {"a": True}
    assert agent.stopCollection() == {"a": True}
    (name, node, data), = runner.records
    assert (name, node, data["iface"]) == ("counters", "a", "eth0") and runner.kinds == ["pktcounters"]
    assert data["rx_bytes"] == 3000 and data["tx_packets"] == 3 and data["rx_packets"] == 0
    assert parse_ip_link(IP_LINK)["eth0"]["tx_bytes"] == 500


def test_link_up_down_calls_the_runner_once():
    runner = FakeRunner(["a", "b"])
    agent = LinkUpDown(runner, "links", ["a", "b"], {})
    agent.linkDown(link="link0")
    agent.setLink(link=["link0", "lan0"], bandwidth="5Mbit")
    assert runner.links == [("link0", "down", {}), ("link0", "set", {"bandwidth": "5Mbit"}),
                            ("lan0", "set", {"bandwidth": "5Mbit"})]


def test_runshell_stores_its_records_in_one_request_when_the_runner_can():
    from nestbed.scenario.agents.control import RunShell
    runner = FakeRunner(["a", "b", "c"])
    batches = []
    runner.record_many = lambda agent, items, kind=None: batches.append((agent, list(items), kind))
    outcome = RunShell(runner, "sh", ["a", "b", "c"], {}).runCommand(cmd="true")
    assert set(outcome) == {"a", "b", "c"}
    assert len(batches) == 1 and batches[0][0] == "sh" and [n for n, _ in batches[0][1]] == ["a", "b", "c"]
    assert batches[0][2] == "runshell"                 # the scenario's name and the module, as MAGI files them
    assert all(data["cmd"] == "true" and "exit" in data for _, data in batches[0][1])
    assert runner.records == []                         # nothing one by one


def test_a_users_module_runs_per_node(tmp_path):
    (tmp_path / "greeter_fn.py").write_text(textwrap.dedent("""
        def hello(runner, node, text="hi"):
            runner.record("greeter", node, {"text": text})
            return node != "b"
        """))
    (tmp_path / "counter_cls.py").write_text(textwrap.dedent("""
        class Agent:
            def __init__(self, runner, agent_name, nodes, execargs):
                self.nodes, self.start = nodes, execargs["start"]
            def count(self, by=1):
                return {node: self.start + by for node in self.nodes}
        """))
    path = tmp_path / "s.aal"
    path.write_text(textwrap.dedent("""
        streamstarts: [s]
        groups: {g: [a, b]}
        agents:
          greet: {group: g, path: /somewhere/greeter_fn.tar.gz}
          counter: {group: g, path: counter_cls, execargs: {start: 41}}
        eventstreams:
          s:
            - {type: event, agent: greet, method: hello, args: {text: yo}, trigger: greeted}
            - {type: event, agent: counter, method: count, trigger: counted}
            - type: trigger
              triggers:
                - {event: greeted, target: exit}
                - {type: AND, triggers: [{event: greeted, nodes: [a]}, {event: counted, retVal: 42}], target: exit}
        """))
    runner = FakeRunner(["a", "b"])
    outcome = Engine(load_scenario(path), runner).run(timeout=5)
    assert outcome.reached_exit and "AND" in outcome.message
    assert sorted(runner.records) == [("greeter", "a", {"text": "yo"}), ("greeter", "b", {"text": "yo"})]


def test_an_agent_error_names_stream_item_and_agent():
    runner = FakeRunner(["a", "b"])
    path = Path(__file__).parent / "_flood.aal"
    text = textwrap.dedent("""
        streamstarts: [attack]
        groups: {bots: [a]}
        agents: {flood: {group: bots, path: flooder}}
        eventstreams:
          attack:
            - {type: event, agent: flood, method: setConfiguration, args: {dst: 203.0.113.9, proto: udp}}
        """)
    from nestbed.scenario import load_scenario_text
    outcome = Engine(load_scenario_text(text, str(path)), runner).run(timeout=5)
    assert outcome.reason == "error"
    assert outcome.message.startswith(f"{path}:7: stream 'attack' item 1: flood.setConfiguration: flooder 'flood': "
                                      f"target 203.0.113.9 is outside")


def test_runshell_timeout_0_is_no_limit_and_none_the_default_60_s():
    from nestbed.scenario.agents.control import RunShell
    runner = FakeRunner(["a"])
    limits = []
    runner.run = lambda node, argv, timeout=None: (limits.append(timeout), (0, "", ""))[1]
    agent = RunShell(runner, "sh", ["a"], {})
    agent.runCommand(cmd="true", timeout=0)             # an NS Program's run without -timeout
    agent.runCommand(cmd="true")
    agent.runCommand(cmd="true", timeout=5)
    assert limits == [None, 60.0, 5.0]
