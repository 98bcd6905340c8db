"""qemu VM nodes: accelerator probe, the command line, TAP devices in namespaces, launch, console watch, stop.

A guest boots the kit of `guestkit` (kernel + initramfs, no disk): its root is the host's / over virtio-9p
(read-only, tmpfs overlay in the guest), and the command in VmSpec.argv runs as the guest's payload (the
guest agent). Each NIC is a TAP device that `open_tap` creates inside a network namespace and passes to qemu
as an fd, so the TAP lives exactly as long as the qemu process.
"""
from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from nestbed.errors import ExperimentError, PreflightError
from nestbed.realize import guestkit, syscalls

QEMU = "qemu-system-x86_64"
MACHINE = "q35"               # fastest here under TCG (microvm: slow TSC calibration without HPET; pc: slow ACPI IRQ links)
FAILURE_MARKER = guestkit.FAILURE_MARKER
EXIT_MARKER = guestkit.EXIT_MARKER
MAX_CMDLINE = 2047             # x86 COMMAND_LINE_SIZE less the NUL

# Kernel parameters that make a TCG boot quick and quiet: no probing of hardware a VM does not have.
FAST_BOOT_ARGS = ("console=ttyS0", "quiet", "loglevel=1", "panic=-1", "rdinit=/init", "tsc=reliable",
                  "no_timer_check", "noreplace-smp", "8250.nr_uarts=1", "rcupdate.rcu_expedited=1",
                  "i8042.noaux", "i8042.nokbd", "i8042.nopnp", "i8042.dumbkbd", "mitigations=off", "nokaslr",
                  "random.trust_cpu=on", "cryptomgr.notests", "audit=0", "selinux=0", "apparmor=0",
                  "nowatchdog", "init_on_alloc=0", "rodata=off", "initcall_blacklist=init_kprobe_trace,crypto_kdf108_init")


class GuestBootError(ExperimentError):
    """A VM that failed to boot or hung; the message names its console log."""


# ---------------------------------------------------------------------------------------------------- KVM probe

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
        if any(mark in text for mark in (guestkit.HANDOFF_MARKER, EXIT_MARKER, FAILURE_MARKER)):
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
    forced = os.environ.get("NESTBED_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, f"NESTBED_ACCEL={forced}"
    memo = Path(cache_dir) / "accel.json"
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    try:
        saved = json.loads(memo.read_text())
        if saved.get("boot_id") == boot_id and boot_id and saved.get("qemu") == _qemu_version():
            return saved["accel"], saved["reason"]
    except (OSError, ValueError, KeyError):
        pass
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


@functools.cache
def _qemu_version() -> str:
    """Identity of the installed qemu binary (path, size, mtime): a new qemu is probed again."""
    path = shutil.which(QEMU)
    if path is None:
        raise PreflightError(f"{QEMU} is not installed; install qemu-system-x86 (apt-get install qemu-system-x86)")
    st = os.stat(path)
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------------- command line

@dataclass
class VmSpec:
    name: str
    memory: int                                  # MiB
    cpus: int
    kernel: Path
    initrd: Path
    argv: list[str]                              # the guest's payload command (host paths; the host root is /)
    nics: list[tuple[int, str]]                  # (TAP fd from open_tap, MAC) in guest interface order
    qmp: Path                                    # QMP unix socket qemu listens on
    console: Path                                # serial console log
    pidfile: Path
    env: dict[str, str] = field(default_factory=dict)   # extra environment for argv
    hostname: str | None = None
    machine: str = MACHINE                       # microvm | pc | q35
    root: str = "/"                              # host directory the guest mounts as its read-only root
    extra_append: list[str] = field(default_factory=list)   # more kernel parameters
    bios: str | None = None                      # firmware file (-bios); None: qemu's default (SeaBIOS)
    tb_size: int | None = 64                     # TCG translation cache, MiB (bounds RSS; None: qemu default, up to 1 GiB)
    ninep_cache: str = guestkit.DEFAULT_9P_CACHE  # guest's 9p cache: mmap (coherent: the guest sees files the host
                                                  # writes later) was as fast as loose for python's startup here


def kernel_cmdline(spec: VmSpec) -> str:
    args = list(FAST_BOOT_ARGS) + list(spec.extra_append)
    if spec.ninep_cache != guestkit.DEFAULT_9P_CACHE:
        args.append(f"nestbed.9pcache={spec.ninep_cache}")
    if spec.hostname:
        args.append(f"nestbed.hostname={spec.hostname}")
    if spec.env:
        args.append(f"nestbed.env={guestkit.encode_env(spec.env)}")
    args.append(f"nestbed.argv={guestkit.encode_argv(spec.argv)}")
    line = " ".join(args)
    if len(line) > MAX_CMDLINE:
        raise ExperimentError(f"vm {spec.name}: the guest command line is {len(line)} bytes (at most "
                              f"{MAX_CMDLINE}); put the command's arguments in a config file")
    return line


def build_command(spec: VmSpec, accel: str = "tcg", qemu: str = QEMU) -> list[str]:
    """The qemu argv for `spec` (pure: no probing, no files touched)."""
    mmio = spec.machine == "microvm"
    bus = "device" if mmio else "pci"
    if mmio:
        machine = "microvm,x-option-roms=off,pit=on,pic=off,rtc=off,isa-serial=on,acpi=on"
    else:
        machine = spec.machine
    cmd = [qemu, "-name", f"nestbed-{spec.name}", "-nodefaults", "-no-user-config", "-nographic",
           "-machine", machine, "-accel", accel if accel != "tcg" or not spec.tb_size else f"tcg,tb-size={spec.tb_size}", "-cpu", "host" if accel == "kvm" else "max",
           "-m", str(spec.memory), "-smp", str(spec.cpus),
           *(["-bios", spec.bios] if spec.bios else []),
           "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", kernel_cmdline(spec),
           "-no-reboot",
           "-chardev", f"file,id=console,path={spec.console}", "-serial", "chardev:console",
           "-fsdev", f"local,id=hostroot,path={spec.root},security_model=none,readonly=on,multidevs=remap",
           "-device", f"virtio-9p-{bus},fsdev=hostroot,mount_tag=hostroot"]
    for index, (fd, mac) in enumerate(spec.nics):
        cmd += ["-netdev", f"tap,id=net{index},fd={fd},vhost=off",
                "-device", f"virtio-net-{bus},netdev=net{index},mac={mac}"]
    cmd += ["-qmp", f"unix:{spec.qmp},server=on,wait=off", "-pidfile", str(spec.pidfile)]
    return cmd


# ---------------------------------------------------------------------------------------------------- TAP devices

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


def _make_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)       # not O_CLOEXEC: passed to qemu through pass_fds
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except OSError:
        os.close(fd)
        raise
    return fd


