"""The CATCH demo's scenario agents (ircd, q9bot, botmaster) against a fake experiment control with the plan of
examples/catch/catch.yaml, and examples/catch/catch.aal against that topology, run by the engine end to end."""
from __future__ import annotations

import itertools
import json
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nestbed.agent.store import Store
from nestbed.cli.main import app
from nestbed.model import load_topology
from nestbed.plan import compile_plan
from nestbed.scenario import Engine, load_scenario
from nestbed.scenario.agents import AgentError, builtin_of, irc
from nestbed.scenario.agents.base import app_of
from nestbed.scenario.agents.irc import Botmaster, IrcServer, Q9Bot, choose_servers, link_password, secret_for

CATCH = Path(__file__).resolve().parents[2] / "examples" / "catch"
CREDENTIAL = "ab" * 32
BOTS = [f"bota-{i}" for i in range(10)] + [f"botb-{i}" for i in range(10)]
TEMPLATE = "[Global]\nName = $name\nPorts = $port\n$peers_block\n"


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def flags(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]



class FakeControl:
    """ExperimentControl on the plan of catch.yaml: nothing runs; `run_result` answers runs; records the programs
    would write go into `store` with increasing ids; `on_spawn` and `on_run` play the programs' part."""

    def __init__(self) -> None:
        self.plan = compile_plan(load_topology(CATCH / "catch.yaml"))
        self.experiment = "catch"
        self.spawned: dict[str, tuple[str, list[str]]] = {}
        self.runs: list[tuple[str, list[str]]] = []
        self.stopped: list[str] = []
        self.store: list[dict[str, Any]] = []
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.run_result = lambda node, argv: (0, "", "")
        self.on_spawn = lambda node, argv: None
        self.listening = True                       # a spawned botmaster --listen records `ready`
        self.orders: list[tuple[str, dict[str, Any]]] = []     # what was written into a listener's FIFO
        self.answers = lambda node, order: order["expect"]      # how many bots answer an order

    def order(self, node: str, order: dict[str, Any]) -> tuple[int, str, str]:
        """The listener's part: a `sent` and a `replies` record of the order's id."""
        self.orders.append((node, order))
        answered = {f"q9bot-{i}": {"rtt_ms": 5.0} for i in range(self.answers(node, order))}
        self.add("botmaster", node, {"event": "sent", "id": order["id"], "seq": order["seq"]}, "botmaster")
        self.add("botmaster", node, {"event": "replies", "id": order["id"], "seq": order["seq"],
                                     "expected": order["expect"], "answered": answered}, "botmaster")
        return 0, "", ""

    def nodes(self) -> list[str]:
        return [n.name for n in self.plan.nodes]

    def addresses(self, node: str) -> list[str]:
        return [i.address.split("/")[0] for i in self.plan.node(node).interfaces]

    def subnets(self) -> list[str]:
        return [s.subnet for s in self.plan.segments]

    def run(self, node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        with self.lock:
            self.runs.append((node, argv))
        if argv[:3] == ["sh", "-c", irc.WRITE_ORDER] and argv[5] == irc.LISTEN_FIFO:
            return self.order(node, json.loads(argv[4]))
        return self.run_result(node, argv)

    def run_many(self, items: list[tuple[str, list[str]]], timeout: float | None = None) -> list[dict[str, Any]]:
        results = [self.run(node, argv, timeout) for node, argv in items]
        return [{"node": node, "rc": rc, "out": out, "err": err} for (node, _), (rc, out, err) in zip(items, results)]

    def spawn(self, node: str, argv: list[str], name: str) -> str:
        with self.lock:
            handle = f"h{len(self.spawned)}"
            self.spawned[handle] = (node, argv)
        if app_of(argv) == "nestbed.apps.botmaster" and "--listen" in argv and self.listening:
            self.add(flag(argv, "--agent"), node, {"event": "ready"}, "botmaster")
        self.on_spawn(node, argv)
        return handle

    def spawn_many(self, items: list[tuple[str, list[str], str]]) -> list[str]:
        return [self.spawn(node, argv, name) for node, argv, name in items]

    def stop(self, handle: str) -> None:
        self.stopped.append(handle)

    def stop_many(self, handles: list[str]) -> None:
        self.stopped.extend(handles)

    def record(self, agent: str, node: str | None, data: dict[str, Any], kind: str | None = None) -> None:
        self.add(agent, node, data, kind)

    def add(self, agent: str, node: str | None, data: dict[str, Any], kind: str | None = None) -> None:
        with self.lock:
            self.store.append({"id": next(self.ids), "created": time.time(), "agent": agent, "kind": kind,
                               "host": "local", "node": node, "data": data})

    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.store if agent is None or agent in (r["agent"], r["kind"])]

    def event(self, name: str, data: dict[str, Any] | None = None) -> None:
        pass

    def programs(self, module: str) -> dict[str, list[str]]:
        """node → argv of the spawned nestbed.apps.MODULE programs."""
        return {node: argv for node, argv in self.spawned.values() if app_of(argv) == f"nestbed.apps.{module}"}

    def ran(self, module: str) -> list[tuple[str, list[str]]]:
        return [(node, argv) for node, argv in self.runs if app_of(argv) == f"nestbed.apps.{module}"]


