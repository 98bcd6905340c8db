"""A bare, blocking IRC client connection (q9bot, botmaster, `ircd linked`): connect, register,
send lines, read parsed lines (PINGs answered on the way). A bot or a one-shot program does one thing at a time
on IRC, so a plain socket does; it spares asyncio's imports and per-message cost (seconds in a TCG guest).
"""
from __future__ import annotations

import socket
import time

from nestbed.apps.ircproto import Line, format_line, parse_line

NICK_IN_USE = {"433", "436"}


class IrcError(Exception):
    pass


class Connection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.nick = ""
        self._buffer = b""

    @classmethod
    def open(cls, host: str, port: int, nick: str, timeout: float) -> Connection:
        """Connected and registered as `nick` (end of MOTD seen). A nick in use is asked again until `timeout`
        (a previous one-shot's QUIT may still be on its way through the server link)."""
        deadline = time.monotonic() + timeout
        conn = cls(socket.create_connection((host, port), timeout))
        try:
            conn.send("NICK", nick)
            conn.send("USER", nick[:10], "0", "*", nick)
            while True:
                line = conn.read(deadline - time.monotonic())
                if line.command in NICK_IN_USE:
                    if time.monotonic() + 0.5 > deadline:
                        raise IrcError(f"nick {nick} stays in use")
                    time.sleep(0.5)
                    conn.send("NICK", nick)
                elif line.command == "001":
                    conn.nick = line.params[0] if line.params else nick
                elif line.command in ("376", "422"):          # end of MOTD, or none: registered
                    return conn
                elif line.command == "ERROR":
                    raise IrcError(f"the server closed the connection: {' '.join(line.params)}")
        except BaseException:
            conn.sock.close()
            raise

    def send(self, command: str, *params: str) -> None:
        self.sock.sendall(format_line(command, *params).encode())

    def _ack_quickly(self) -> None:
        """ngircd leaves Nagle on: while our delayed ACK (40 ms) is pending it holds the next replies back. Quick
        ACKs let a burst of bot replies through as they come (Linux leaves the mode by itself: set it each read)."""
        if hasattr(socket, "TCP_QUICKACK"):
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                pass

    def buffered(self) -> bool:
        """A whole line has been received and not read yet (select() on the socket would not say so)."""
        return b"\n" in self._buffer

    def fill(self) -> None:
        """Take what the socket has now into the buffer (call when select() says it is readable)."""
        self._ack_quickly()
        try:
            data = self.sock.recv(16384, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not data:
            raise IrcError("the server closed the connection")
        self._buffer += data

    def read(self, timeout: float) -> Line:
        """The next line other than PING; TimeoutError after `timeout`, IrcError when the server hung up."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no line from the server in time")
                self.sock.settimeout(left)
                self._ack_quickly()
                data = self.sock.recv(16384)
                if not data:
                    raise IrcError("the server closed the connection")
                self._buffer += data
            raw, _, self._buffer = self._buffer.partition(b"\n")
            try:
                line = parse_line(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            if line.command == "PING":
                self.send("PONG", *line.params)
                continue
            return line

    def close(self, message: str = "done") -> None:
        try:
            self.sock.settimeout(2)
            self.send("QUIT", message)
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(16384):          # until the server closes: the QUIT has been read
                pass
        except OSError:
            pass
        finally:
            self.sock.close()