def open_tap(netns: str | None, name: str) -> int:
    """A new TAP device `name` in the network namespace at path `netns` (None: this one); returns its fd.

    The device exists while the fd (or qemu's copy of it) is open: nothing to remove after qemu exits. It is
    created down and without a master; bring it up and enslave it to its bridge in that namespace.
    """
    if len(name.encode()) > 15:
        raise ValueError(f"interface name {name!r} is longer than 15 bytes")
    if netns is None:
        return _make_tap(name)
    result: list[int | BaseException] = []

    def inside() -> None:
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(netns, os.O_RDONLY)
            try:
                syscalls.setns(target, syscalls.CLONE_NEWNET)
                try:
                    result.append(_make_tap(name))
                finally:
                    syscalls.setns(home, syscalls.CLONE_NEWNET)
            finally:
                os.close(target)
                os.close(home)
        except BaseException as err:  # noqa: BLE001 -- re-raised in the caller's thread
            result.append(err)

    thread = threading.Thread(target=inside, name=f"tap-{name}")
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


# ---------------------------------------------------------------------------------------------------- lifecycle

def stderr_log(spec: VmSpec) -> Path:
    return Path(f"{spec.console}.stderr")


def launch(spec: VmSpec, accel: str | None = None, close_fds: bool = True) -> subprocess.Popen[bytes]:
    """Start qemu for `spec` (its own session, so a Ctrl-C of the caller does not reach it).

    accel None: `accelerator()`. close_fds: close the TAP fds in this process once qemu holds them, so each TAP
    goes away with qemu. qemu's stderr goes to CONSOLE.stderr.
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
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=fds,
                                    start_new_session=True)
        except FileNotFoundError:
            raise PreflightError(f"{QEMU} is not installed; install qemu-system-x86")
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
            if marker in line and guestkit.HANDOFF_MARKER not in line:   # that line echoes the argv
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:                                      # a zombie child of ours: reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
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
    if pid is not None and (not _alive(pid) or not _is_qemu(pid, qmp_path)):
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


def describe(cmd: list[str]) -> str:
    """A qemu command line as a shell would show it (for logs and error messages)."""
    return shlex.join(cmd)
