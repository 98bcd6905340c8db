"""A small HTTP server for scenarios: GET /N answers N bytes (default --size), any other path 1000 bytes.

    python -m nestbed.apps.http_server --port 80 [--size 1000]
"""
from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = b"x" * 65536
LIMIT = 1 << 30


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_size = 1000

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0].strip("/")
        size = int(path) if path.isdigit() and int(path) <= LIMIT else self.default_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        while size > 0:
            piece = CHUNK[:min(size, len(CHUNK))]
            self.wfile.write(piece)
            size -= len(piece)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--size", type=int, default=1000)
    args = parser.parse_args()
    Handler.default_size = args.size
    server = ThreadingHTTPServer(("", args.port), Handler)
    server.daemon_threads = True
    import signal
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
