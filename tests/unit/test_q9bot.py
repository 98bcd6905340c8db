"""q9bot without a network: the IRC lines and signed commands of ircproto, and the bot's command handler
(botcommands) driven directly, its work done by a fake. Who may command, what is refused and why, what is replied."""
from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from typing import Any

import pytest

from nestbed.apps import botjobs, botmaster, ircproto
from nestbed.apps.botcommands import Commands, parse_subnets
from nestbed.apps.ircproto import Flood, Http, Malformed, Ping, Report, Stop

SECRET = "0123456789abcdef" * 4
OTHER_SECRET = "fedcba9876543210" * 4
HOSTS = {"target": "10.0.1.9", "outside": "192.0.2.1"}


class FakeWork:
    def __init__(self) -> None:
        self.floods: list[tuple[str, int, float, int]] = []
        self.fetches: list[tuple[str, str, int]] = []
        self.stops = 0

    def flood(self, address: str, port: int, seconds: float, rate: int) -> None:
        self.floods.append((address, port, seconds, rate))

    def fetch(self, address: str, url: str, count: int) -> None:
        self.fetches.append((address, url, count))

    def stop(self) -> None:
        self.stops += 1

    def counts(self) -> tuple[int, int]:
        return 3, 3000

    def idle(self) -> bool:
        return not self.floods and not self.fetches and not self.stops


def resolve(name: str) -> str:
    if name in HOSTS:
        return HOSTS[name]
    ipaddress.ip_address(name)           # an address resolves to itself, like gethostbyname
    return name


class Bot:
    def __init__(self) -> None:
        self.work = FakeWork()
        self.notes: list[dict[str, Any]] = []
        self.commands = Commands("botmaster", SECRET, parse_subnets("10.0.1.0/24,10.0.2.0/24"), self.work,
                                 self.notes.append, resolve)

    def say(self, text: str, sender: str = "botmaster") -> str | None:
        return self.commands.handle(sender, text)

    def last(self) -> dict[str, Any]:
        return self.notes[-1]


def signed(text: str, seq: int = 5, nick: str = "botmaster", secret: str = SECRET) -> str:
    return ircproto.sign(secret, nick, text, ircproto.new_nonce(seq))


@pytest.fixture
def bot() -> Bot:
    return Bot()


# --- IRC lines --------------------------------------------------------------------------------------------------

def test_a_line_with_prefix_params_and_trailing():
    line = ircproto.parse_line(":botmaster!~bm@10.0.1.2 PRIVMSG #catch :!ping 7 ~7.ab12~0123456789abcdef\r\n")
    assert line == ircproto.Line("botmaster!~bm@10.0.1.2", "PRIVMSG",
                                 ["#catch", "!ping 7 ~7.ab12~0123456789abcdef"])
    assert line.nick == "botmaster"


@pytest.mark.parametrize("raw, expected", [
    ("PING :irc1.catch", ("", "PING", ["irc1.catch"])),
    (":irc1.test 366 bot #catch :End of NAMES list", ("irc1.test", "366", ["bot", "#catch", "End of NAMES list"])),
    (":irc1.test 364 me irc2.test irc1.test :1 info", ("irc1.test", "364", ["me", "irc2.test", "irc1.test",
                                                                             "1 info"])),
    ("join #catch", ("", "JOIN", ["#catch"])),
    (":a!b@c PRIVMSG bot :", ("a!b@c", "PRIVMSG", ["bot", ""])),
])
def test_lines(raw, expected):
    assert tuple(ircproto.parse_line(raw)) == expected


@pytest.mark.parametrize("raw", ["", "\r\n", ":prefix.only"])
def test_a_line_without_a_command_is_an_error(raw):
    with pytest.raises(ValueError, match="no command"):
        ircproto.parse_line(raw)


def test_format_line_round_trips_and_refuses_line_breaks():
    text = ircproto.format_line("PRIVMSG", "#catch", "!flood target 80 10 1Mbit")
    assert text == "PRIVMSG #catch :!flood target 80 10 1Mbit\r\n"
    assert ircproto.parse_line(text).params == ["#catch", "!flood target 80 10 1Mbit"]
    assert ircproto.format_line("NICK", "q9bot-1") == "NICK q9bot-1\r\n"
    assert ircproto.format_line("PRIVMSG", "x", ":colon") == "PRIVMSG x ::colon\r\n"
    with pytest.raises(ValueError):
        ircproto.format_line("PRIVMSG", "#catch", "two\r\nQUIT")


