"""What q9bot and the botmaster say to each other over IRC, without any I/O (unit-tested).

- IRC lines: `parse_line(":nick!u@h PRIVMSG #c :hi there")` -> Line(prefix, command, params), the trailing
  parameter last; `format_line("PRIVMSG", "#c", "hi there")` the other way.
- Signed commands: the wire form is `TEXT ~NONCE~MAC`, MAC = the first 16 hex digits of
  HMAC-SHA256(bytes.fromhex(secret), f"{nick} {nonce} {text}") where nick is the sender's. A nonce is
  `SEQ.RANDOM` (decimal SEQ, hex RANDOM): the bot refuses a nonce it saw before, and SEQ names the command in
  records and replies.
- Commands: `!ping SEQ`, `!flood TARGET PORT SECONDS RATE`, `!http URL N`, `!stop`, `!report`.
- Replies: `!pong SEQ`, `!ok SEQ`, `!reported SEQ packets=P bytes=B`.
- Rates: "1Mbit" -> 1_000_000 bit/s (decimal prefixes k, M, G; a bare number is bit/s).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re

from nestbed.apps.tuples import NamedTuple


class Line(NamedTuple):
    prefix: str          # "" when the line has none
    command: str         # upper case: PRIVMSG, 001 …
    params: list[str]

    @property
    def nick(self) -> str:
        """The sender's nick (or server name) from the prefix."""
        return self.prefix.split("!", 1)[0]


def parse_line(line: str) -> Line:
    """One IRC line (CRLF stripped or not). Raises ValueError on a line without a command."""
    text = line.rstrip("\r\n")
    prefix = ""
    if text.startswith(":"):
        prefix, _, text = text[1:].partition(" ")
    head, sep, trailing = text.partition(" :")
    words = head.split()
    if not words:
        raise ValueError(f"no command in IRC line {line!r}")
    return Line(prefix, words[0].upper(), words[1:] + ([trailing] if sep else []))


def format_line(command: str, *params: str) -> str:
    """An IRC line (with CRLF); the last parameter becomes trailing when it needs to be."""
    for param in params:
        if "\r" in param or "\n" in param or "\0" in param:
            raise ValueError("an IRC parameter cannot hold CR, LF or NUL")
    words = [command, *params]
    if params and (not params[-1] or " " in params[-1] or params[-1].startswith(":")):
        words[-1] = ":" + params[-1]
    return " ".join(words) + "\r\n"


_RFC1459_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")


def same_nick(a: str, b: str) -> bool:
    """IRC nicks compare case-insensitively, with rfc1459's []\\~ = {}|^."""
    return a.translate(_RFC1459_LOWER) == b.translate(_RFC1459_LOWER)


# --- signatures -------------------------------------------------------------------------------------------------

_WIRE = re.compile(r"(?P<text>.*) ~(?P<nonce>(?P<seq>\d{1,12})\.[0-9a-f]{4,32})~(?P<mac>[0-9a-f]{16})")


def check_secret(secret: str) -> bytes:
    """The HMAC key of a hex secret; ValueError when it is not hex of at least 16 bytes."""
    try:
        key = bytes.fromhex(secret)
    except ValueError:
        raise ValueError("the secret must be hex digits") from None
    if len(key) < 16:
        raise ValueError("the secret must be at least 32 hex digits")
    return key


def new_nonce(seq: int) -> str:
    return f"{seq}.{os.urandom(6).hex()}"


def mac(secret: str, nick: str, text: str, nonce: str) -> str:
    return hmac.new(check_secret(secret), f"{nick} {nonce} {text}".encode(), hashlib.sha256).hexdigest()[:16]


def sign(secret: str, nick: str, text: str, nonce: str) -> str:
    """The wire form of `text` sent by `nick`."""
    return f"{text} ~{nonce}~{mac(secret, nick, text, nonce)}"


class Signed(NamedTuple):
    text: str
    nonce: str
    seq: int


