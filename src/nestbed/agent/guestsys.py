"""What both agents of a VM (the boot agent and the full guest agent) need of the guest system, in built-ins only.

agent/guestboot.py loads this first in every VM, under software emulation, where each import costs: keep it to
os, sys and time. (The full agent, agent/guest.py, imports it too, rather than reaching back into the boot agent
that imports it.)
"""
from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.guestproto import MAILBOX_MOUNTPOINT


def node_environment(experiment: str, node: str) -> dict[str, str]:
    """The environment of programs run in a node of this VM (start commands, exec, shell)."""
    return {**os.environ, "NESTBED_EXPERIMENT": experiment, "NESTBED_NODE": node,
            # nestbed's own bin first: nestbed-event, as on the host
            "NESTBED_MAILBOX": MAILBOX_MOUNTPOINT, "HOME": "/root",
            "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def nics_by_mac() -> dict[str, int]:
    """MAC → ifindex of this namespace's links (read from /sys: no netlink dump needed)."""
    found = {}
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/address") as mac, open(f"/sys/class/net/{name}/ifindex") as index:
                found[mac.read().strip()] = int(index.read())
        except (OSError, ValueError):
            pass
    return found


def follow(changed: Any, items: list[Any], since: int, send: Any) -> None:
    """send(item) for items[since:] and then for each item appended later (under the `changed` condition),
    until send fails (the other side went away)."""
    sent = since
    while True:
        with changed:
            while len(items) <= sent:
                changed.wait()
            pending = items[sent:]
        for item in pending:
            send(item)
        sent += len(pending)


def power_off() -> None:
    """End the VM: stage 2 of the guest's init powers off when its command (this agent) exits 0; as PID 1
    (no stage 2 above us) busybox does it."""
    time.sleep(0.2)
    os.sync()
    if os.getpid() == 1 or os.getppid() == 0:
        os.execv("/.nestbed/busybox", ["poweroff", "-f"])
    os._exit(0)