def test_nicks_compare_as_irc_does():
    assert ircproto.same_nick("BotMaster", "botmaster")
    assert ircproto.same_nick("bot[1]", "BOT{1}")
    assert not ircproto.same_nick("botmaster", "botmaster_")


# --- signatures -------------------------------------------------------------------------------------------------

def test_sign_then_verify():
    wire = ircproto.sign(SECRET, "botmaster", "!flood target 80 10 1Mbit", "12.00ff00ff")
    text, _, tail = wire.partition(" ~")
    assert text == "!flood target 80 10 1Mbit"
    nonce, mac = tail.split("~")
    assert nonce == "12.00ff00ff" and len(mac) == 16 and int(mac, 16) >= 0
    assert ircproto.verify(SECRET, "botmaster", wire) == ("!flood target 80 10 1Mbit", "12.00ff00ff", 12)


@pytest.mark.parametrize("change", [
    lambda w: w.replace("target", "outside"),             # the text changed after signing
    lambda w: w[:-1] + ("0" if w[-1] != "0" else "1"),    # the MAC changed
    lambda w: w.replace("~12.", "~13."),                  # the nonce changed
    lambda w: w.split(" ~")[0],                           # no signature at all
])
def test_a_changed_or_missing_signature_does_not_verify(change):
    wire = ircproto.sign(SECRET, "botmaster", "!flood target 80 10 1Mbit", "12.00ff00ff")
    assert ircproto.verify(SECRET, "botmaster", change(wire)) is None


def test_the_signature_binds_the_nick_and_the_secret():
    wire = ircproto.sign(SECRET, "botmaster", "!stop", "3.abcd")
    assert ircproto.verify(SECRET, "mallory", wire) is None
    assert ircproto.verify(OTHER_SECRET, "botmaster", wire) is None


def test_nonces_are_new_each_time_and_carry_the_seq():
    nonces = {ircproto.new_nonce(9) for _ in range(50)}
    assert len(nonces) == 50 and all(n.startswith("9.") for n in nonces)


@pytest.mark.parametrize("secret", ["", "xyz", "abcd", "0123456789abcde"])
def test_a_secret_is_long_hex(secret):
    with pytest.raises(ValueError, match="secret"):
        ircproto.check_secret(secret)


# --- rates and commands -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, rate", [("1Mbit", 1_000_000), ("500kbit", 500_000), ("2.5Mbit", 2_500_000),
                                        ("1mbit", 1_000_000), ("800000", 800_000), ("1Gbit", 1_000_000_000),
                                        ("0.5kbit", 500), ("100kbit", 100_000), ("64bit", 64)])
def test_rates(text, rate):
    assert ircproto.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "0", "0kbit", "-1Mbit", "1MB", "1kbps", "1 Mbit", "1e6", "20Gbit",
                                  "1.Mbit"])
def test_bad_rates(text):
    with pytest.raises(ValueError):
        ircproto.parse_rate(text)


@pytest.mark.parametrize("text, command", [
    ("!ping 7", Ping(7)),
    ("!flood target 80 10 1Mbit", Flood("target", 80, 10.0, 1_000_000)),
    ("!flood 10.0.1.9 9 0.5 2.5Mbit", Flood("10.0.1.9", 9, 0.5, 2_500_000)),
    ("!http http://target/100000 3", Http("http://target/100000", 3)),
    ("!http http://target:8080 1", Http("http://target:8080", 1)),
    ("!stop", Stop()),
    ("!REPORT", Report()),
])
def test_commands(text, command):
    assert ircproto.parse_command(text) == command


