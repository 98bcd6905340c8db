"""The botmaster: signed commands to the channel, and the bots' replies, timed.

    python -m nestbed.apps.botmaster --server irc1 --port 6667 --channel '#catch' --nick botmaster \
        --secret HEX --expect 20 --wait 10 --agent AGENT [--seq N] [--forge NICK] -- '!ping 7'
    python -m nestbed.apps.botmaster --server irc1 ... --secret HEX --agent AGENT --listen botmaster.in

One shot (a command given): connects, joins, waits for the end of NAMES, sends the command (signed, ircproto) and
collects the replies sent to it (`!pong`/`!ok`/`!reported` of this command's SEQ) until --expect distinct bots
answered or --wait seconds passed. SEQ: the ping's own, else --seq, else one from the clock. Records (kind
botmaster) `sent` and `replies`, prints the replies object as one JSON line; exit 0 when every expected bot
answered, 1 otherwise.

--expect 0 expects silence (a command every bot must refuse): it waits the whole --wait, exit 0 when nobody
answered. --forge NICK sends the text unsigned, as NICK (the containment check): exit 0 when no bot answered.

--listen FIFO stays on the channel, as a botmaster does, and takes its commands from FIFO (made by it; a relative
name is in $NESTBED_MAILBOX), one JSON object per line:

    {"id": 3, "text": "!ping 3", "expect": 20, "wait": 10, "seq": 3, "forge": "mallory"}   (seq, forge optional)

It records `ready` once it has joined, then per command `sent` and `replies` as above, each with the command's
id (`failed` {id, error} for a line it cannot take). A forged command goes out over a second connection of its
own, as NICK. Staying connected keeps a Python start (seconds in a loaded TCG guest) and a first command's
cold run out of every round trip. SIGTERM: QUIT, remove the FIFO, exit 0.
"""
from __future__ import annotations

import json
import os
import select
import sys
import time

from nestbed.apps import ircproto, quickack
from nestbed.apps.args import Parser, fail
from nestbed.apps.ircconn import Connection, IrcError
from nestbed.apps.mailbox import Stop, record

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.13 s of a start under emulation
if TYPE_CHECKING:
    from typing import Any


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
    """One shot: connect as the botmaster (or the forger), send `text`, collect the replies."""
    conn = Connection.open(args.server, args.port, args.forge or args.nick, args.wait + 10)
    try:
        join(conn, args.channel, args.wait + 10)
        return round_trip(conn, args, text, args.seq, args.expect, args.wait, args.forge or None, Stop())
    finally:
        conn.close()


