"""q9bot: an IRC bot of the CATCH demo (pydle). It joins a channel and obeys only the botmaster (botcommands).

    python -m nestbed.apps.q9bot --server irc1 --port 6667 --channel '#catch' --nick q9bot-3 \
        --botmaster botmaster --secret HEX --subnets 10.0.0.0/24,... --agent AGENT

Records (kind q9bot, agent AGENT): joined {server, nick, channel}, cmd, refused, report, flood_ended, http; the
scenario event botJoined {nick, server}. Replies go by PRIVMSG to the sender. When the server goes away the bot
connects again (and joins again); SIGTERM stops the flood, QUITs and exits 0.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pydle

from nestbed.apps import ircproto
from nestbed.apps.args import Parser, fail
from nestbed.apps.botcommands import Commands, parse_subnets
from nestbed.apps.botjobs import Jobs
from nestbed.apps.mailbox import Stop, event, record

RETRY_SECONDS = 1.0


class Bot(pydle.MinimalClient):
    RECONNECT_ON_ERROR = False        # run() below connects again, and keeps the records straight

    def __init__(self, nick: str, channel: str, server: str, commands: Commands, agent: str):
        super().__init__(nick, realname="q9bot")
        self.channel = channel
        self.server = server
        self.commands = commands
        self.agent = agent

    async def on_connect(self) -> None:
        await super().on_connect()
        await self.join(self.channel)

    async def on_join(self, channel: str, user: str) -> None:
        if self.is_same_nick(user, self.nickname) and self.is_same_channel(channel, self.channel):
            record(self.agent, {"event": "joined", "server": self.server, "nick": self.nickname,
                                "channel": self.channel}, kind="q9bot")
            event("botJoined", {"nick": self.nickname, "server": self.server})

    async def on_message(self, target: str, by: str, message: str) -> None:
        reply = self.commands.handle(by, message)
        if reply:
            await self.message(by, reply)

    async def on_unknown(self, message: Any) -> None:
        """ngircd's numerics that pydle has no handler for: nothing to do, nothing to log."""

    async def on_disconnect(self, expected: bool) -> None:
        """run() notices and connects again."""

    async def on_data_error(self, exception: Exception) -> None:
        """An ERROR from the server ("Server going down") or a broken socket: one line, then run() reconnects."""
        logging.warning("q9bot: %s", exception)
        await self.disconnect(expected=False)


async def run(bot: Bot, host: str, port: int, stop: Stop, jobs: Jobs) -> None:
    said = False
    while not stop:
        if not bot.connected:
            try:
                await bot.connect(host, port)
            except (TimeoutError, OSError) as error:
                if not said:
                    logging.warning("q9bot: cannot reach %s:%s yet (%s); trying again", host, port, error)
                    said = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
        await asyncio.sleep(0.2)          # mailbox.Stop sets a flag: look at it, and at the connection
    jobs.stop()
    if bot.connected:
        try:
            await asyncio.wait_for(bot.quit("stopped"), 2)
        except (TimeoutError, OSError, AttributeError):
            pass        # the server went away meanwhile (pydle then has no writer any more): nothing to QUIT


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
    logging.basicConfig(format="%(message)s", level=logging.WARNING)    # pydle's complaints too, one line each
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

    jobs = Jobs(note)
    commands = Commands(args.botmaster, args.secret, subnets, jobs, note)
    stop = Stop()
    asyncio.run(run(Bot(args.nick, args.channel, args.server, commands, args.agent), args.server, args.port,
                    stop, jobs))


if __name__ == "__main__":
    main()