@pytest.mark.parametrize("text, why", [
    ("!flood target 80 10", "takes 4 arguments"),
    ("!flood target 0 10 1Mbit", "PORT"),
    ("!flood target 80 -1 1Mbit", "SECONDS"),
    ("!flood target 80 99999 1Mbit", "SECONDS"),
    ("!flood target 80 10 fast", "not a rate"),
    ("!ping seven", "SEQ"),
    ("!ping", "takes 1 arguments"),
    ("!stop now", "takes 0 arguments"),
    ("!http ftp://target/ 3", "URL"),
    ("!http http://target/ 0", "N"),
    ("!bogus 1", "unknown command"),
    ("!", "unknown command"),
])
def test_malformed_commands_say_why(text, why):
    result = ircproto.parse_command(text)
    assert isinstance(result, Malformed) and why in result.why


def test_replies_round_trip():
    assert ircproto.pong(7) == "!pong 7" and ircproto.ok(8) == "!ok 8"
    assert ircproto.reported(9, 12, 12000) == "!reported 9 packets=12 bytes=12000"
    assert ircproto.parse_reply("!reported 9 packets=12 bytes=12000") == \
        ircproto.Reply("reported", 9, {"packets": 12, "bytes": 12000})
    assert ircproto.parse_reply("!pong 7") == ircproto.Reply("pong", 7, {})
    for junk in ("!ping 7", "hello", "!ok", "!ok seven", "!pong 7 extra"):
        assert ircproto.parse_reply(junk) is None


def test_the_flood_pace():
    assert botjobs.gap_seconds(1_000_000, 1000) == pytest.approx(0.008)   # 125 datagrams of 1000 bytes a second
    assert botjobs.gap_seconds(100_000, 1000) == pytest.approx(0.08)
    assert botjobs.gap_seconds(1_000_000) == pytest.approx(botjobs.DATAGRAM_BYTES * 8 / 1_000_000)
    assert botjobs.DSCP << 2 == 32


# --- the handler: who may command -------------------------------------------------------------------------------

def test_a_signed_ping_is_answered_and_recorded(bot):
    assert bot.say(signed("!ping 7", seq=7)) == "!pong 7"
    assert bot.last() == {"event": "cmd", "cmd": "ping", "seq": 7, "from": "botmaster"}
    assert bot.work.idle()


def test_a_signed_flood_starts_the_flood_and_is_acknowledged(bot):
    assert bot.say(signed("!flood target 80 20 1Mbit", seq=31)) == "!ok 31"
    assert bot.work.floods == [("10.0.1.9", 80, 20.0, 1_000_000)]
    assert bot.last() == {"event": "cmd", "cmd": "flood", "seq": 31, "from": "botmaster", "target": "target",
                          "address": "10.0.1.9", "port": 80, "seconds": 20.0, "rate": 1_000_000}


def test_the_botmaster_nick_matches_in_any_case(bot):
    assert bot.say(signed("!stop", seq=2, nick="BotMaster"), sender="BotMaster") == "!ok 2"
    assert bot.work.stops == 1


def refused(bot: Bot, reason: str) -> dict[str, Any]:
    note = bot.last()
    assert note["event"] == "refused" and note["reason"] == reason, note
    assert bot.work.idle(), "a refused command did something"
    return note


def test_another_nick_is_refused_even_with_a_valid_signature(bot):
    assert bot.say(signed("!flood target 80 20 1Mbit", nick="mallory"), sender="mallory") is None
    note = refused(bot, "not the botmaster")
    assert note["from"] == "mallory" and note["cmd"] == "flood"


def test_an_unsigned_command_from_another_nick_is_refused(bot):
    assert bot.say("!flood target 80 20 1Mbit", sender="mallory") is None
    refused(bot, "not the botmaster")


@pytest.mark.parametrize("wire", [
    "!flood target 80 20 1Mbit",                                               # unsigned
    signed("!flood target 80 20 1Mbit", secret=OTHER_SECRET),                  # another secret
    signed("!flood target 80 20 1Mbit").replace("target", "10.0.1.8"),        # changed after signing
    signed("!flood target 80 20 1Mbit", nick="mallory"),                      # signed for another nick
    "!flood target 80 20 1Mbit ~5.abcd~0000000000000000",                     # a made-up MAC
])
def test_a_bad_signature_from_the_botmaster_nick_is_refused(bot, wire):
    assert bot.say(wire) is None
    note = refused(bot, "bad signature")
    assert note["from"] == "botmaster" and note["cmd"] == "flood"


