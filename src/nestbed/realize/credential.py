"""The experiment's credential (a secret file, 0600) and each VM's own, derived from it.

Made once per experiment by `up`, journaled before it exists; the host agent asks it of its clients on its
unix socket (root only). A VM's agent knows only its VM's credential, HMAC-SHA256(experiment secret, VM name):
it reaches the guest as a fw_cfg file (realize/vms.py), and clients prove they hold it by challenge–response
(nestbed.guestproto.answer), so a VM can neither command another VM's agent nor learn the experiment's secret.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from nestbed import paths
from nestbed.realize.state import ExperimentState


def ensure(state: ExperimentState) -> Path:
    """The experiment's credential file, made (journaled first) if it does not exist yet."""
    path = paths.credential(state.directory)
    if path.exists():
        return path
    state.journal.record([{"t": "file", "path": str(path)}])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path


def for_vm(state: ExperimentState, vm: str) -> str:
    """VM `vm`'s credential: what its guest agent asks of clients (by challenge–response)."""
    secret = paths.credential(state.directory).read_text().strip()
    return hmac.new(secret.encode(), f"nestbed-vm:{vm}".encode(), hashlib.sha256).hexdigest()


def write_for_vm(state: ExperimentState, vm: str, path: Path) -> None:
    """VM `vm`'s credential in a file of its own (0600; qemu reads it as root when it starts); the caller
    journals `path` first."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(for_vm(state, vm))
