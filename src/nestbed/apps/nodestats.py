"""Node load and memory every --interval seconds, recorded in the mailbox (agent nodeStats).

    python -m nestbed.apps.nodestats [--interval 1]
"""
from __future__ import annotations

import argparse

from nestbed.apps.mailbox import Stop, record


def sample() -> dict:
    with open("/proc/loadavg") as f:
        load = f.read().split()
    memory = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("MemTotal", "MemAvailable", "MemFree"):
                memory[key] = int(value.split()[0]) * 1024
    return {"load1": float(load[0]), "load5": float(load[1]), "load15": float(load[2]),
            "mem_total": memory.get("MemTotal"), "mem_available": memory.get("MemAvailable"),
            "mem_free": memory.get("MemFree")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    stop = Stop()
    while not stop:
        record("nodeStats", sample(), kind="nodeStats")
        stop.sleep(args.interval)


if __name__ == "__main__":
    main()
