"""Where an experiment lives on this host: /var/lib/nestbed/NAME (plan, journal, logs, hosts file, lock)."""
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
        tmp.write_text(json.dumps(data))
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
