"""Where things live on disk: one place for every path more than one layer needs.

An experiment's state is /var/lib/nestbed/NAME (or $NESTBED_STATE_DIR/NAME): plan, journal, status, lock,
logs, hosts file, the credential, the host agent's socket, log and store, the nodes' mailboxes and the VMs'
directories. Inside a node, its mailbox is MAILBOX_MOUNTPOINT and its identity files /var/emulab/boot.

Names in the host's shared kernel (namespaces under /run/netns, links in the root namespace, claims on shared
directories) begin with the object prefix, "nb" (or $NESTBED_PREFIX): with a state root and a prefix of their own,
the integration tests neither see nor touch the experiments of the machine's users. Read here only.
Imported inside VMs: only os and pathlib here.
"""
from __future__ import annotations

import os
from pathlib import Path

from nestbed.guestproto import MAILBOX_MOUNTPOINT as MAILBOX_MOUNTPOINT  # where a node sees its own mailbox

MAILBOX_ROOT = "mailbox"                        # <experiment>/mailbox/<node>/ on the host
DEFAULT_PREFIX = "nb"
_PREFIX_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_checked_prefixes: set[str] = set()


def state_root() -> Path:
    return Path(os.environ.get("NESTBED_STATE_DIR", "/var/lib/nestbed"))


def object_prefix() -> str:
    """What the names of this installation's kernel objects begin with (`nb-lab.a`, `nbctl-…`).

    At most 3 characters: link names have 15 at most, and `PREFIXk` + a 6-digit tag + `.N` must fit.
    """
    prefix = os.environ.get("NESTBED_PREFIX") or DEFAULT_PREFIX
    if prefix not in _checked_prefixes:
        if not valid_prefix(prefix):
            from nestbed.errors import PreflightError
            raise PreflightError(f"NESTBED_PREFIX={prefix!r}: want 1 to 3 lowercase letters or digits, starting "
                                 "with a letter (it begins kernel object names, which have 15 characters at most)")
        _checked_prefixes.add(prefix)
    return prefix


def valid_prefix(prefix: object) -> bool:
    return (isinstance(prefix, str) and 1 <= len(prefix) <= 3 and prefix[0].isalpha()
            and all(c in _PREFIX_CHARS for c in prefix))


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
