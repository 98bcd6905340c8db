"""A VM's qemu process: launch, watch its console for a marker, stop it (QMP powerdown, quit, SIGKILL)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from nestbed import procs
from nestbed.errors import ExperimentError, PreflightError
from nestbed.realize.guestkit.protocol import FAILURE_MARKER, HANDOFF_MARKER
from nestbed.realize.qemu import export
from nestbed.realize.qemu.accelprobe import accelerator
from nestbed.realize.qemu.cmdline import QEMU, VmSpec, build_command


class GuestBootError(ExperimentError):
    """A VM that failed to boot or hung; the message names its console log."""


def stderr_log(spec: VmSpec) -> Path:
    return Path(f"{spec.console}.stderr")


def launch(spec: VmSpec, accel: str | None = None, close_fds: bool = True) -> subprocess.Popen[bytes]:
    """Start qemu for `spec` (its own session, so a Ctrl-C of the caller does not reach it).

    accel None: `accelerator()`. close_fds: close the TAP fds in this process once qemu holds them, so each TAP
    goes away with qemu. qemu's stderr goes to CONSOLE.stderr. With spec.export, qemu starts in a mount
    namespace of its own where that tree is at spec.root (export.launch_inside).
    """
    if accel is None:
        accel = accelerator()[0]
    for path in (spec.qmp, spec.pidfile, spec.console):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    spec.console.parent.mkdir(parents=True, exist_ok=True)
    cmd = build_command(spec, accel)
    fds = [fd for fd, _ in spec.nics]
    with open(stderr_log(spec), "wb") as err:
        def start() -> subprocess.Popen[bytes]:
            try:
                return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=fds,
                                        start_new_session=True)
            except FileNotFoundError:
                raise PreflightError(f"{QEMU} is not installed; install qemu-system-x86") from None
        if spec.export is None:
            proc = start()
        else:         # the guest's tree exists only in qemu's own mount namespace
            proc = export.launch_inside(Path(spec.root), spec.export, start)
    if close_fds:
        for fd in fds:
            os.close(fd)
    return proc


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def wait_console(path: Path, marker: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
                 name: str = "") -> str:
    """Wait until the console log at `path` has a line containing `marker`; return that line.

    Raises GuestBootError naming the log when the guest prints FAILURE_MARKER, when qemu (`proc`) exits
    first, or after `timeout` seconds.
    """
    who = f"vm {name}" if name else "guest"
    deadline = time.monotonic() + timeout
    offset, pending = 0, b""
    while True:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete + ([pending] if marker.encode() in pending else []):
            line = raw.decode(errors="replace").strip("\r\n ")
            if FAILURE_MARKER in line:
                reason = line.split(FAILURE_MARKER, 1)[1].strip()
                raise GuestBootError(f"{who} failed: {reason} (console log {path})")
            if marker in line and HANDOFF_MARKER not in line:   # that line echoes the argv
                return line
        if proc is not None and proc.poll() is not None:
            err = _tail(Path(f"{path}.stderr"), 2)
            last = _tail(path, 1)
            detail = err or (f"last console line: {last}" if last else "no console output")
            raise GuestBootError(f"{who}: qemu exited with status {proc.returncode} before the guest was ready: "
                                 f"{detail} (console log {path})")
        if time.monotonic() >= deadline:
            last = _tail(path, 1)
            raise GuestBootError(f"{who} did not boot within {timeout:.0f} s"
                                 f"{f' (last console line: {last})' if last else ''} (console log {path})")
        time.sleep(0.02)


def _is_qemu(pid: int, qmp: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"qemu-system" in part for part in cmdline[:1]) and any(str(qmp).encode() in p for p in cmdline)


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while procs.is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


async def _qmp(path: Path, command: str, timeout: float) -> None:
    from qemu.qmp import QMPClient
    client = QMPClient("nestbed")
    try:
        await asyncio.wait_for(client.connect(str(path)), timeout)
        await asyncio.wait_for(client.execute(command), timeout)
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), timeout)
        except Exception:  # noqa: BLE001,S110 -- qemu may hang up first (quit); nothing to do
            pass


def _qmp_command(path: Path, command: str, timeout: float) -> bool:
    try:
        asyncio.run(_qmp(path, command, timeout))
        return True
    except Exception:  # noqa: BLE001 -- the socket is gone, qemu hung up mid-command (quit), or it did not answer
        return False


def stop(qmp_path: Path, pid: int | None, timeout: float = 10.0, powerdown_wait: float = 4.0) -> str:
    """Stop a VM: QMP system_powerdown (waiting up to `powerdown_wait` s), then QMP quit, then SIGKILL once
    `timeout` s have passed.

    The kit's guest answers the power button by sending SIGTERM to its command and powering off when that ends
    (at most 3 s later). Returns how it ended: "gone" (was not running), "powerdown", "quit" or "kill". The
    guest has no disk state (host root read-only, writes in RAM), so quit and kill lose nothing. pid None:
    only QMP is used. Safe to repeat; never kills a pid that is not this VM's qemu.
    """
    qmp_path = Path(qmp_path)
    start = time.monotonic()
    if pid is not None and (not procs.is_alive(pid) or not _is_qemu(pid, qmp_path)):
        _cleanup_files(qmp_path)
        return "gone"
    how = "gone"
    if _qmp_command(qmp_path, "system_powerdown", min(2.0, timeout)):
        how = "powerdown"
        if pid is None or _wait_gone(pid, min(powerdown_wait, timeout)):
            _cleanup_files(qmp_path)
            return how
    left = max(0.1, timeout - (time.monotonic() - start))
    if _qmp_command(qmp_path, "quit", min(2.0, left)) or how == "powerdown":
        how = "quit"                 # qemu may hang up before answering quit
    if pid is not None:
        left = max(0.1, timeout - (time.monotonic() - start))
        if not _wait_gone(pid, left) and _is_qemu(pid, qmp_path):
            try:
                os.kill(pid, signal.SIGKILL)
                how = "kill"
            except ProcessLookupError:
                pass
            _wait_gone(pid, 5.0)
    _cleanup_files(qmp_path)
    return how


def _cleanup_files(qmp_path: Path) -> None:
    try:
        qmp_path.unlink()
    except FileNotFoundError:
        pass


def boot(spec: VmSpec, marker: str, timeout: float, accel: str | None = None) -> subprocess.Popen[bytes]:
    """launch + wait_console; on any failure the VM is stopped (and its TAPs go with it) before raising."""
    proc = launch(spec, accel)
    try:
        wait_console(spec.console, marker, timeout, proc, spec.name)
    except BaseException:
        stop(spec.qmp, proc.pid, timeout=3.0, powerdown_wait=0.0)
        proc.wait()
        raise
    return proc
