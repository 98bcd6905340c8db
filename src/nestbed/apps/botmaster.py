"""The botmaster: one signed command to the channel, then the bots' replies (one shot).

    python -m nestbed.apps.botmaster --server irc1 --port 6667 --channel '#catch' --nick botmaster \
        --secret HEX --expect 20 --wait 10 --agent AGENT [--seq N] [--forge NICK] -- '!ping 7'

Connects, joins, waits for the end of NAMES, sends the command (signed, ircproto) and collects the replies sent
to it (`!pong`/`!ok`/`!reported` of this command's SEQ) until --expect distinct bots answered or --wait seconds
passed. SEQ: the ping's own, else --seq, else one from the clock. Records (kind botmaster) `sent` and `replies`,
prints the replies object as one JSON line; exit 0 when every expected bot answered, 1 otherwise.

--expect 0 expects silence (a command every bot must refuse): it waits the whole --wait, exit 0 when nobody
answered. --forge NICK sends the text unsigned, as NICK (the containment check): exit 0 when no bot answered.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from nestbed.apps import ircproto
from nestbed.apps.args import Parser, fail
from nestbed.apps.ircconn import Connection, IrcError
from nestbed.apps.mailbox import Stop, record


def choose_seq(text: str, given: int | None) -> int:
    command = ircproto.parse_command(text)
    if isinstance(command, ircproto.Ping):
        return command.seq
    return given if given is not None else int(time.time() * 1000) % 1_000_000_000


def join(conn: Connection, channel: str, timeout: float) -> list[str]:
    """JOIN and read to the end of NAMES; the nicks in the channel."""
    conn.send("JOIN", channel)
    deadline = time.monotonic() + timeout
    names: list[str] = []
    while True:
        line = conn.read(deadline - time.monotonic())
        if line.command == "353" and len(line.params) >= 4 and ircproto.same_nick(line.params[2], channel):
            names += [name.lstrip("@+%&~") for name in line.params[3].split()]
        elif line.command == "366" and len(line.params) >= 2 and ircproto.same_nick(line.params[1], channel):
            return names
        elif line.command in ("403", "405", "471", "473", "474", "475"):
            raise IrcError(f"cannot join {channel}: {' '.join(line.params[1:])}")


def collect(conn: Connection, seq: int | None, sent_at: float, expect: int, wait: float,
            stop: Stop | None = None) -> dict[str, dict[str, Any]]:
    """Replies to us, per nick, until `expect` nicks answered (expect > 0), `wait` seconds, or SIGTERM.
    seq None: replies of any SEQ count."""
    answered: dict[str, dict[str, Any]] = {}
    deadline = sent_at + wait
    while (expect == 0 or len(answered) < expect) and not stop and (left := deadline - time.monotonic()) > 0:
        try:
            line = conn.read(min(left, 0.25))            # a quarter second: SIGTERM (Stop's flag) is looked at
        except TimeoutError:
            continue
        if line.command != "PRIVMSG" or len(line.params) < 2 or not ircproto.same_nick(line.params[0], conn.nick):
            continue
        reply = ircproto.parse_reply(line.params[1])
        if reply is None or (seq is not None and reply.seq != seq) or line.nick in answered:
            continue
        answered[line.nick] = {"rtt_ms": round((time.monotonic() - sent_at) * 1000, 2), "text": line.params[1],
                               **reply.fields}
    return answered


def command(args: Any, text: str) -> dict[str, Any]:
    nick = args.forge or args.nick
    seq = choose_seq(text, args.seq)
    name = ircproto.command_name(text)
    conn = Connection.open(args.server, args.port, nick, args.wait + 10)
    try:
        present = join(conn, args.channel, args.wait + 10)
        wire = text if args.forge else ircproto.sign(args.secret, conn.nick, text, ircproto.new_nonce(seq))
        sent_at = time.monotonic()
        conn.send("PRIVMSG", args.channel, wire)
        record(args.agent, {"event": "sent", "cmd": name, "seq": seq, "text": text, "from": conn.nick,
                            "forged": bool(args.forge), "present": len(present)}, kind="botmaster")
        answered = collect(conn, None if args.forge else seq, sent_at, 0 if args.forge else args.expect,
                                 args.wait, Stop())
    finally:
        conn.close()
    return {"event": "replies", "cmd": name, "seq": seq, "expected": 0 if args.forge else args.expect,
            "answered": answered, **({"forged": True, "from": nick} if args.forge else {})}


def main() -> None:
    parser = Parser(prog="botmaster", description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, default=6667)
    parser.add_argument("--channel", default="#catch")
    parser.add_argument("--nick", default="botmaster")
    parser.add_argument("--secret", default="", help="hex: the experiment's bot secret (not needed with --forge)")
    parser.add_argument("--expect", type=int, default=1, help="bots that must answer (0: none may)")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the replies")
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--forge", default="", metavar="NICK", help="send unsigned, as NICK")
    parser.add_argument("--agent", default="botmaster")
    parser.add_argument("text", nargs="+", help="the command, e.g. '!ping 7'")
    args = parser.parse_args()
    text = " ".join(args.text)
    if args.expect < 0 or not 0 < args.wait <= 3600:
        fail("botmaster", "--expect must be >= 0 and --wait in (0, 3600]")
    if not args.forge:
        try:
            ircproto.check_secret(args.secret)
        except ValueError as error:
            fail("botmaster", f"--secret: {error}")
        if isinstance(malformed := ircproto.parse_command(text), ircproto.Malformed):
            fail("botmaster", f"{text!r}: {malformed.why}")
    try:
        replies = command(args, text)
    except (OSError, IrcError) as error:                 # TimeoutError is an OSError
        fail("botmaster", f"{args.server}:{args.port}: {error or 'timed out'}", code=1)
    record(args.agent, replies, kind="botmaster")
    sys.stdout.write(json.dumps(replies) + "\n")
    answered = len(replies["answered"])
    sys.exit(0 if (answered == 0 if replies["expected"] == 0 else answered >= replies["expected"]) else 1)


if __name__ == "__main__":
    main()
