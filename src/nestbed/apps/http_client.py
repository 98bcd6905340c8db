"""HTTP traffic for scenarios: every --interval seconds, fetch a size drawn from --sizes from the next server and
record the transfer (bytes, seconds, status) in the mailbox as agent --agent.

    python -m nestbed.apps.http_client --servers b,c --sizes 'minmax(1000,10000)' --interval 1 [--port 80]

Sizes: N, 'a,b,c' (cycled) or 'minmax(a,b)' (uniform). A failed transfer is recorded with status 0 and error.
"""
from __future__ import annotations

import argparse
import http.client
import random
import re
import time
from collections.abc import Callable

from nestbed.apps.mailbox import Stop, record


def size_picker(spec: str) -> Callable[[int], int]:
    match = re.fullmatch(r"\s*minmax\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*", spec)
    if match:
        low, high = sorted((int(match.group(1)), int(match.group(2))))
        return lambda i: random.randint(low, high)
    sizes = [int(s) for s in re.split(r"[,\s]+", spec.strip("[] ")) if s]
    return lambda i: sizes[i % len(sizes)]


def fetch(server: str, port: int, size: int, timeout: float) -> dict:
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection(server, port, timeout=timeout)
        conn.request("GET", f"/{size}")
        response = conn.getresponse()
        received = 0
        while chunk := response.read(65536):
            received += len(chunk)
        conn.close()
        return {"server": server, "size": size, "bytes": received, "seconds": time.monotonic() - started,
                "status": response.status}
    except OSError as error:
        return {"server": server, "size": size, "bytes": 0, "seconds": time.monotonic() - started, "status": 0,
                "error": str(error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", required=True)
    parser.add_argument("--sizes", default="1000")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--count", type=int, default=0, help="stop after this many transfers (0: until stopped)")
    parser.add_argument("--agent", default="http_client")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    pick = size_picker(args.sizes)
    stop = Stop()
    i = 0
    while not stop and (args.count == 0 or i < args.count):
        began = time.monotonic()
        record(args.agent, fetch(servers[i % len(servers)], args.port, pick(i), args.timeout), kind="http_client")
        i += 1
        stop.sleep(args.interval - (time.monotonic() - began))


if __name__ == "__main__":
    main()