def round_trip(conn: Connection, args: Any, text: str, given_seq: int | None, expect: int, wait: float,
               forge: str | None, stop: Stop, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send `text` on a joined connection (signed, unless forged) and collect the replies: the `replies` object.
    Records `sent` on the way (with `extra`, e.g. the listener's command id)."""
    extra = extra or {}
    seq = choose_seq(text, given_seq)
    name = ircproto.command_name(text)
    wire = text if forge else ircproto.sign(args.secret, conn.nick, text, ircproto.new_nonce(seq))
    sent_at = time.monotonic()
    conn.send("PRIVMSG", args.channel, wire)
    record(args.agent, {"event": "sent", "cmd": name, "seq": seq, "text": text, "from": conn.nick,
                        "forged": bool(forge), **extra}, kind="botmaster")
    answered = collect(conn, None if forge else seq, sent_at, 0 if forge else expect, wait, stop)
    return {"event": "replies", "cmd": name, "seq": seq, "expected": 0 if forge else expect, "answered": answered,
            **({"forged": True, "from": forge} if forge else {}), **extra}


class Listener:
    """--listen: on the channel for good, commands from a FIFO (see the module's doc)."""

    def __init__(self, args: Any, path: str):
        self.args, self.path = args, path
        self.stop = Stop()
        self.pending = b""

    def open_fifo(self) -> int:
        if os.path.lexists(self.path):
            os.unlink(self.path)              # a FIFO left by a killed listener (nobody reads it: writers block)
        os.mkfifo(self.path, 0o600)
        return os.open(self.path, os.O_RDWR | os.O_NONBLOCK)   # read-write: no EOF when a writer closes

    def serve(self) -> None:
        fifo = self.open_fifo()
        try:
            while not self.stop:
                conn = self.connect()
                if conn is None:
                    return
                try:
                    self.loop(conn, fifo)
                except (OSError, IrcError) as error:
                    print(f"botmaster: lost {self.args.server} ({error}); connecting again", file=sys.stderr,
                          flush=True)
                    conn.sock.close()
                    continue
                conn.close("stopped")
        finally:
            os.close(fifo)
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def connect(self) -> Connection | None:
        while not self.stop:
            try:
                conn = Connection.open(self.args.server, self.args.port, self.args.nick, self.args.wait + 10)
                present = join(conn, self.args.channel, self.args.wait + 10)
            except (OSError, IrcError) as error:
                print(f"botmaster: cannot join on {self.args.server} yet ({error}); trying again", file=sys.stderr,
                      flush=True)
                self.stop.sleep(1.0)
                continue
            record(self.args.agent, {"event": "ready", "nick": conn.nick, "present": len(present)},
                   kind="botmaster")
            return conn
        return None

    def loop(self, conn: Connection, fifo: int) -> None:
        while not self.stop:
            if conn.buffered():
                try:
                    passing = conn.read(0)    # a line to nobody in particular (a late reply, a JOIN): passed over
                except TimeoutError:          # it was a PING, answered
                    continue
                if passing.command == "ERROR":
                    raise IrcError(" ".join(passing.params))
                continue
            readable, _, _ = select.select([conn.sock.fileno(), fifo], [], [], 0.25)
            if conn.sock.fileno() in readable:
                conn.fill()
            if fifo in readable:
                self.pending += os.read(fifo, 65536)
                while b"\n" in self.pending:
                    line, _, self.pending = self.pending.partition(b"\n")
                    if line.strip():
                        self.obey(conn, line)

    def obey(self, conn: Connection, line: bytes) -> None:
        try:
            order = parse_order(line)
        except ValueError as error:
            ident = _id_of(line)
            record(self.args.agent, {"event": "failed", "error": str(error), **({"id": ident} if ident else {})},
                   kind="botmaster")
            return
        extra = {"id": order["id"]}
        if order["forge"]:
            replies = self.forged(order, extra)
        else:
            replies = round_trip(conn, self.args, order["text"], order["seq"], order["expect"], order["wait"],
                                 None, self.stop, extra)
        record(self.args.agent, replies, kind="botmaster")

    def forged(self, order: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """The containment check: the text unsigned, from another nick, over a connection of its own."""
        try:
            other = Connection.open(self.args.server, self.args.port, order["forge"], order["wait"] + 10)
        except (OSError, IrcError) as error:
            return {"event": "failed", "error": f"forging as {order['forge']}: {error}", **extra}
        try:
            join(other, self.args.channel, order["wait"] + 10)
            return round_trip(other, self.args, order["text"], order["seq"], 0, order["wait"], order["forge"],
                              self.stop, extra)
        finally:
            other.close()


def parse_order(line: bytes) -> dict[str, Any]:
    """A listener's command line → {id, text, expect, wait, seq, forge}; ValueError says what is wrong."""
    try:
        order = json.loads(line)
    except ValueError:
        raise ValueError(f"not JSON: {line[:80]!r}") from None
    if not isinstance(order, dict):
        raise ValueError(f"not a JSON object: {line[:80]!r}")
    text, ident = order.get("text"), order.get("id")
    if not isinstance(ident, int) or not isinstance(text, str) or not text.startswith("!"):
        raise ValueError(f"needs an integer id and a command text starting with '!': {line[:80]!r}")
    expect, wait, seq, forge = order.get("expect", 1), order.get("wait", 10), order.get("seq"), order.get("forge")
    if not isinstance(expect, int) or expect < 0 or not isinstance(wait, (int, float)) or not 0 < wait <= 3600:
        raise ValueError(f"command {ident}: expect must be an integer >= 0 and wait in (0, 3600]")
    if seq is not None and not isinstance(seq, int):
        raise ValueError(f"command {ident}: seq must be an integer")
    if forge is not None and (not isinstance(forge, str) or not forge or " " in forge):
        raise ValueError(f"command {ident}: forge must be a nick")
    if not forge and isinstance(malformed := ircproto.parse_command(text), ircproto.Malformed):
        raise ValueError(f"command {ident}: {text!r}: {malformed.why}")
    return {"id": ident, "text": text, "expect": expect, "wait": float(wait), "seq": seq, "forge": forge or None}


def _id_of(line: bytes) -> int | None:
    """The id of a command line that is otherwise wrong, so its sender learns why."""
    try:
        ident = json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None
    return ident if isinstance(ident, int) else None


def fifo_path(given: str) -> str:
    if os.path.isabs(given):
        return given
    box = os.environ.get("NESTBED_MAILBOX")
    if not box:
        fail("botmaster", f"--listen {given!r} is relative and NESTBED_MAILBOX is not set; give an absolute path")
    return os.path.join(box, given)


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
    parser.add_argument("--listen", default="", metavar="FIFO", help="stay connected; commands from FIFO")
    parser.add_argument("--quickack", action="store_true", help="ACK at once on this node's routes (apps/quickack)")
    parser.add_argument("text", nargs="*", help="the command, e.g. '!ping 7' (not with --listen)")
    args = parser.parse_args()
    text = " ".join(args.text)
    if args.expect < 0 or not 0 < args.wait <= 3600:
        fail("botmaster", "--expect must be >= 0 and --wait in (0, 3600]")
    if args.listen and (text or args.forge):
        fail("botmaster", "--listen takes its commands from the FIFO: give no command text and no --forge")
    if not args.listen and not text:
        fail("botmaster", "give a command (e.g. -- '!ping 1'), or --listen FIFO")
    if not args.forge:
        try:
            ircproto.check_secret(args.secret)
        except ValueError as error:
            fail("botmaster", f"--secret: {error}")
    if args.listen:
        if args.quickack:
            quickack.ack_at_once("botmaster")
        try:
            Listener(args, fifo_path(args.listen)).serve()
        except OSError as error:
            fail("botmaster", f"--listen {args.listen}: {error.strerror or error}", code=1)
        return
    if not args.forge and isinstance(malformed := ircproto.parse_command(text), ircproto.Malformed):
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
