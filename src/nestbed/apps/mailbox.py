"""Reporting from inside a node: one JSON object per line appended to $NESTBED_MAILBOX/events.jsonl, which the
host agent watches and forwards (records to the store, events to scenarios). Without a mailbox the line goes to
stdout (the program's log)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.13 s of a start under emulation
if TYPE_CHECKING:
    from typing import Any


def _write(line: dict[str, Any]) -> None:
    text = json.dumps(line, separators=(",", ":")) + "\n"
    box = os.environ.get("NESTBED_MAILBOX")
    if box:
        fd = os.open(os.path.join(box, "events.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())       # one write of one short line: appends do not interleave
        finally:
            os.close(fd)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def record(agent: str, data: dict[str, Any], kind: str | None = None) -> None:
    """A record of `agent` (the scenario's name for it); `kind`: what the program is (http_client, iperf …)."""
    _write({"record": agent, "data": {**data, "time": time.time()}, "node": os.environ.get("NESTBED_NODE"),
            **({"kind": kind} if kind else {})})


def event(name: str, data: Any = None) -> None:
    _write({"event": name, "data": data, "node": os.environ.get("NESTBED_NODE")})


class Stop:
    """Turns SIGTERM/SIGINT into a flag the program's loop checks (`while not stop: …`)."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_: Any) -> None:
        self.requested = True

    def __bool__(self) -> bool:
        return self.requested

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
