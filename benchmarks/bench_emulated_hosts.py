"""20 emulated hosts, each with its own sshd: up, connected over SSH and every agent's hello, in N s (goal ≤ 3 s).

    sudo .venv/bin/python benchmarks/bench_emulated_hosts.py              # 20 hosts
    sudo .venv/bin/python benchmarks/bench_emulated_hosts.py --hosts 5    # quick try

Runs under a state root and object prefix of its own (a temporary directory, NESTBED_PREFIX=nx unless set), so it
touches nothing of the machine's experiments; everything is removed at the end, also on failure. Prints the
phases (namespaces/links/keys/sshd until every sshd listens; SSH connect + agent start + hello on all hosts at
once), the SSH connections and session channels per host (exactly one each), and the teardown. Exit code 1 when
the goal is missed or a host failed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

GOAL_SECONDS = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (network namespaces)", file=sys.stderr)
        return 2
    top = tempfile.mkdtemp(prefix="nestbed-bench-emulated.")
    os.environ.setdefault("NESTBED_STATE_DIR", os.path.join(top, "state"))
    os.environ.setdefault("NESTBED_PREFIX", "nx")

    from nestbed.cluster import emulated
    from nestbed.cluster.ssh import connect_all
    from nestbed.errors import NestbedError
    from nestbed.realize import namespaces

    name = f"bench{uuid.uuid4().hex[:4]}"
    ok = True
    hosts = []
    try:
        started = time.monotonic()
        cluster = emulated.up(name, args.hosts)
        up = time.monotonic() - started
        hosts = cluster.transports()
        connect_started = time.monotonic()
        connect_all(hosts)
        connected = time.monotonic() - connect_started
        total = time.monotonic() - started
        sessions = [h.sessions() for h in hosts]
        connections = []
        for emu in cluster.hosts:
            out = subprocess.run(["nsenter", f"--net={namespaces.netns_path(emu.netns)}", "ss", "-Htn", "state",
                                  "established", "( sport = :22 )"], capture_output=True, text=True).stdout
            connections.append(len([line for line in out.splitlines() if line.strip()]))
        hellos = sum(1 for h in hosts if h.hello is not None)
        print(f"{args.hosts} emulated hosts up, connected and every agent's hello in {total:.2f} s "
              f"(goal ≤ {GOAL_SECONDS:g} s): {'met' if total <= GOAL_SECONDS else 'MISSED'}")
        print(f"  up (namespaces, underlay, keys, every sshd listening): {up:.2f} s")
        print(f"  SSH connect + agent start + hello, all hosts at once:  {connected:.2f} s ({hellos} hellos)")
        print(f"  SSH connections per host: {sorted(set(connections))}; session channels per host: "
              f"{sorted(set(sessions))}")
        ok = total <= GOAL_SECONDS and hellos == args.hosts and set(connections) == {1} and set(sessions) == {1}
    except NestbedError as error:
        print(f"failed: {error}", file=sys.stderr)
        ok = False
    finally:
        for host in hosts:
            host.close()
        down_started = time.monotonic()
        report = emulated.down(name)
        if report is not None:
            print(f"  down: {time.monotonic() - down_started:.2f} s ({report.namespaces} namespaces, "
                  f"{report.processes} processes{', LEFT: ' + '; '.join(report.left) if report.left else ''})")
            ok = ok and not report.left
        try:
            os.rmdir(os.environ["NESTBED_STATE_DIR"])
            os.rmdir(top)
        except OSError:
            pass
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