def test_a_replayed_command_is_refused(bot):
    wire = signed("!flood target 80 20 1Mbit", seq=44)
    assert bot.say(wire) == "!ok 44"
    assert bot.say(wire) is None
    assert bot.last() == {"event": "refused", "cmd": "flood", "from": "botmaster", "reason": "replayed", "seq": 44,
                          "detail": bot.last()["detail"]}
    assert len(bot.work.floods) == 1


@pytest.mark.parametrize("target", ["outside", "192.0.2.1", "127.0.0.2", "10.0.3.1", "nowhere", "::1"])
def test_a_target_outside_the_subnets_is_refused(bot, target):
    assert bot.say(signed(f"!flood {target} 80 20 1Mbit", seq=12)) is None
    note = refused(bot, "target outside the experiment")
    assert note["seq"] == 12 and target in note["detail"]


def test_an_http_target_outside_the_subnets_is_refused(bot):
    assert bot.say(signed("!http http://outside/1000 5")) is None
    refused(bot, "target outside the experiment")


@pytest.mark.parametrize("text", ["!flood target 80", "!flood target 80 20 lots", "!ping x", "!bogus",
                                  "!http http://target/ -1"])
def test_a_malformed_command_is_refused_with_why(bot, text):
    assert bot.say(signed(text, seq=3)) is None
    note = refused(bot, "malformed")
    assert note["detail"] and note["seq"] == 3


def test_chatter_is_ignored_and_not_recorded(bot):
    assert bot.say("hello bots", sender="mallory") is None
    assert bot.say("hello bots") is None
    assert bot.notes == [] and bot.work.idle()


def test_stop_report_and_http(bot):
    assert bot.say(signed("!http http://target:8080/100000 4", seq=60)) == "!ok 60"
    assert bot.work.fetches == [("10.0.1.9", "http://target:8080/100000", 4)]
    assert bot.say(signed("!stop", seq=61)) == "!ok 61"
    assert bot.work.stops == 1
    assert bot.say(signed("!report", seq=62)) == "!reported 62 packets=3 bytes=3000"
    assert bot.notes[-2:] == [{"event": "cmd", "cmd": "report", "seq": 62, "from": "botmaster"},
                              {"event": "report", "seq": 62, "packets": 3, "bytes": 3000}]


def test_a_ping_answers_with_its_own_seq(bot):
    assert bot.say(ircproto.sign(SECRET, "botmaster", "!ping 8", "99.abcd")) == "!pong 8"
    assert bot.last()["seq"] == 8


def test_subnets():
    assert [str(n) for n in parse_subnets(" 10.0.1.0/24, 10.0.2.7/24 ,")] == ["10.0.1.0/24", "10.0.2.0/24"]
    for bad in ("", ",", "10.0.1.0/33", "lan-a"):
        with pytest.raises(ValueError):
            parse_subnets(bad)


# --- the glue: replies go to the sender, the botmaster's SEQ ----------------------------------------------------

def test_the_bot_replies_to_the_senders_nick_not_the_channel_and_records_after(monkeypatch):
    from nestbed.apps import q9bot
    from nestbed.apps.ircproto import parse_line
    fake = Bot()
    deferred: list = []
    fake.commands.note = deferred.append
    irc = q9bot.Bot("q9bot-1", "#catch", "irc1", fake.commands, "q9bot", deferred)
    happened: list = []
    monkeypatch.setattr(q9bot, "record", lambda agent, data, kind=None: happened.append(("record", data["event"])))
    monkeypatch.setattr(q9bot, "event", lambda name, data=None: happened.append(("event", name)))

    def send(command: str, target: str, text: str) -> None:
        happened.append((command, target, text))
    irc.on_line(parse_line(f":botmaster!u@h PRIVMSG #catch :{signed('!ping 4', seq=4)}"), send)
    irc.on_line(parse_line(":mallory!u@h PRIVMSG #catch :!ping 5"), send)
    irc.on_line(parse_line(":q9bot-1!u@h JOIN #catch"), send)
    irc.on_line(parse_line(":other!u@h JOIN #catch"), send)
    assert happened == [("PRIVMSG", "botmaster", "!pong 4"), ("record", "cmd"), ("record", "refused"),
                        ("record", "joined"), ("event", "botJoined")]


