"""q9bot: an IRC bot of the CATCH demo. It joins a channel and obeys only the botmaster (botcommands).

    python -m nestbed.apps.q9bot --server irc1 --port 6667 --channel '#catch' --nick q9bot-3 \
        --botmaster botmaster --secret HEX --subnets 10.0.0.0/24,... --agent AGENT

Records (kind q9bot, agent AGENT): joined {server, nick, channel}, cmd, refused, report, flood_ended, http; the
scenario event botJoined {nick, server}. Replies go by PRIVMSG to the sender, before the record is written.
When the server goes away the bot connects again (and joins again); SIGTERM stops the flood, QUITs and exits 0.

The IRC side is ircconn's plain socket, one line at a time, not pydle on asyncio: measured in a vhost under TCG,
a pydle bot took ~60 ms of CPU per command (ten bots on a vCPU answer a !ping round in ~0.6 s) and 2.7 s to
import; this one answers in a few ms and starts in ~0.5 s. Floods and fetches run in threads (botjobs).
"""
from __future__ import annotations

import socket
import sys

from nestbed.apps import ircproto
from nestbed.apps.args import Parser, fail
from nestbed.apps.botcommands import Commands, parse_subnets
from nestbed.apps.botjobs import Jobs
from nestbed.apps.ircconn import Connection, IrcError
from nestbed.apps.mailbox import Stop, event, record

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.13 s of a start under emulation
if TYPE_CHECKING:
    from typing import Any

RETRY_SECONDS = 1.0
READ_SECONDS = 0.5                 # how often the loop looks at the stop flag
REGISTER_SECONDS = 10.0


class Bot:
    """One bot's IRC session: answer commands, note joins (no socket here: `on_line` gets lines, `send` sends).
    The commands' records wait in `deferred` until the reply is sent: the botmaster times the reply."""

    def __init__(self, nick: str, channel: str, server: str, commands: Commands, agent: str,
                 deferred: list[dict[str, Any]] | None = None):
        self.nick, self.channel, self.server = nick, channel, server
        self.commands, self.agent = commands, agent
        self.deferred = deferred if deferred is not None else []

    def on_line(self, line: ircproto.Line, send: Any) -> None:
        if line.command == "PRIVMSG" and len(line.params) >= 2:
            reply = self.commands.handle(line.nick, line.params[-1])
            if reply:
                send("PRIVMSG", line.nick, reply)
            for data in self.deferred:
                record(self.agent, data, kind="q9bot")
            self.deferred.clear()
        elif line.command == "JOIN" and line.params and ircproto.same_nick(line.nick, self.nick) \
                and line.params[0].lower() == self.channel.lower():
            record(self.agent, {"event": "joined", "server": self.server, "nick": self.nick,
                                "channel": self.channel}, kind="q9bot")
            event("botJoined", {"nick": self.nick, "server": self.server})


def warn(message: str) -> None:
    print(f"q9bot: {message}", file=sys.stderr, flush=True)


def run(bot: Bot, host: str, port: int, stop: Stop, jobs: Jobs) -> None:
    said = False
    while not stop:
        try:
            conn = Connection.open(host, port, bot.nick, REGISTER_SECONDS)
        except (OSError, IrcError) as error:        # TimeoutError is an OSError
            if not said:
                warn(f"cannot reach {host}:{port} yet ({error}); trying again")
                said = True
            stop.sleep(RETRY_SECONDS)
            continue
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # a reply leaves at once
        bot.nick = conn.nick or bot.nick
        try:
            conn.send("JOIN", bot.channel)
            while not stop:
                try:
                    line = conn.read(READ_SECONDS)
                except TimeoutError:
                    continue
                if line.command == "ERROR":
                    raise IrcError(" ".join(line.params))
                bot.on_line(line, conn.send)
        except (OSError, IrcError) as error:
            warn(f"lost {host}:{port} ({error}); connecting again")
            conn.sock.close()
            continue
        jobs.stop()
        conn.close("stopped")
        return
    jobs.stop()


def main() -> None:
    parser = Parser(prog="q9bot", description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, default=6667)
    parser.add_argument("--channel", default="#catch")
    parser.add_argument("--nick", required=True)
    parser.add_argument("--botmaster", default="botmaster")
    parser.add_argument("--secret", required=True, help="hex: the experiment's bot secret")
    parser.add_argument("--subnets", required=True, help="the experiment's subnets: targets outside are refused")
    parser.add_argument("--agent", default="q9bot")
    args = parser.parse_args()
    if args.channel[:1] not in ("#", "&") or not args.channel[1:] or " " in args.channel:
        fail("q9bot", f"--channel {args.channel!r} is not a channel name (#name)")
    if not args.nick or any(c in args.nick for c in " ,!@:#"):
        fail("q9bot", f"--nick {args.nick!r} is not a nick")
    try:
        subnets = parse_subnets(args.subnets)
        ircproto.check_secret(args.secret)
    except ValueError as error:
        fail("q9bot", str(error))

    def note(data: dict[str, Any]) -> None:
        record(args.agent, data, kind="q9bot")

    jobs = Jobs(note)                       # floods and fetches record from their threads as they end
    deferred: list[dict[str, Any]] = []     # a command's records, written once its reply is out
    commands = Commands(args.botmaster, args.secret, subnets, jobs, deferred.append)
    stop = Stop()
    run(Bot(args.nick, args.channel, args.server, commands, args.agent, deferred), args.server, args.port,
        stop, jobs)


if __name__ == "__main__":
    main()
