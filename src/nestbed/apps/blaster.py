"""A TCP throughput tester (nestbed's iperf): a server that discards, a client that sends as fast as it can and
records bits per second each --report seconds and at the end.

    python -m nestbed.apps.blaster server [--port 5201]
    python -m nestbed.apps.blaster client SERVER [--port 5201] [--duration 10] [--agent iperf]
"""
from __future__ import annotations

import argparse
import socket
import threading
import time

from nestbed.apps.mailbox import Stop, record


def serve(port: int) -> None:
    listener = socket.create_server(("", port), reuse_port=True)
    listener.settimeout(0.2)
    stop = Stop()

    def drain(conn: socket.socket) -> None:
        with conn:
            while conn.recv(1 << 16):
                pass

    while not stop:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


def blast(server: str, port: int, duration: float, report: float, agent: str) -> None:
    stop = Stop()
    data = b"\0" * (1 << 16)
    conn = socket.create_connection((server, port), timeout=10)
    started = mark = time.monotonic()
    total = interval_bytes = 0
    while not stop and (duration <= 0 or time.monotonic() - started < duration):
        sent = conn.send(data)
        total += sent
        interval_bytes += sent
        now = time.monotonic()
        if now - mark >= report:
            record(agent, {"server": server, "bytes": interval_bytes, "seconds": now - mark,
                           "bits_per_second": interval_bytes * 8 / (now - mark), "interval": True}, kind="iperf")
            mark, interval_bytes = now, 0
    seconds = time.monotonic() - started
    conn.close()
    record(agent, {"server": server, "bytes": total, "seconds": seconds,
                   "bits_per_second": total * 8 / seconds if seconds else 0.0, "interval": False}, kind="iperf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("server", "client"))
    parser.add_argument("server", nargs="?")
    parser.add_argument("--port", type=int, default=5201)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--report", type=float, default=1.0)
    parser.add_argument("--agent", default="iperf")
    args = parser.parse_args()
    if args.mode == "server":
        serve(args.port)
    else:
        if not args.server:
            parser.error("client needs a SERVER")
        blast(args.server, args.port, args.duration, args.report, args.agent)


if __name__ == "__main__":
    main()
