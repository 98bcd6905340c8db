"""A bare asyncio IRC client connection for the one-shot programs (botmaster, `ircd linked`): connect, register,
send lines, read parsed lines (PINGs answered on the way). Standard library only: a one-shot program in a TCG
guest should not pay for pydle's imports on every command.
"""
from __future__ import annotations

import asyncio
import socket
import time

from nestbed.apps.ircproto import Line, format_line, parse_line

NICK_IN_USE = {"433", "436"}


class IrcError(Exception):
    pass


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.nick = ""
        self._socket = writer.get_extra_info("socket")

    def _ack_quickly(self) -> None:
        """ngircd leaves Nagle on: while our delayed ACK (40 ms) is pending, it holds the next replies back. Quick
        ACKs let a burst of bot replies through as they come (Linux resets the mode: set it after every read)."""
        if self._socket is not None and hasattr(socket, "TCP_QUICKACK"):
            try:
                self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                pass

    @classmethod
    async def open(cls, host: str, port: int, nick: str, timeout: float) -> Connection:
        """Connected and registered as `nick` (end of MOTD seen). A nick in use is asked again until `timeout`
        (a previous one-shot's QUIT may still be on its way through the server link)."""
        deadline = time.monotonic() + timeout
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        conn = cls(reader, writer)
        try:
            await conn.send("NICK", nick)
            await conn.send("USER", nick[:10], "0", "*", nick)
            while True:
                line = await conn.read(deadline - time.monotonic())
                if line.command in NICK_IN_USE:
                    if time.monotonic() + 0.5 > deadline:
                        raise IrcError(f"nick {nick} stays in use")
                    await asyncio.sleep(0.5)
                    await conn.send("NICK", nick)
                elif line.command == "001":
                    conn.nick = line.params[0] if line.params else nick
                elif line.command in ("376", "422"):          # end of MOTD, or none: registered
                    return conn
                elif line.command == "ERROR":
                    raise IrcError(f"the server closed the connection: {' '.join(line.params)}")
        except BaseException:
            conn.writer.close()
            raise

    async def send(self, command: str, *params: str) -> None:
        self.writer.write(format_line(command, *params).encode())
        await self.writer.drain()

    async def read(self, timeout: float) -> Line:
        """The next line other than PING; asyncio.TimeoutError after `timeout`, IrcError when the server hung up."""
        while True:
            self._ack_quickly()
            raw = await asyncio.wait_for(self.reader.readline(), max(timeout, 0.0))
            if not raw:
                raise IrcError("the server closed the connection")
            try:
                line = parse_line(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            if line.command == "PING":
                await self.send("PONG", *line.params)
                continue
            return line

    async def close(self, message: str = "done") -> None:
        try:
            await self.send("QUIT", message)
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (TimeoutError, OSError):
            pass
