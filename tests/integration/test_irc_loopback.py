"""The CATCH demo's programs for real, on loopback only: two ngircd linked to each other (apps.ircd), four q9bots
(two on each server), the botmaster. Commands and their refusals, and a flood whose datagrams arrive marked DSCP 8
on a UDP socket of the test. Everything the test starts is stopped by SIGTERM and must leave nothing behind.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nestbed.apps import botjobs
from nestbed.scenario.agents import irc
from nestbed.scenario.agents.base import app_argv

pytestmark = pytest.mark.needs("root", "ngircd")

TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "catch" / "ngircd.conf.template"
SECRET = "5e" * 32
INSIDE = "127.0.0.1/32"               # the bots' "experiment": 127.0.0.2 is outside it
TOS_DSCP8 = 8 << 2


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: Callable[[], Any], timeout: float, why: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := what():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s: {why}")


@dataclass
class Network:
    """The programs of one test module, their mailbox (one events.jsonl for all) and their TMPDIR."""
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def box(self) -> Path:
        return self.root / "box"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def env(self, node: str) -> dict[str, str]:
        return {**os.environ, "NESTBED_MAILBOX": str(self.box), "NESTBED_NODE": node, "TMPDIR": str(self.tmp)}

    def start(self, node: str, app: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{node}.log", "w")
        proc = subprocess.Popen(app_argv(app, *args), env=self.env(node),          # as the scenario starts it
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs[node] = proc
        return proc

    def run(self, app: str, *args: str, node: str = "botmaster", timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", f"nestbed.apps.{app}", *args], env=self.env(node),
                              capture_output=True, text=True, timeout=timeout)

    def records(self, **match: Any) -> list[dict[str, Any]]:
        lines = (self.box / "events.jsonl").read_text().splitlines()
        found = []
        for line in lines:
            entry = json.loads(line)
            data = {**(entry.get("data") or {}), "_node": entry.get("node"), "_kind": entry.get("kind")}
            if "record" in entry and all(data.get(k) == v for k, v in match.items()):
                found.append(data)
        return found

    def command(self, *args: str, server: str = "irc1", expect: int = 4, wait: float = 10
                ) -> tuple[int, dict[str, Any]]:
        result = self.run("botmaster", "--server", "127.0.0.1", "--port", str(self.ports[server]),
                          "--secret", SECRET, "--expect", str(expect), "--wait", str(wait), "--agent", "bm", *args)
        assert result.stdout.strip(), f"botmaster printed nothing (exit {result.returncode}): {result.stderr}"
        return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])

    def stop_all(self) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for node, proc in self.procs.items():
            try:
                codes[node] = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[node] = None
        return codes


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def bot_args(name: str, server_port: int) -> list[str]:
    return ["--server", "127.0.0.1", "--port", str(server_port), "--channel", "#catch", "--nick", name,
            "--botmaster", "botmaster", "--secret", SECRET, "--subnets", INSIDE, "--agent", "q9bot"]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    net = Network(tmp_path_factory.mktemp("irc"))
    net.box.mkdir()
    net.tmp.mkdir()
    (net.box / "events.jsonl").write_text("")
    net.ports = {"irc1": free_port(), "irc2": free_port()}
    p12, p21 = "pw-1to2", "pw-2to1"
    try:
        # irc1 waits for its peer, irc2 dials it: the way the scenario starts a chain of servers
        net.start("irc1", "ircd", "serve", "--name", "irc1.test", "--template", str(TEMPLATE), "--listen",
                  "127.0.0.1", "--port", str(net.ports["irc1"]), "--agent", "ircd",
                  "--peer", f"irc2.test=127.0.0.1:{net.ports['irc2']}:{p12}:{p21}")
        net.start("irc2", "ircd", "serve", "--name", "irc2.test", "--template", str(TEMPLATE), "--listen",
                  "127.0.0.1", "--port", str(net.ports["irc2"]), "--agent", "ircd", "--connect",
                  "--peer", f"irc1.test=127.0.0.1:{net.ports['irc1']}:{p21}:{p12}")
        linked = net.run("ircd", "linked", "--host", "127.0.0.1", "--port", str(net.ports["irc1"]), "--expect",
                         "irc2.test", "--timeout", "20")
        assert linked.returncode == 0, linked.stdout + linked.stderr     # as the scenario: link, then bots
        for i in range(4):
            server = "irc1" if i < 2 else "irc2"
            net.start(f"bot{i}", "q9bot", *bot_args(f"q9bot-{i}", net.ports[server]))
        wait_for(lambda: len(net.records(event="joined")) >= 4, 30, "4 bots joined")
        yield net
    finally:
        started = net.records(event="started", _kind="ircd")
        codes = net.stop_all()
    assert codes == {node: 0 for node in codes}, f"exit codes after SIGTERM: {codes}"
    assert len(started) == 2 and not [r["pid"] for r in started if _alive(r["pid"])], "an ngircd is left"
    assert not list(net.tmp.iterdir()), f"left in TMPDIR: {list(net.tmp.iterdir())}"
    stopped = net.records(event="stopped", _kind="ircd")
    assert sorted(r["server"] for r in stopped) == ["irc1.test", "irc2.test"]


def test_the_servers_are_linked_and_the_bots_joined_both(network: Network) -> None:
    result = network.run("ircd", "linked", "--host", "127.0.0.1", "--port", str(network.ports["irc1"]),
                         "--expect", "irc2.test", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    linked = json.loads(result.stdout)
    assert linked["linked"] is True and {"irc1.test", "irc2.test"} <= set(linked["servers"])
    joined = network.records(event="joined")
    assert sorted(r["nick"] for r in joined) == [f"q9bot-{i}" for i in range(4)]
    assert {r["channel"] for r in joined} == {"#catch"}
    assert all(r["_kind"] == "q9bot" and r["server"] == "127.0.0.1" for r in joined)
    events = [json.loads(line) for line in (network.box / "events.jsonl").read_text().splitlines()]
    assert sorted(e["data"]["nick"] for e in events if e.get("event") == "botJoined") == \
        [f"q9bot-{i}" for i in range(4)]


def test_a_probe_of_a_server_nobody_links_to_times_out(network: Network) -> None:
    result = network.run("ircd", "linked", "--host", "127.0.0.1", "--port", str(network.ports["irc1"]),
                         "--expect", "irc3.test", "--timeout", "1.5")
    assert result.returncode == 1
    assert json.loads(result.stdout)["linked"] is False


def test_ping_gets_a_pong_from_every_bot_on_both_servers(network: Network) -> None:
    code, replies = network.command("--", "!ping 41")
    assert code == 0, replies
    assert replies["cmd"] == "ping" and replies["seq"] == 41 and replies["expected"] == 4
    assert sorted(replies["answered"]) == [f"q9bot-{i}" for i in range(4)]
    for answer in replies["answered"].values():
        assert answer["text"] == "!pong 41" and 0 < answer["rtt_ms"] < 2000
    assert len(network.records(event="cmd", cmd="ping", seq=41)) == 4
    assert network.records(event="sent", seq=41, _kind="botmaster")[0]["text"] == "!ping 41"


def test_a_listening_botmaster_takes_orders_from_its_fifo_and_times_the_answers(network: Network) -> None:
    master = network.start("master", "botmaster", "--server", "127.0.0.1", "--port", str(network.ports["irc1"]),
                           "--secret", SECRET, "--agent", "listener", "--listen", irc.LISTEN_FIFO)
    try:
        wait_for(lambda: network.records(event="ready", _kind="botmaster"), 30, "the listener joined")
        fifo = network.box / irc.LISTEN_FIFO

        def order(line: str) -> None:                  # what the scenario agent runs in the botmaster's node
            written = subprocess.run(["sh", "-c", irc.WRITE_ORDER, "sh", line, irc.LISTEN_FIFO],
                                     env=network.env("master"), capture_output=True, text=True, timeout=10)
            assert written.returncode == 0, written.stderr

        def outcome(ident: int) -> dict[str, Any]:
            return wait_for(lambda: next((r for r in network.records(id=ident, _kind="botmaster")
                                          if r["event"] in ("replies", "failed")), None), 20, f"order {ident}")
        for ident in (1, 2):                           # the same connection serves one order after another
            order(json.dumps({"id": ident, "text": f"!ping {60 + ident}", "expect": 4, "wait": 10}))
            replies = outcome(ident)
            assert replies["event"] == "replies" and replies["seq"] == 60 + ident
            assert sorted(replies["answered"]) == [f"q9bot-{i}" for i in range(4)]
            assert all(0 < a["rtt_ms"] < 2000 for a in replies["answered"].values())
            assert network.records(event="sent", id=ident)[0]["from"] == "botmaster"
        order(json.dumps({"id": 3, "text": "!flood 127.0.0.1 9 1 100kbit", "expect": 0, "wait": 1.5,
                          "forge": "eve"}))
        forged = outcome(3)
        assert forged["answered"] == {} and forged["forged"] is True and forged["from"] == "eve"
        refused = wait_for(lambda: len(r := network.records(event="refused", **{"from": "eve"})) >= 4 and r, 10,
                           "4 refusals of eve's flood")
        assert {r["reason"] for r in refused} == {"not the botmaster"}
        order('{"id": 4, "text": "ping"}')
        assert "command text starting with '!'" in outcome(4)["error"]
        assert fifo.is_fifo()
    finally:
        master.send_signal(signal.SIGTERM)
        code = master.wait(10)
        del network.procs["master"]
    assert code == 0 and not (network.box / irc.LISTEN_FIFO).exists()          # it takes its FIFO away


def _receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    return sock


def _drain(sock: socket.socket, seconds: float) -> list[tuple[int, int]]:
    """(payload size, TOS) of every datagram arriving within `seconds`."""
    got = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4))
        except TimeoutError:
            continue
        tos = [c[2][0] for c in ancillary if c[0] == socket.IPPROTO_IP and c[1] == socket.IP_TOS]
        got.append((len(data), tos[0] if tos else -1))
    return got


def test_a_flood_from_another_nick_is_refused_by_every_bot(network: Network) -> None:
    with _receiver() as sock:
        port = sock.getsockname()[1]
        code, replies = network.command("--forge", "mallory", "--wait", "2", "--", f"!flood 127.0.0.1 {port} 5 1Mbit")
        assert code == 0 and replies["answered"] == {}
        refused = wait_for(lambda: len(r := network.records(event="refused", **{"from": "mallory"})) >= 4 and r,
                           10, "4 refusals")
        assert len(refused) == 4 and {r["reason"] for r in refused} == {"not the botmaster"}
        assert {r["cmd"] for r in refused} == {"flood"}
        assert _drain(sock, 1.0) == []


def test_a_signed_flood_outside_the_experiment_is_refused(network: Network) -> None:
    code, replies = network.command("--expect", "0", "--wait", "2", "--", "!flood 127.0.0.2 9 1 100kbit",
                                    server="irc2")
    assert code == 0 and replies["answered"] == {}
    refused = wait_for(lambda: len(r := network.records(event="refused", seq=replies["seq"])) >= 4 and r, 10,
                       "4 refusals of the outside flood")
    assert {r["reason"] for r in refused} == {"target outside the experiment"}
    assert not network.records(event="cmd", seq=replies["seq"])


def test_a_replayed_command_is_refused(network: Network) -> None:
    """Sends one signed line twice, as a client of its own: the second time every bot refuses it."""
    from nestbed.apps import ircproto
    from nestbed.apps.botmaster import join
    from nestbed.apps.ircconn import Connection

    conn = Connection.open("127.0.0.1", network.ports["irc1"], "botmaster", 10)
    join(conn, "#catch", 10)
    wire = ircproto.sign(SECRET, conn.nick, "!ping 77", ircproto.new_nonce(77))
    for _ in range(2):
        conn.send("PRIVMSG", "#catch", wire)
        time.sleep(0.5)
    conn.close()
    assert len(wait_for(lambda: len(r := network.records(event="cmd", seq=77)) >= 4 and r, 5, "4 pings")) == 4
    replayed = wait_for(lambda: len(r := network.records(event="refused", seq=77)) >= 4 and r, 5, "4 refusals")
    assert {r["reason"] for r in replayed} == {"replayed"}


def test_a_signed_flood_arrives_marked_dscp8_until_stop_and_is_reported(network: Network) -> None:
    with _receiver() as sock:
        port = sock.getsockname()[1]
        code, replies = network.command("--seq", "501", "--", f"!flood 127.0.0.1 {port} 60 100kbit")
        assert code == 0 and sorted(replies["answered"]) == [f"q9bot-{i}" for i in range(4)], replies
        assert {a["text"] for a in replies["answered"].values()} == {"!ok 501"}
        began = time.monotonic()
        during = _drain(sock, 2.0)
        code, stopped = network.command("--seq", "502", "--", "!stop", server="irc2")
        seconds = time.monotonic() - began
        assert code == 0, stopped
        during += _drain(sock, 0.3)                  # what was on its way when the bots stopped
        after = _drain(sock, 1.0)
        code, report = network.command("--seq", "503", "--", "!report")
    assert code == 0, report
    assert during and set(during) == {(botjobs.DATAGRAM_BYTES, TOS_DSCP8)}
    assert after == [], "datagrams after !stop"
    expected = 4 * 100_000 / 8000 * seconds          # 4 bots × 12.5 datagrams/s
    assert 0.6 * expected <= len(during) <= 1.3 * expected, (len(during), expected)
    sent = {nick: answer["packets"] for nick, answer in report["answered"].items()}
    assert sum(sent.values()) == len(during), (sent, len(during))     # loopback loses nothing
    assert all(answer["bytes"] == botjobs.DATAGRAM_BYTES * answer["packets"] for answer in report["answered"].values())
    records = network.records(event="report", seq=503)
    assert sorted((r["_node"], r["packets"]) for r in records) == \
        sorted((f"bot{nick[-1]}", packets) for nick, packets in sent.items())
    cmds = network.records(event="cmd", cmd="flood", seq=501)
    assert len(cmds) == 4 and {(c["address"], c["port"], c["rate"]) for c in cmds} == {("127.0.0.1", port, 100_000)}
    ended = wait_for(lambda: len(r := network.records(event="flood_ended", port=port)) >= 4 and r, 5, "flood_ended")
    assert all(r["stopped"] for r in ended)


def test_http_fetches_are_made_and_recorded(network: Network) -> None:
    import threading
    from http.server import ThreadingHTTPServer

    from nestbed.apps.http_server import Handler
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/20000"
        code, replies = network.command("--seq", "601", "--", f"!http {url} 3")
        assert code == 0 and len(replies["answered"]) == 4, replies
        fetched = wait_for(lambda: len(r := network.records(event="http", url=url)) >= 12 and r, 10, "12 fetches")
    finally:
        server.shutdown()
        server.server_close()
    assert len(fetched) == 12 and {(r["status"], r["bytes"]) for r in fetched} == {(200, 20000)}
    assert sorted({r["_node"] for r in fetched}) == [f"bot{i}" for i in range(4)]
    assert all(0 < r["seconds"] < 5 for r in fetched)
