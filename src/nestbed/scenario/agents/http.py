"""http_server / apache (startServer, stopServer) and http_client (startClient, stopClient)."""
from __future__ import annotations

import sys
from typing import Any

from nestbed.scenario.agents.base import AgentError, BuiltinAgent, app_argv

# Waits (≤ 3 s) until the server accepts connections, so `trigger: serverStarted` means it does.
WAIT_LISTENING = ("import socket,sys,time\nend=time.time()+3\nwhile True:\n try:\n"
                  "  socket.create_connection(('127.0.0.1',int(sys.argv[1])),0.2).close();break\n"
                  " except OSError:\n  time.sleep(0.02)\n  if time.time()>end:sys.exit(1)\n")


def _sizes(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return str(value)


class HttpServer(BuiltinAgent):
    """startServer(port=80, size=1000): a small HTTP server on every node (GET /N answers N bytes)."""
    methods = ("startServer", "stopServer", "setConfiguration")
    kind = "http_server"

    def startServer(self, port: int | None = None, size: int | None = None) -> dict[str, Any]:
        port = int(port or self.config.get("port", 80))
        size = int(size or self.config.get("size", 1000))
        self.spawn_all("server", lambda node: app_argv("http_server", "--port", port, "--size", size))
        results = self.run_all(lambda node: [sys.executable, "-I", "-S", "-c", WAIT_LISTENING, str(port)], 10)
        return {node: code == 0 for node, (code, _, _) in results.items()}

    def stopServer(self) -> dict[str, Any]:
        return self.stop_all("server")


class HttpClient(BuiltinAgent):
    """startClient(): fetch `sizes` bytes from `servers` every `interval` s; each transfer is a record
    (agent http_client: server, size, bytes, seconds, status)."""
    methods = ("startClient", "stopClient", "setConfiguration")
    kind = "http_client"

    def startClient(self, servers: Any = None, sizes: Any = None, interval: Any = None, port: Any = None,
                    count: Any = None) -> dict[str, Any]:
        servers = servers if servers is not None else self.config.get("servers")
        if isinstance(servers, str):
            servers = [servers]
        if not servers or not isinstance(servers, list):
            raise AgentError(f"agent {self.name!r} (http_client) has no servers; give execargs "
                             f"{{servers: [b], sizes: 1000, interval: 1}}")
        try:
            interval = float(interval if interval is not None else self.config.get("interval", 1))
        except (TypeError, ValueError):
            raise AgentError(f"agent {self.name!r}: interval {interval!r} is not a number of seconds") from None
        sizes = _sizes(sizes if sizes is not None else self.config.get("sizes", 1000))
        argv = app_argv("http_client", "--servers", ",".join(str(s) for s in servers), "--sizes", sizes,
                        "--interval", interval, "--port", int(port or self.config.get("port", 80)),
                        "--count", int(count or self.config.get("count", 0)), "--agent", self.name)
        return self.spawn_all("client", lambda node: argv)

    def stopClient(self) -> dict[str, Any]:
        return self.stop_all("client")
