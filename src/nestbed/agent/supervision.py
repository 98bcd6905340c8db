"""The host agent seen from the controller: its files, starting and stopping it, its status, a connection to it.

`nestbed up` makes the experiment's credential and starts the agent (`python -m nestbed.agent.host EXPERIMENT`,
agent/host.py) journaled before it runs; teardown stops it first. Clients (hostclient.py) connect with
HostAgentConnection: the first line carries the credential.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nestbed import paths, procs
from nestbed.channel import Connection
from nestbed.errors import ExperimentError
from nestbed.realize import credential
from nestbed.realize.state import DIRECTORY_MODE, FILE_MODE, ExperimentState

READY_SECONDS = 15.0
STOP_GRACE = 1.0


def socket_path(state: ExperimentState) -> Path:
    return paths.agent_socket(state.directory)


def log_path(state: ExperimentState) -> Path:
    return paths.agent_log(state.directory)


class SpawnedAgent:
    """A host agent process that has imported its code and waits for "go" (see spawn_agent)."""

    def __init__(self, state: ExperimentState, child: subprocess.Popen[bytes]) -> None:
        self.state, self.child = state, child

    def start(self) -> int:
        """Tell it to go (the experiment is realized) and wait until it answers; returns its pid."""
        state, child = self.state, self.child
        assert child.stdin is not None
        try:
            child.stdin.write(b"go\n")
            child.stdin.close()
        except BrokenPipeError:
            pass                # it died already: said below, with its log's last line
        deadline = time.monotonic() + READY_SECONDS
        path = socket_path(state)
        while True:
            if child.poll() is not None:
                raise ExperimentError(f"the host agent of {state.name} exited at start ({child.returncode}): "
                                      f"{_last_line(log_path(state))} (see {log_path(state)})")
            if path.exists():
                try:
                    HostAgentConnection(state).request("ping", timeout=2.0)
                    return child.pid
                except (OSError, ExperimentError):
                    pass
            if time.monotonic() > deadline:
                raise ExperimentError(f"the host agent of {state.name} did not answer within "
                                      f"{READY_SECONDS:.0f} s (see {log_path(state)})")
            time.sleep(0.005)       # `up` waits for this: a poll costs ~0.1 ms


def spawn_agent(state: ExperimentState) -> SpawnedAgent:
    """Run the host agent's process, journaled, waiting for "go" on stdin. `up` spawns it before it realizes
    the experiment, so the interpreter's start, the agent's imports (~0.1 s) and its launcher's start overlap
    the kernel's work; the agent touches nothing the realization makes until `start()`. Teardown stops it from
    the journal; if `up` dies without one, the agent reads EOF instead of "go" and exits."""
    credential.ensure(state)
    state.journal.record([{"t": "dir", "path": str(state.log_dir)}])
    state.log_dir.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
    os.chmod(state.log_dir, DIRECTORY_MODE)           # with the umask's mode if it was there already
    store = paths.store(state.directory)
    files = [socket_path(state), log_path(state)] + [Path(f"{store}{s}") for s in ("", "-wal", "-shm")]
    state.journal.record([{"t": "file", "path": str(f)} for f in files])
    log = os.fdopen(os.open(log_path(state), os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE), "ab")
    env = {**os.environ, "NESTBED_STATE_DIR": str(state.directory.parent), "PYTHONUNBUFFERED": "1"}
    try:
        child = subprocess.Popen([sys.executable, "-m", "nestbed.agent.host", state.name], stdin=subprocess.PIPE,
                                 stdout=log, stderr=log, cwd="/", env=env, start_new_session=True)
    finally:
        log.close()
    # Its pid is journaled before it does anything: it waits for this line (and exits on EOF).
    state.journal.record([{"t": "pid", "pid": child.pid, "start": procs.start_time(child.pid),
                           "role": "agent"}])
    assert child.stdin is not None
    try:
        child.stdin.write(b"journaled\n")
        child.stdin.flush()
    except BrokenPipeError:
        pass                    # it died already: start() says so, with its log's last line
    return SpawnedAgent(state, child)


def agent_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("t") == "pid" and e.get("role") in ("agent", "launcher")]


def stop_agent(entries: list[dict[str, Any]]) -> int:
    """Teardown, first thing: SIGTERM the agent (and its launcher), SIGKILL after a moment. Returns how many ran."""
    pids = [e["pid"] for e in agent_entries(entries)
            if procs.is_same(e["pid"], e.get("start"))]
    pids = [pid for pid in pids if pid != os.getpid()]
    if pids:
        procs.kill_all(pids, grace=STOP_GRACE)
    return len(pids)


def agent_status(state: ExperimentState) -> dict[str, Any] | None:
    """{"pid", "alive"} of the experiment's host agent (None when it has none). For `nestbed status --json`."""
    for entry in reversed(state.journal.entries()):
        if entry.get("t") == "pid" and entry.get("role") == "agent":
            alive = procs.is_same(entry["pid"], entry.get("start"))
            if alive:
                try:
                    stat = Path(f"/proc/{entry['pid']}/stat").read_text()
                    alive = stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
                except OSError:
                    alive = False
            return {"pid": entry["pid"], "alive": alive}
    return None


def died_message(state: ExperimentState, pid: int | None) -> str:
    return (f"the host agent of {state.name} died (pid {pid}); see {log_path(state)}; "
            f"run 'nestbed down {state.name}'")


class HostAgentConnection:
    """One authenticated connection to the host agent (used by the client and by SpawnedAgent.start)."""

    def __init__(self, state: ExperimentState, timeout: float | None = None):
        self.state = state
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(socket_path(state)))
        except OSError:
            self.sock.close()
            raise
        self.conn = Connection(self.sock)
        self.conn.send({"credential": paths.credential(state.directory).read_text().strip()})

    def request(self, op: str, timeout: float | None = None, **arguments: Any) -> dict[str, Any]:
        if timeout is not None:
            self.sock.settimeout(timeout)
        self.conn.send({"op": op, **arguments})
        answer = self.conn.receive()
        if answer is None:
            raise ExperimentError(f"the host agent of {self.state.name} closed the connection on {op!r}")
        if "error" in answer:
            raise ExperimentError(answer["error"])
        return answer

    def close(self) -> None:
        self.conn.close()


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(no output)"
