"""The underlay's path MTU from this host to a peer: the largest IPv4 packet with DF set that reaches it
(the remote agent's `probe_mtu` op, run in the host's own namespace, where the underlay is).

ICMP echo requests of chosen sizes go out on a raw socket with IP_PMTUDISC_DO (never fragmented here; a size
above what the route allows fails at once with EMSGSIZE); a size counts when its echo reply comes back. The
search (`search`, pure) starts at the route's MTU, which one round confirms in the common case; when that size
is lost on the way (a smaller MTU further on, dropped silently as a bridge does), rounds of `WIDTH` sizes at once
narrow the interval between the largest size answered and the smallest one not. Each size goes out twice, so one
lost packet does not lower the result. Time is bounded: a round waits a few round trips (the first, up to
`FIRST_WAIT`), the whole probe at most `seconds`.
"""
from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14     # linux/in.h
ICMP_ECHO_REPLY, ICMP_UNREACHABLE, ICMP_ECHO = 0, 3, 8
HEADERS = 20 + 8            # an IPv4 header without options and the ICMP echo header: size = payload + 28
MIN_SIZE = 68               # the smallest MTU IPv4 allows
MAX_SIZE = 65535
WIDTH = 16                  # sizes per round
COPIES = 2                  # of each size
FIRST_WAIT = 1.0            # s: the first round, before any round trip is known
SETTLE = 0.1                # s: the least a round waits for its replies
SECONDS = 5.0               # the whole probe at most
RECEIVE_BUFFER = 16 << 20
SO_RCVBUFFORCE = 33

