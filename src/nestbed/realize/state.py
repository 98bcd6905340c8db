"""Where an experiment lives on this host: /var/lib/nestbed/NAME (plan, journal, logs, hosts file, lock).

Private to root: the state root is 0711 (others may pass through, not list it) and each experiment's directory
0700, so no other local user reaches its credential, store, logs or mailboxes; its files are 0600 besides. Nodes
need no more: process nodes' programs run as root and see their hosts file, identity files and mailbox through
bind mounts (which do not pass through these directories), VMs read theirs through qemu, which runs as root.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.errors import ExperimentError
from nestbed.paths import experiment_dir, state_root
from nestbed.plan.hostplan import HostPlan
from nestbed.realize.journal import Journal

ROOT_MODE = 0o711           # the state root: others may pass through, not list experiments
DIRECTORY_MODE = 0o700      # an experiment's directory, and every directory in it
FILE_MODE = 0o600           # an experiment's files (but the hosts file, which nodes read through a bind mount)


@dataclass
class ExperimentState:
    name: str
    directory: Path

    @property
    def journal(self) -> Journal:
        return Journal(self.directory / "journal.jsonl")

    @property
    def plan_path(self) -> Path:
        return self.directory / "plan.json"

    @property
    def hosts_path(self) -> Path:
        return self.directory / "hosts"

    @property
    def log_dir(self) -> Path:
        return self.directory / "logs"

    def create(self) -> None:
        """Make the experiment's directory, private (FileExistsError if it exists), with its journal, plan and
        status private from the start (rewriting a file keeps its mode)."""
        make_root()
        self.directory.mkdir(mode=DIRECTORY_MODE)
        self.make_private()

    def make_private(self) -> None:
        """The directory 0700 and its journal, plan and status 0600 before anything is written to them."""
        os.chmod(self.directory, DIRECTORY_MODE)         # mkdir's mode passes through the umask
        for path in (self.journal.path, self.plan_path, self.directory / "status.json"):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))

    def load_plan(self) -> HostPlan | None:
        try:
            return HostPlan.from_json(self.plan_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.directory / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"state": "unknown"}

    def set_status(self, state: str, **extra: Any) -> None:
        data = {**self.status(), "state": state, "pid": os.getpid(), "updated": time.time(), **extra}
        tmp = self.directory / "status.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(data))
        tmp.replace(self.directory / "status.json")

    def lock(self, blocking: bool = False) -> int | None:
        """An exclusive lock held while `up`, `down` or `cleanup` works on the experiment (None if busy)."""
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def is_busy(self) -> bool:
        fd = self.lock()
        if fd is None:
            return True
        os.close(fd)
        return False


def make_root() -> None:
    """The state root, made 0711 when missing; one nestbed made before was 0755: tightened (never widened)."""
    root = state_root()
    root.mkdir(mode=ROOT_MODE, parents=True, exist_ok=True)
    mode = root.stat()
    if mode.st_uid == os.geteuid() and mode.st_mode & 0o066:
        os.chmod(root, mode.st_mode & 0o7711)


def experiment(name: str) -> ExperimentState:
    return ExperimentState(name, experiment_dir(name))


def all_experiments() -> list[ExperimentState]:
    root = state_root()
    if not root.is_dir():
        return []
    return [ExperimentState(d.name, d) for d in sorted(root.iterdir()) if (d / "journal.jsonl").exists()
            or (d / "status.json").exists()]


def require(name: str) -> ExperimentState:
    state = experiment(name)
    if not state.directory.is_dir():
        known = ", ".join(e.name for e in all_experiments()) or "none"
        raise ExperimentError(f"no experiment named {name!r} on this host (running: {known})")
    return state
