"""The host agent's socket server: the credential first, then requests {"op": …} dispatched by a table.

A handler gets the connection and the request; it returns the one-line answer, or None when it answered itself
(a stream). Ops in `takes_over` keep the connection until the client closes it (subscribe). A handler's
ExperimentError is the client's {"error"} line; a request with missing or mistyped fields gets "bad OP request";
anything else is logged in full and answered with one line, and the connection goes on.
"""
from __future__ import annotations

import hmac
import os
import socketserver
import traceback
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from nestbed.channel import Connection
from nestbed.errors import ExperimentError

Request = dict[str, Any]
Handler = Callable[[Connection, Request], "dict[str, Any] | None"]
REFUSED = {"error": "refused: wrong or missing credential"}


def table(*parts: dict[str, Handler]) -> dict[str, Handler]:
    """The ops of several parts of the agent in one table; an op that two parts serve is a mistake."""
    merged: dict[str, Handler] = {}
    for part in parts:
        for op, handler in part.items():
            if op in merged:
                raise ValueError(f"op {op!r} is served twice")
            merged[op] = handler
    return merged


class Server:
    def __init__(self, credential: str, handlers: dict[str, Handler], log: Callable[[str], None],
                 takes_over: Collection[str] = ()):
        self.credential = credential
        self.handlers = handlers
        self.log = log
        self.takes_over = frozenset(takes_over)

    def handle(self, conn: Connection) -> None:
        """One client's connection, until it closes it."""
        hello = conn.receive()
        if not hello or not hmac.compare_digest(str(hello.get("credential", "")), self.credential):
            conn.send(REFUSED)
            return
        while True:
            request = conn.receive()
            if request is None:
                return
            op = request.get("op")
            try:
                handled = self.dispatch(conn, op, request)
            except (BrokenPipeError, ConnectionResetError):
                return
            if handled and op in self.takes_over:
                return

    def dispatch(self, conn: Connection, op: Any, request: Request) -> bool:
        """Answer one request; False when it failed (answered with an error line)."""
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            conn.send({"error": f"unknown request {op!r}"})
            return False
        try:
            answer = handler(conn, request)
            if answer is not None:
                conn.send(answer)
        except ExperimentError as error:
            conn.send({"error": str(error)})
        except (KeyError, TypeError, ValueError) as error:
            conn.send({"error": f"bad {op!r} request: {error.__class__.__name__}: {error}"})
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as error:           # keep serving; the client gets one line, the log the rest
            self.log(f"{op}: {traceback.format_exc()}")
            conn.send({"error": f"{op}: {error.__class__.__name__}: {error}"})
        else:
            return True
        return False


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 128


def listen(path: Path, server: Server) -> socketserver.ThreadingUnixStreamServer:
    """A root-only (0600) unix socket at `path` serving `server`, a thread per connection; call serve_forever."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                server.handle(Connection(self.request))
            except (OSError, ValueError):      # a client that went away, or a line that is not JSON
                pass

    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        unix = _UnixServer(str(path), Handler)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return unix