@pytest.fixture
def control(tmp_path, monkeypatch) -> FakeControl:
    """A fake control, and the experiment's credential where the agents read it (the state dir)."""
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "state" / "catch").mkdir(parents=True)
    (tmp_path / "state" / "catch" / "credential").write_text(CREDENTIAL + "\n")
    return FakeControl()


@pytest.fixture
def aal_dir(tmp_path, monkeypatch) -> Path:
    """An AAL file's directory with a template in it, and a working directory that has none."""
    directory = tmp_path / "scenario"
    directory.mkdir()
    (directory / "ngircd.conf.template").write_text(TEMPLATE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return directory


def test_the_agents_are_built_in_under_their_names():
    assert builtin_of("ircd") is IrcServer and builtin_of("ngircd") is IrcServer
    assert builtin_of("q9bot") is Q9Bot and builtin_of("botmaster") is Botmaster


# -- ircd -------------------------------------------------------------------------------------------------------
def servers_say(control: FakeControl, event_of: dict[str, str]) -> None:
    """The ircd programs record `started` (or `stopped`: ngircd died) when spawned."""
    control.on_spawn = lambda node, argv: control.add(flag(argv, "--agent"), node, {"event": event_of[node]}, "ircd")


def test_servers_start_from_the_template_beside_the_aal_file_and_link_in_a_chain(control, aal_dir):
    ircd = IrcServer(control, "ircd", ["irc1", "irc2"], {"template": "ngircd.conf.template", "network": "catch"},
                     base=aal_dir)
    servers_say(control, {"irc1": "started", "irc2": "started"})
    assert ircd.startServer() == {"irc1": True, "irc2": True}
    serve = control.programs("ircd")
    one, two = serve["irc1"], serve["irc2"]
    assert one[6:9] == ["serve", "--name", "irc1.catch"] and flag(two, "--name") == "irc2.catch"
    assert flag(one, "--template-text") == TEMPLATE and flag(one, "--port") == "6667"
    assert flag(one, "--network") == "catch"
    p1, p2 = (link_password(CREDENTIAL.encode(), name) for name in ("irc1.catch", "irc2.catch"))
    assert p1 != p2 and len(p1) == 20 and CREDENTIAL not in " ".join(one)
    assert flags(one, "--peer") == [f"irc2.catch=10.0.1.1:6667:{p1}:{p2}"]
    assert flags(two, "--peer") == [f"irc1.catch=10.0.0.1:6667:{p2}:{p1}"]
    assert "--connect" in two and "--connect" not in one            # one active side per link
    assert flag(one, "--agent") == "ircd" and not control.runs

    def restarted(node, argv):                                     # the first ones say they were stopped, then
        control.add("ircd", node, {"event": "stopped", "by_signal": True}, "ircd")
        control.add("ircd", node, {"event": "started" if node == "irc1" else "stopped"}, "ircd")
    control.on_spawn = restarted                                    # irc2's ngircd ended before it listened
    assert ircd.startServer() == {"irc1": True, "irc2": False}
    assert len(control.stopped) == 2                                # the first two were stopped first
    control.on_spawn = lambda node, argv: None                      # and these never say anything
    assert ircd.startServer(timeout=0.3) == {"irc1": False, "irc2": False}


def test_a_chain_of_three_has_one_connecting_side_per_link(control, aal_dir):
    ircd = IrcServer(control, "ircd", ["irc1", "bota-0", "irc2"], {}, base=aal_dir)
    servers_say(control, {"irc1": "started", "bota-0": "started", "irc2": "started"})
    assert all(ircd.startServer().values())
    serve = control.programs("ircd")
    assert [len(flags(serve[n], "--peer")) for n in ("irc1", "bota-0", "irc2")] == [1, 2, 1]
    assert ["--connect" in serve[n] for n in ("irc1", "bota-0", "irc2")] == [False, True, False]
    assert flag(serve["irc1"], "--name") == "irc1.catch"             # network defaults to the experiment's name


def test_a_missing_template_fails_in_one_line_naming_it(control, aal_dir):
    with pytest.raises(AgentError, match=r"cannot read template '.*/scenario/other\.template'.*relative to the AAL"):
        IrcServer(control, "ircd", ["irc1"], {"template": "other.template"}, base=aal_dir)
    with pytest.raises(AgentError, match="network 'a b' is not a name"):
        IrcServer(control, "ircd", ["irc1"], {"network": "a b"}, base=aal_dir).startServer()


def test_wait_linked_is_true_per_server_that_lists_the_other(control, aal_dir):
    ircd = IrcServer(control, "ircd", ["irc1", "irc2"], {}, base=aal_dir)

    def linked(node, argv):
        if node == "irc1":
            return 0, json.dumps({"linked": True, "servers": ["irc1.catch", "irc2.catch"], "seconds": 1.2}), ""
        return 1, json.dumps({"linked": False, "servers": ["irc2.catch"], "seconds": 5}), "not linked"
    control.run_result = linked
    assert ircd.waitLinked(timeout=5) == {"irc1": True, "irc2": False}
    runs = dict(control.ran("ircd"))
    assert runs["irc1"][6] == "linked" and flag(runs["irc1"], "--expect") == "irc2.catch"
    assert flag(runs["irc1"], "--host") == "irc1" and flag(runs["irc1"], "--agent") == "ircd"
    assert flag(runs["irc2"], "--expect") == "irc1.catch" and flag(runs["irc2"], "--timeout") == "5"
    assert IrcServer(control, "ircd", ["irc1"], {}, base=aal_dir).waitLinked() == {"irc1": True}


# -- q9bot ------------------------------------------------------------------------------------------------------
def test_each_bot_uses_the_server_of_its_lan_and_the_botmasters_secret(control):
    bots = Q9Bot(control, "q9bot", BOTS, {"servers": ["irc1", "irc2"], "channel": "#catch",
                                           "botmaster": "botmaster", "port": 6667})
    assert bots.startBots() == {bot: True for bot in BOTS}
    started = control.programs("q9bot")
    assert set(started) == set(BOTS)
    assert {flag(started[b], "--server") for b in BOTS[:10]} == {"irc1"}
    assert {flag(started[b], "--server") for b in BOTS[10:]} == {"irc2"}
    secret = secret_for(CREDENTIAL.encode(), "catch")
    assert {flag(argv, "--secret") for argv in started.values()} == {secret} and len(secret) == 64
    assert len({flag(argv, "--nick") for argv in started.values()}) == 20
    argv = started["botb-3"]
    assert flag(argv, "--botmaster") == "botmaster" and flag(argv, "--channel") == "#catch"
    assert flag(argv, "--subnets").split(",") == control.subnets() and flag(argv, "--agent") == "q9bot"

    master = Botmaster(control, "botmaster", ["botmaster"], {"server": "irc1", "bots": ["bota", "botb"]})
    assert master.ping() == {"botmaster": True} and master.ping() == {"botmaster": True}
    listener = control.programs("botmaster")["botmaster"]           # started once, by the first command
    assert flag(listener, "--secret") == secret and flag(listener, "--listen") == irc.LISTEN_FIFO
    assert flag(listener, "--server") == "irc1" and flag(listener, "--nick") == "botmaster"
    (_, one), (_, two) = control.orders
    assert (one["text"], one["seq"], one["expect"]) == ("!ping 1", 1, 20)
    assert (two["text"], two["seq"]) == ("!ping 2", 2)
    assert one["id"] != two["id"] and not control.ran("botmaster")  # no Python started per command


def test_a_bot_on_no_servers_lan_takes_the_servers_in_turn(control):
    chosen = choose_servers(["client-0", "client-1", "bota-2", "client-2"], ["irc1", "irc2"], control.addresses,
                            control.subnets())
    assert chosen == {"client-0": "irc1", "client-1": "irc2", "bota-2": "irc1", "client-2": "irc2"}
    bots = Q9Bot(control, "q9bot", ["bota-0"], {"servers": ["irc"]})
    with pytest.raises(AgentError, match="servers: 'irc' is not a node of the experiment"):
        bots.startBots()


def test_the_secret_comes_from_the_experiments_credential(control, tmp_path):
    assert secret_for(b"one", "catch") != secret_for(b"two", "catch") != secret_for(b"two", "other")
    (tmp_path / "state" / "catch" / "credential").unlink()
    with pytest.raises(AgentError, match="cannot read the credential of experiment 'catch'.*run as root"):
        Q9Bot(control, "q9bot", ["bota-0"], {"servers": ["irc1"]}).startBots()


def test_wait_joined_is_true_per_bot_that_recorded_joining_since_the_start(control):
    control.add("q9bot", "bota-1", {"event": "joined"}, "q9bot")            # an earlier run's: does not count
    bots = Q9Bot(control, "q9bot", ["bota-0", "bota-1", "botb-0"], {"servers": ["irc1", "irc2"]})
    bots.startBots()
    control.add("q9bot", "bota-0", {"event": "joined", "server": "irc1"}, "q9bot")
    control.add("q9bot", "botb-0", {"event": "cmd"}, "q9bot")
    control.add("other", "botb-0", {"event": "joined"}, "http_client")
    assert bots.waitJoined(timeout=0.3) == {"bota-0": True, "bota-1": False, "botb-0": False}

    later = threading.Timer(0.2, lambda: [control.add("q9bot", n, {"event": "joined"}, "q9bot")
                                          for n in ("bota-1", "botb-0")])
    later.start()
    began = time.monotonic()
    assert bots.waitJoined(timeout=60) == {"bota-0": True, "bota-1": True, "botb-0": True}
    assert time.monotonic() - began < 30                       # it returned once everyone joined, not at 60 s


def test_the_scenario_ending_ends_a_wait(control):
    bots = Q9Bot(control, "q9bot", ["bota-0"], {"servers": ["irc1"]})
    bots.startBots()
    answer: dict[str, Any] = {}
    waiting = threading.Thread(target=lambda: answer.update(bots.waitJoined(timeout=600)))
    waiting.start()
    time.sleep(0.1)
    bots.cleanup()
    waiting.join(30)
    assert not waiting.is_alive() and answer == {"bota-0": False}
    assert len(control.stopped) == 1                           # and the bot was stopped


# -- botmaster --------------------------------------------------------------------------------------------------
def test_flood_splits_the_total_over_the_bots_and_stays_inside_the_experiment(control):
    master = Botmaster(control, "botmaster", ["botmaster"], {"server": "irc1", "bots": ["bota", "botb"]})
    assert master.flood(target="target", port=80, seconds=60, total="20Mbit") == {"botmaster": True}
    (node, order), = control.orders
    assert node == "botmaster" and order["text"] == "!flood 10.0.6.2 80 60 1Mbit"
    assert order["expect"] == 20 and "forge" not in order
    assert irc.per_bot_rate("10Mbit", 20) == "500kbit" and irc.per_bot_rate("1Mbit", 3) == "333kbit"
    control.answers = lambda node, order: order["expect"] - 1      # not every bot answered
    assert master.stop() == {"botmaster": False}
    assert control.orders[-1][1]["text"] == "!stop"
    with pytest.raises(AgentError, match="flood target 8.8.8.8 is outside the experiment's subnets"):
        master.flood(target="8.8.8.8")
    with pytest.raises(AgentError, match="neither an address nor a node"):
        master.flood(target="nowhere")
    assert len(control.orders) == 2                                # the refused ones sent nothing


def test_a_command_without_a_listening_botmaster_is_false_and_says_why(control):
    control.listening = False                                      # the botmaster never joined
    master = Botmaster(control, "botmaster", ["botmaster"], {"server": "irc1", "bots": ["bota"], "wait": 0.1})
    warnings: list[str] = []
    master.warn = warnings.append
    assert master.connect(timeout=0.2) == {"botmaster": False}
    control.run_result = lambda node, argv: (3, "", "no botmaster listens at /var/nestbed/mailbox/botmaster.in")
    control.order = lambda node, order: control.run_result(node, [])   # the FIFO is not there
    assert master.ping() == {"botmaster": False}
    assert any("no botmaster joined" in w for w in warnings)
    assert any("!ping not sent (exit 3): no botmaster listens at" in w for w in warnings)


def test_the_write_refuses_a_missing_fifo_and_delivers_one_line(tmp_path):
    import os
    import subprocess
    env = {"NESTBED_MAILBOX": str(tmp_path), "PATH": os.environ["PATH"]}
    missing = subprocess.run(["sh", "-c", irc.WRITE_ORDER, "sh", '{"id": 1}', irc.LISTEN_FIFO], env=env,
                             capture_output=True, text=True, timeout=10)
    assert missing.returncode == 3 and "no botmaster listens at" in missing.stderr
    assert not (tmp_path / irc.LISTEN_FIFO).exists()               # no plain file made in its place
    fifo = tmp_path / irc.LISTEN_FIFO
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        written = subprocess.run(["sh", "-c", irc.WRITE_ORDER, "sh", '{"id": 1, "text": "!ping 1"}',
                                  irc.LISTEN_FIFO], env=env, capture_output=True, text=True, timeout=10)
        assert written.returncode == 0 and os.read(reader, 1000) == b'{"id": 1, "text": "!ping 1"}\n'
    finally:
        os.close(reader)


def test_outside_is_true_when_every_bot_refused_it(control):
    bots = ["bota-0", "botb-0"]
    master = Botmaster(control, "botmaster", ["botmaster"], {"server": "irc1", "bots": bots, "wait": 0.5})

    def refuse(node, order):                                       # what the bots do when the botmaster sends
        for bot in refusing:
            control.add("q9bot", bot, {"event": "refused", "cmd": "flood", "from": "botmaster",
                                       "reason": "target outside the experiment"}, "q9bot")
        return answering                                           # bots that answered
    control.answers = refuse
    refusing, answering = bots, 0
    assert master.outside(target="127.0.0.2") == {"botmaster": True}
    (_, order), = control.orders
    assert order["text"].startswith("!flood 127.0.0.2 ") and order["expect"] == 0
    refusing = ["bota-0"]                                          # botb-0 obeyed, or never heard it
    assert master.outside() == {"botmaster": False}
    refusing, answering = bots, 1
    assert master.outside() == {"botmaster": False}                 # they refused, but one answered
    with pytest.raises(AgentError, match="outside target 10.0.6.2 is inside the experiment"):
        master.outside(target="10.0.6.2")


def test_forge_is_true_when_no_bot_obeyed_and_every_bot_refused(control):
    bots = ["bota-0", "botb-0"]
    master = Botmaster(control, "botmaster", ["botmaster"], {"server": "irc1", "bots": bots, "wait": 0.5,
                                                             "quiet": 0.1})

    def forged(node, order):
        for bot in bots:
            control.add("q9bot", bot, {"event": "refused", "from": "mallory", "reason": "not the botmaster"}, "q9bot")
        return obeyed
    control.answers = forged
    obeyed = 0
    assert master.forge(text="!flood target 80 10 1Mbit") == {"botmaster": True}
    (_, order), = control.orders
    assert order["forge"] == "mallory" and order["text"] == "!flood target 80 10 1Mbit"
    obeyed = 1                                                     # the botmaster saw an !ok
    assert master.forge(text="!stop") == {"botmaster": False}
    with pytest.raises(AgentError, match="another nick than the botmaster's"):
        master.forge(text="!stop", nick="botmaster")


# -- examples/catch ---------------------------------------------------------------------------------------------
def test_the_topology_validates_and_plans_two_vhosts_at_least():
    result = CliRunner().invoke(app, ["validate", str(CATCH / "catch.yaml")])
    assert result.exit_code == 0 and "experiment catch: 31 nodes" in result.output
    result = CliRunner().invoke(app, ["plan", str(CATCH / "catch.yaml")])
    vms = re.search(r"(\d+) VMs: (.*)", result.output)
    assert result.exit_code == 0 and vms and int(vms.group(1)) >= 2 and vms.group(2).count("vhost") >= 2
    plan = FakeControl().plan
    bottleneck = next(s for s in plan.segments if s.name == "bottleneck")
    assert {n for n, _, _ in bottleneck.members} == {"rt", "target"} and bottleneck.shaping.queue == 100


def test_the_scenario_parses_against_the_topology():
    scenario = load_scenario(CATCH / "catch.aal")
    assert not scenario.warnings
    scenario.resolve_nodes(FakeControl().nodes())
    assert scenario.groups["bots"] == BOTS and scenario.groups["servers"] == ["irc1", "irc2"]
    assert {a.name: a.kind for a in scenario.agents.values()} == {
        "ircd": "ircd", "q9bot": "q9bot", "botmaster": "botmaster", "web": "http_server", "legit": "http_client"}
    declared = list(scenario.declared_triggers())
    for name in ("serversStarted", "linked", "botsStarted", "joined", "webStarted", "baseline", "forged", "pinged",
                 "flooding", "stopped", "recovered", "reported"):
        assert name in declared


class PlayingControl(FakeControl):
    """Plays the programs: bots record `joined` when spawned, refuse forged and outside floods, answer the rest."""

    def __init__(self, link: bool = True):
        super().__init__()
        self.link = link

    def spawn(self, node: str, argv: list[str], name: str) -> str:
        if app_of(argv) == "nestbed.apps.q9bot":
            self.add(flag(argv, "--agent"), node, {"event": "joined", "server": flag(argv, "--server")}, "q9bot")
        if argv[5:7] == ["nestbed.apps.ircd", "serve"]:
            self.add(flag(argv, "--agent"), node, {"event": "started", "server": flag(argv, "--name")}, "ircd")
        return super().spawn(node, argv, name)

    def run(self, node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        result = super().run(node, argv, timeout)
        if argv[5:7] == ["nestbed.apps.ircd", "linked"]:
            return (0 if self.link else 1), json.dumps({"linked": self.link}), ""
        return result

    def order(self, node: str, order: dict[str, Any]) -> tuple[int, str, str]:
        text = order["text"]
        reason = "not the botmaster" if order.get("forge") else \
            "target outside the experiment" if text.startswith("!flood 127.") else None
        if reason:
            for bot in BOTS:
                self.add("q9bot", bot, {"event": "refused", "reason": reason}, "q9bot")
            order = {**order, "expect": 0}
        return super().order(node, order)


def short_catch(tmp_path: Path) -> Path:
    """catch.aal with its 20 s phases cut to 20 ms, beside a template."""
    text = (CATCH / "catch.aal").read_text().replace("timeout: 20000", "timeout: 20")
    (tmp_path / "catch.aal").write_text(text)
    template = CATCH / "ngircd.conf.template"
    if template.exists():
        shutil.copy(template, tmp_path / "ngircd.conf.template")
    else:
        (tmp_path / "ngircd.conf.template").write_text(TEMPLATE)
    return tmp_path / "catch.aal"


def scenario_events(store: Store) -> list[str]:
    return [e["name"] for e in store.events() if e["data"] and e["data"].get("kind") == "trigger"]


def test_the_scenario_runs_its_phases_in_order(control, tmp_path):
    runner, store = PlayingControl(), Store(tmp_path / "control.sqlite")
    outcome = Engine(load_scenario(short_catch(tmp_path)), runner, store=store).run(timeout=120)
    assert outcome.reached_exit, outcome.message
    fired = scenario_events(store)
    assert [name for name in fired if name != "masterReady"] == [
        "serversStarted", "linked", "botsStarted", "joined", "webStarted", "baseline", "forged", "pinged", "flooding",
        "stopped", "recovered", "reported"]
    assert fired.index("linked") < fired.index("masterReady") < fired.index("forged")   # the checks stream's
    sent = [order["text"].split()[0] for _, order in runner.orders]
    assert sent == ["!flood", "!flood", "!ping", "!flood", "!stop", "!report"]
    assert len(runner.stopped) == len(runner.spawned)              # everything it started was stopped


def test_servers_that_do_not_link_fail_the_run(control, tmp_path):
    runner, store = PlayingControl(link=False), Store(tmp_path / "control.sqlite")
    outcome = Engine(load_scenario(short_catch(tmp_path)), runner, store=store).run(timeout=120)
    assert not outcome.reached_exit and outcome.reason == "ended"
    assert scenario_events(store) == ["serversStarted", "linked", "aborted"]
    assert not runner.programs("q9bot") and not runner.orders
