"""Which accelerator VMs get: KVM when a test guest really boots with it, else TCG; probed once per boot."""
from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from nestbed.errors import PreflightError
from nestbed.realize import guestkit
from nestbed.realize.guestkit.protocol import EXIT_MARKER, FAILURE_MARKER, HANDOFF_MARKER
from nestbed.realize.qemu.cmdline import QEMU, VmSpec, build_command

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CREATE_VCPU = 0xAE41


def _kvm_ioctls() -> str | None:
    """None when /dev/kvm opens and makes a VM with a vCPU, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return f"/dev/kvm: {err.strerror}"
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != 12:
            return "/dev/kvm has an unexpected API version"
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        try:
            os.close(fcntl.ioctl(vm, KVM_CREATE_VCPU, 0))
        finally:
            os.close(vm)
    except OSError as err:
        return f"KVM ioctl failed: {err.strerror}"
    finally:
        os.close(fd)
    return None


def _kvm_boots(kit: guestkit.Kit, deadline: float, accel: str = "kvm") -> str | None:
    """None when the kit's kernel boots under KVM to its init within `deadline` s, else why not.

    /dev/kvm can accept every ioctl and still fail to run a guest (nested setups: qemu aborts on an MSR, or the
    kernel spins); only a real boot tells. The test guest runs /bin/true and powers off.
    """
    with tempfile.TemporaryDirectory(prefix="nestbed-kvm-probe.") as tmp:
        console = Path(tmp) / "console.log"
        spec = VmSpec(name="kvmprobe", memory=128, cpus=1, kernel=kit.kernel, initrd=kit.initrd,
                      argv=["/bin/true"], nics=[], qmp=Path(tmp) / "qmp", console=console,
                      pidfile=Path(tmp) / "pid")
        cmd = build_command(spec, accel=accel)
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            _, err = b"", b""
        text = console.read_text(errors="replace") if console.exists() else ""
        if any(mark in text for mark in (HANDOFF_MARKER, EXIT_MARKER, FAILURE_MARKER)):
            return None                # the guest's init ran: the CPU works
        if proc.returncode is not None and proc.returncode < 0 and not err:
            return f"a test guest did not reach its init in {deadline:.0f} s under KVM"
        lines = [line for line in err.decode(errors="replace").splitlines() if "warning" not in line]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        return f"qemu -accel {accel} failed after {time.monotonic() - started:.1f} s: {why}"


@functools.cache
def accelerator(cache_dir: Path = guestkit.DEFAULT_CACHE) -> tuple[str, str]:
    """("kvm" | "tcg", reason), probed once per process (and remembered per boot in CACHE/accel.json).

    NESTBED_ACCEL=kvm|tcg forces one. KVM counts only when a test guest boots with it.
    """
    known = remembered(cache_dir)
    if known is not None:
        return known
    memo = Path(cache_dir) / "accel.json"
    boot_id = _boot_id()
    why = _kvm_ioctls()
    if why is None:
        why = _kvm_boots(guestkit.ensure_kit(Path(cache_dir)), deadline=6.0)
    result = ("kvm", "KVM boots a test guest") if why is None else ("tcg", f"KVM unusable ({why}); using TCG")
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"boot_id": boot_id, "qemu": _qemu_version(), "accel": result[0],
                                    "reason": result[1]}))
    except OSError:
        pass
    return result


def remembered(cache_dir: Path = guestkit.DEFAULT_CACHE) -> tuple[str, str] | None:
    """What `accelerator()` would answer without probing: NESTBED_ACCEL, or its result remembered for this boot
    and this qemu (None: not probed yet). `nestbed cluster check` reports it without booting a test guest."""
    forced = os.environ.get("NESTBED_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, f"NESTBED_ACCEL={forced}"
    boot_id = _boot_id()
    try:
        saved = json.loads((Path(cache_dir) / "accel.json").read_text())
        if saved.get("boot_id") == boot_id and boot_id and saved.get("qemu") == _qemu_version():
            return saved["accel"], saved["reason"]
    except (OSError, ValueError, KeyError):
        pass
    return None


def kvm_ioctl_problem() -> str | None:
    """The cheap half of the probe: None when /dev/kvm makes a VM with a vCPU, else why not (a guest may still
    fail to run under KVM: only `accelerator()` boots one)."""
    return _kvm_ioctls()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@functools.cache
def _qemu_version() -> str:
    """Identity of the installed qemu binary (path, size, mtime): a new qemu is probed again."""
    path = shutil.which(QEMU)
    if path is None:
        raise PreflightError(f"{QEMU} is not installed; install qemu-system-x86 (apt-get install qemu-system-x86)")
    st = os.stat(path)
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"
