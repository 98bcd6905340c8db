"""A q9bot's authority and commands: the text of a PRIVMSG in, the reply (or None) out, the work done through an
interface (botjobs.Jobs in the bot, a fake in tests).

A command is obeyed only when it comes from the botmaster's nick, its signature verifies (ircproto), its nonce is
new, it parses, and its target is inside the experiment's subnets. Anything else is refused with the reason, in a
record, and does nothing. Text that does not start with "!" is chatter: ignored, not recorded.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

from nestbed.apps import ircproto
from nestbed.apps.ircproto import Flood, Http, Malformed, Ping, Report, Stop

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.13 s of a start under emulation
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Work(Protocol):
        """What the commands do (botjobs.Jobs in the bot, a fake in tests)."""
        def flood(self, address: str, port: int, seconds: float, rate: int) -> None: ...
        def fetch(self, address: str, url: str, count: int) -> None: ...
        def stop(self) -> None: ...
        def counts(self) -> tuple[int, int]: ...

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NOT_THE_BOTMASTER = "not the botmaster"
BAD_SIGNATURE = "bad signature"
REPLAYED = "replayed"
OUTSIDE = "target outside the experiment"
MALFORMED = "malformed"


class Refused(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def parse_subnets(text: str) -> list[Network]:
    """"10.0.1.0/24,10.0.2.0/24" -> networks; ValueError when one is not a network or there is none."""
    nets = [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]
    if not nets:
        raise ValueError("no subnet given")
    return nets


class Commands:
    def __init__(self, botmaster: str, secret: str, subnets: Sequence[Network], work: Work,
                 note: Callable[[dict[str, Any]], None], resolve: Callable[[str], str] = socket.gethostbyname):
        ircproto.check_secret(secret)
        self.botmaster = botmaster
        self.secret = secret
        self.subnets = list(subnets)
        self.work = work
        self.note = note                     # the bot's record (kind q9bot)
        self.resolve = resolve               # a name in the node's /etc/hosts -> its address
        self.seen: set[str] = set()          # nonces already obeyed (or refused after verifying)

    def handle(self, sender: str, text: str) -> str | None:
        if not text.startswith("!"):
            return None
        name = ircproto.command_name(text)
        seq: int | None = None
        try:
            signed = self._authenticate(sender, text)
            seq = signed.seq
            if signed.nonce in self.seen:
                raise Refused(REPLAYED, f"nonce {signed.nonce}")
            self.seen.add(signed.nonce)
            command = ircproto.parse_command(signed.text)
            if isinstance(command, Malformed):
                raise Refused(MALFORMED, command.why)
            if isinstance(command, Ping):
                seq = command.seq
            details, action, reply = self._prepare(command, seq)
        except Refused as refused:
            self.note({"event": "refused", "cmd": name, "from": sender, "reason": refused.reason,
                       **({"seq": seq} if seq is not None else {}),
                       **({"detail": refused.detail} if refused.detail else {})})
            return None
        self.note({"event": "cmd", "cmd": name, "seq": seq, "from": sender, **details})
        action()
        return reply()

    def _authenticate(self, sender: str, text: str) -> ircproto.Signed:
        if not ircproto.same_nick(sender, self.botmaster):
            raise Refused(NOT_THE_BOTMASTER)
        signed = ircproto.verify(self.secret, sender, text)
        if signed is None:
            raise Refused(BAD_SIGNATURE)
        return signed

    def address_inside(self, target: str) -> str:
        """The address of `target` when it is inside the experiment; else Refused."""
        try:
            address = self.resolve(target)
            ip = ipaddress.ip_address(address)
        except (OSError, ValueError, UnicodeError):
            raise Refused(OUTSIDE, f"{target} has no address here") from None
        if not any(ip in net for net in self.subnets):
            raise Refused(OUTSIDE, f"{target} is {address}")
        return address

    def _prepare(self, command: ircproto.Command, seq: int
                 ) -> tuple[dict[str, Any], Callable[[], None], Callable[[], str]]:
        """What to record, what to do, and the reply (computed after the action: a report counts up to then)."""
        nothing: Callable[[], None] = lambda: None          # noqa: E731
        ok: Callable[[], str] = lambda: ircproto.ok(seq)     # noqa: E731
        if isinstance(command, Ping):
            return {}, nothing, lambda: ircproto.pong(seq)
        if isinstance(command, Flood):
            address = self.address_inside(command.target)
            flood = command
            return ({"target": flood.target, "address": address, "port": flood.port, "seconds": flood.seconds,
                     "rate": flood.rate},
                    lambda: self.work.flood(address, flood.port, flood.seconds, flood.rate), ok)
        if isinstance(command, Http):
            from urllib.parse import urlsplit  # only bots told to fetch pay for it
            host = urlsplit(command.url).hostname or ""
            address = self.address_inside(host)
            fetch = command
            return ({"url": fetch.url, "address": address, "count": fetch.times},
                    lambda: self.work.fetch(address, fetch.url, fetch.times), ok)
        if isinstance(command, Stop):
            return {}, self.work.stop, ok
        assert isinstance(command, Report)

        def report() -> str:
            packets, sent_bytes = self.work.counts()
            self.note({"event": "report", "seq": seq, "packets": packets, "bytes": sent_bytes})
            return ircproto.reported(seq, packets, sent_bytes)
        return {}, nothing, report
