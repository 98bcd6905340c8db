"""Where things live on disk: one place for every path more than one layer needs.

An experiment's state is /var/lib/nestbed/NAME (or $NESTBED_STATE_DIR/NAME): plan, journal, status, lock,
logs, hosts file, the credential, the host agent's socket, log and store, the nodes' mailboxes and the VMs'
directories. Inside a node, its mailbox is MAILBOX_MOUNTPOINT and its identity files /var/emulab/boot.
Imported inside VMs: only os and pathlib here.
"""
from __future__ import annotations

import os
from pathlib import Path

from nestbed.guestproto import MAILBOX_MOUNTPOINT as MAILBOX_MOUNTPOINT  # where a node sees its own mailbox

MAILBOX_ROOT = "mailbox"                        # <experiment>/mailbox/<node>/ on the host


def state_root() -> Path:
    return Path(os.environ.get("NESTBED_STATE_DIR", "/var/lib/nestbed"))


def experiment_dir(name: str) -> Path:
    return state_root() / name


def credential(directory: Path) -> Path:
    """The experiment's secret (0600): every agent refuses a client that does not present it."""
    return directory / "credential"


def agent_socket(directory: Path) -> Path:
    return directory / "agent.sock"


def agent_log(directory: Path) -> Path:
    return directory / "logs" / "agent.log"


def store(directory: Path) -> Path:
    """The SQLite store of records, events and counters."""
    return directory / "control.sqlite"


def mailbox_root(directory: Path | str) -> Path:
    return Path(directory) / MAILBOX_ROOT


def mailbox_dir(directory: Path | str, node: str) -> Path:
    return Path(directory) / MAILBOX_ROOT / node


def vm_dir(directory: Path, vm: str) -> Path:
    return directory / "vms" / vm