def test_the_botmaster_seq():
    assert botmaster.choose_seq("!ping 17", 3) == 17
    assert botmaster.choose_seq("!flood target 80 1 1Mbit", 3) == 3
    assert botmaster.choose_seq("!stop", None) >= 0


# --- the programs' arguments: one line and exit 2 ---------------------------------------------------------------

@pytest.mark.parametrize("app, args, words", [
    ("q9bot", ["--server", "irc1", "--nick", "b", "--secret", "zz", "--subnets", "10.0.0.0/24"], "secret"),
    ("q9bot", ["--server", "irc1", "--nick", "b", "--secret", SECRET, "--subnets", "lan-a"], "lan-a"),
    ("q9bot", ["--server", "irc1", "--nick", "b c", "--secret", SECRET, "--subnets", "10.0.0.0/24"], "nick"),
    ("q9bot", ["--server", "irc1", "--nick", "b", "--secret", SECRET, "--subnets", "10.0.0.0/24", "--channel",
               "catch"], "channel"),
    ("q9bot", ["--nick", "b"], "required"),
    ("botmaster", ["--server", "irc1", "--secret", SECRET, "--", "!flood target 80"], "takes 4 arguments"),
    ("botmaster", ["--server", "irc1", "--secret", "", "--", "!ping 1"], "secret"),
    ("botmaster", ["--server", "irc1", "--secret", SECRET, "--wait", "0", "--", "!ping 1"], "--wait"),
])
def test_bad_arguments_are_one_line_and_exit_2(app, args, words):
    result = subprocess.run([sys.executable, "-m", f"nestbed.apps.{app}", *args], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# -- the listening botmaster's command lines ---------------------------------------------------------------------
def test_a_listener_order_is_parsed_with_its_defaults():
    assert botmaster.parse_order(b'{"id": 3, "text": "!ping 3"}') == {
        "id": 3, "text": "!ping 3", "expect": 1, "wait": 10.0, "seq": None, "forge": None}
    order = botmaster.parse_order(b'{"id": 4, "text": "!stop", "expect": 0, "wait": 2, "seq": 9, "forge": "eve"}')
    assert (order["expect"], order["wait"], order["seq"], order["forge"]) == (0, 2.0, 9, "eve")
    forged = botmaster.parse_order(b'{"id": 5, "text": "!flood", "forge": "eve"}')      # sent as it is
    assert forged["text"] == "!flood"


@pytest.mark.parametrize("line, why", [
    (b"!ping 3", "not JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"text": "!ping 3"}', "needs an integer id"),
    (b'{"id": 1, "text": "ping 3"}', "starting with '!'"),
    (b'{"id": 1, "text": "!ping 3", "expect": -1}', "expect must be an integer >= 0"),
    (b'{"id": 1, "text": "!ping 3", "wait": 0}', "wait in (0, 3600]"),
    (b'{"id": 1, "text": "!ping 3", "seq": "x"}', "seq must be an integer"),
    (b'{"id": 1, "text": "!ping 3", "forge": "two words"}', "forge must be a nick"),
    (b'{"id": 1, "text": "!flood x"}', "command 1: '!flood x'"),
])
def test_a_bad_listener_order_says_what_is_wrong(line, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        botmaster.parse_order(line)
    assert botmaster._id_of(line) == (1 if b'"id": 1' in line else None)


def test_listen_takes_no_command_text_and_a_relative_fifo_needs_a_mailbox(tmp_path):
    base = [sys.executable, "-m", "nestbed.apps.botmaster", "--server", "irc1", "--secret", SECRET]
    both = subprocess.run([*base, "--listen", "in", "--", "!ping 1"], capture_output=True, text=True, timeout=30)
    assert both.returncode == 2 and "give no command text" in both.stderr and "Traceback" not in both.stderr
    env = {k: v for k, v in __import__("os").environ.items() if k != "NESTBED_MAILBOX"}
    relative = subprocess.run([*base, "--listen", "in"], capture_output=True, text=True, timeout=30, env=env)
    assert relative.returncode == 2 and "NESTBED_MAILBOX is not set" in relative.stderr
    nothing = subprocess.run(base, capture_output=True, text=True, timeout=30)
    assert nothing.returncode == 2 and "or --listen FIFO" in nothing.stderr