def verify(secret: str, nick: str, wire: str) -> Signed | None:
    """The command inside `wire` when `nick` signed it with `secret`; None when unsigned or the MAC is wrong."""
    match = _WIRE.fullmatch(wire)
    if not match:
        return None
    text, nonce = match["text"], match["nonce"]
    if not hmac.compare_digest(match["mac"], mac(secret, nick, text, nonce)):
        return None
    return Signed(text, nonce, int(match["seq"]))


# --- commands ---------------------------------------------------------------------------------------------------

class Ping(NamedTuple):
    seq: int


class Flood(NamedTuple):
    target: str          # an address or a name (resolved by the bot)
    port: int
    seconds: float
    rate: int            # bit/s of UDP payload


class Http(NamedTuple):
    url: str
    times: int           # fetches, one after the other


class Stop(NamedTuple):
    pass


class Report(NamedTuple):
    pass


class Malformed(NamedTuple):
    why: str


Command = Ping | Flood | Http | Stop | Report

MAX_SECONDS = 3600.0
MAX_RATE = 10_000_000_000
MAX_FETCHES = 100_000
_RATE = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)(?P<prefix>[kmg]?)(?:bit)?", re.IGNORECASE)
_PREFIXES = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_rate(text: str) -> int:
    """Bit/s of "1Mbit", "500kbit", "2.5Mbit", "800000". ValueError when it is not a positive rate."""
    match = _RATE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a rate (e.g. 500kbit, 1Mbit, 2.5Mbit)")
    rate = round(float(match["number"]) * _PREFIXES[match["prefix"].lower()])
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate {text!r} is out of range (1bit .. 10Gbit)")
    return rate


def command_name(text: str) -> str:
    """The word after "!" (what records call the command, even when it is malformed)."""
    words = text.split()
    return words[0][1:].lower() if words and words[0].startswith("!") else ""


def _number(text: str, kind: type[int] | type[float], low: float, high: float, what: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"{what} {text!r} is out of range ({low:g} .. {high:g})")
    return value


def parse_command(text: str) -> Command | Malformed:
    name, args = command_name(text), text.split()[1:]
    arity = {"ping": 1, "flood": 4, "http": 2, "stop": 0, "report": 0}
    if name not in arity:
        return Malformed(f"unknown command {text.split()[0] if text.split() else text!r}")
    if len(args) != arity[name]:
        return Malformed(f"!{name} takes {arity[name]} arguments, not {len(args)}")
    try:
        if name == "ping":
            return Ping(int(_number(args[0], int, 0, 10**12, "SEQ")))
        if name == "flood":
            return Flood(args[0], int(_number(args[1], int, 1, 65535, "PORT")),
                         float(_number(args[2], float, 0.001, MAX_SECONDS, "SECONDS")), parse_rate(args[3]))
        if name == "http":
            if not re.fullmatch(r"http://[^/\s:]+(:\d{1,5})?(/\S*)?", args[0]):
                raise ValueError(f"URL {args[0]!r} is not http://HOST[:PORT]/PATH")
            return Http(args[0], int(_number(args[1], int, 1, MAX_FETCHES, "N")))
    except ValueError as error:
        return Malformed(str(error))
    return Stop() if name == "stop" else Report()


# --- replies ----------------------------------------------------------------------------------------------------

def pong(seq: int) -> str:
    return f"!pong {seq}"


def ok(seq: int) -> str:
    return f"!ok {seq}"


def reported(seq: int, packets: int, sent_bytes: int) -> str:
    return f"!reported {seq} packets={packets} bytes={sent_bytes}"


class Reply(NamedTuple):
    kind: str            # pong, ok, reported
    seq: int
    fields: dict[str, int]


_REPLY = re.compile(r"!(?P<kind>pong|ok|reported) (?P<seq>\d{1,12})(?P<rest>(?: \w+=\d+)*)")


def parse_reply(text: str) -> Reply | None:
    match = _REPLY.fullmatch(text.strip())
    if not match:
        return None
    fields = dict(pair.split("=") for pair in match["rest"].split())
    return Reply(match["kind"], int(match["seq"]), {k: int(v) for k, v in fields.items()})
