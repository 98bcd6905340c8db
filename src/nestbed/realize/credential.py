"""The experiment's credential: a secret file (0600) that every agent asks of its clients.

Made once per experiment by `up`, journaled before it exists; the host agent and the VMs' agents read it.
"""
from __future__ import annotations

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