_ECHO = struct.Struct("!BBHHH")          # type, code, checksum, identifier, sequence
_PATTERN = bytes(range(256)) * (MAX_SIZE // 256 + 1)     # echo payloads: a prefix of it
_idents = itertools.count(1)
_idents_lock = threading.Lock()


@dataclass
class Found:
    mtu: int | None             # the largest size answered (None: none was)
    exact: bool                 # False: time ran out before the interval closed (mtu is a lower bound)
    rounds: int


def search(answered: Callable[[list[int]], set[int]], high: int, low: int = MIN_SIZE, width: int = WIDTH,
           time_left: Callable[[], bool] = lambda: True) -> Found:
    """The largest size in [low, high] that reaches, given `answered(sizes)` → the sizes that did. The first round
    asks `high` (the route's MTU: usually the answer), `low` (is the peer there at all?) and sizes between."""
    sizes = sorted({high, low, *_between(low, high, width - 2)})
    got = answered(sizes)
    rounds = 1
    if not got:
        return Found(None, True, rounds)
    best = max(got)
    failed = min((s for s in sizes if s > best), default=high + 1)
    while failed - best > 1:
        if not time_left():
            return Found(best, False, rounds)
        sizes = _between(best, failed, width)
        got = answered(sizes)
        rounds += 1
        if got:
            best = max(best, max(got))
        failed = min((s for s in sizes if s > best), default=failed)
    return Found(best, True, rounds)


def _between(low: int, high: int, count: int) -> list[int]:
    """Up to `count` sizes strictly between low and high, evenly spread."""
    inside = high - low - 1
    if inside <= 0 or count <= 0:
        return []
    if inside <= count:
        return list(range(low + 1, high))
    return sorted({low + (high - low) * i // (count + 1) for i in range(1, count + 1)} - {low, high})


def probe(peer: str, seconds: float = SECONDS) -> dict[str, object]:
    """The `probe_mtu` answer: {"peer", "mtu" (None: no answer at any size), "route_mtu", "exact", "rounds",
    "rtt", "seconds", "why" (when mtu is None)}."""
    started = time.monotonic()
    try:
        high = route_mtu(peer)
    except OSError as error:
        return {"peer": peer, "mtu": None, "why": f"no route to {peer}: {error.strerror or error}"}
    try:
        prober = EchoProber(peer, deadline=started + seconds)
    except PermissionError:
        return {"peer": peer, "mtu": None, "why": "probing needs root here (a raw ICMP socket)"}
    try:
        found = search(prober.answered, min(high, MAX_SIZE), time_left=prober.time_left)
    except OSError as error:
        return {"peer": peer, "mtu": None, "why": f"cannot probe {peer}: {error.strerror or error}"}
    finally:
        prober.close()
    answer: dict[str, object] = {"peer": peer, "mtu": found.mtu, "route_mtu": high, "exact": found.exact,
                                 "rounds": found.rounds, "rtt": prober.rtt,
                                 "seconds": round(time.monotonic() - started, 3)}
    if found.mtu is None:
        answer["why"] = (f"no echo reply from {peer} at any size in {prober.waited:.1f} s "
                         f"(is it on the underlay? ICMP filtered?)")
    return answer


def route_mtu(peer: str) -> int:
    """The MTU the kernel's route to the peer allows (its interface's, or a path MTU it learnt): a connected UDP
    socket's IP_MTU (connecting sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((peer, 9))
        return int(sock.getsockopt(socket.IPPROTO_IP, IP_MTU))


class EchoProber:
    """Echo requests to one peer on a raw ICMP socket of our own: every raw ICMP socket of the namespace sees
    every ICMP packet, so replies are told apart by our identifier and the peer's address."""

    def __init__(self, peer: str, deadline: float):
        self.peer, self.deadline = peer, deadline
        with _idents_lock:
            self.ident = (os.getpid() * 131 + next(_idents)) & 0xFFFF
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        try:        # room for a round of replies of up to 64 KiB each (and the other probes' in the namespace)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.connect((peer, 0))
        self.sequence = 0
        self.rtt: float | None = None
        self.waited = 0.0

    def close(self) -> None:
        self.sock.close()

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    def answered(self, sizes: list[int]) -> set[int]:
        """Send each size COPIES times, then collect replies until every size has one (or an unreachable), or
        the round's wait is over."""
        size_of: dict[int, int] = {}
        sent_at = time.monotonic()
        for size in sizes:
            for _ in range(COPIES):
                self.sequence = (self.sequence + 1) & 0xFFFF
                try:
                    self.sock.send(echo_request(self.ident, self.sequence, size - HEADERS))
                except OSError as error:
                    if error.errno == errno.EMSGSIZE:       # above what the route allows here: not sent
                        break
                    raise
                size_of[self.sequence] = size
        pending = set(size_of.values())
        got: set[int] = set()
        wait = FIRST_WAIT if self.rtt is None else max(SETTLE, 4 * self.rtt)
        until = min(sent_at + wait, max(self.deadline, sent_at + SETTLE))
        while pending:
            left = until - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                break
            data = self.sock.recv(MAX_SIZE + 100)
            kind, sequence = reply_of(data, self.ident, self.peer)
            answered = size_of.get(sequence) if sequence is not None else None
            if answered is None:
                continue
            if kind == ICMP_ECHO_REPLY:
                got.add(answered)
                if self.rtt is None:
                    self.rtt = time.monotonic() - sent_at
                    until = min(until, sent_at + max(SETTLE, 4 * self.rtt))
            pending.discard(answered)          # a reply, or an unreachable saying it will not come
        self.waited += time.monotonic() - sent_at
        return got


def echo_request(ident: int, sequence: int, payload: int) -> bytes:
    data = _PATTERN[:max(0, payload)]
    header = _ECHO.pack(ICMP_ECHO, 0, 0, ident, sequence)
    return _ECHO.pack(ICMP_ECHO, 0, checksum(header + data), ident, sequence) + data


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def reply_of(packet: bytes, ident: int, peer: str) -> tuple[int | None, int | None]:
    """(ICMP type, sequence) of a packet the raw socket read (IP header first) when it answers one of our echo
    requests to `peer`: its echo reply, or an unreachable quoting our request. (None, None) otherwise."""
    if len(packet) < 20:
        return None, None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return None, None
    kind = packet[ihl]
    if kind == ICMP_ECHO_REPLY:
        if socket.inet_ntoa(packet[12:16]) != peer:
            return None, None
        _, _, _, their_ident, sequence = _ECHO.unpack_from(packet, ihl)
        return (kind, sequence) if their_ident == ident else (None, None)
    if kind == ICMP_UNREACHABLE:        # it quotes our request's IP header and its first 8 bytes
        quoted = packet[ihl + 8:]
        if len(quoted) < 28 or socket.inet_ntoa(quoted[16:20]) != peer:
            return None, None
        inner = (quoted[0] & 0x0F) * 4
        if len(quoted) < inner + 8 or quoted[inner] != ICMP_ECHO:
            return None, None
        _, _, _, their_ident, sequence = _ECHO.unpack_from(quoted, inner)
        return (kind, sequence) if their_ident == ident else (None, None)
    return None, None
