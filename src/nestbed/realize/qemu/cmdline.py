"""The qemu command line for a VM and the kernel command line its init reads (pure: no probing, no files)."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from nestbed.errors import ExperimentError
from nestbed.realize.guestkit.protocol import DEFAULT_9P_CACHE, encode_argv, encode_env
from nestbed.realize.qemu.export import Entry

QEMU = "qemu-system-x86_64"
# q35 is fastest here under TCG (microvm: slow TSC calibration without HPET; pc: slow ACPI IRQ links)
MACHINE = "q35"
MAX_CMDLINE = 2047             # x86 COMMAND_LINE_SIZE less the NUL

# Kernel parameters that make a TCG boot quick and quiet: no probing of hardware a VM does not have.
FAST_BOOT_ARGS = ("console=ttyS0", "quiet", "loglevel=1", "panic=-1", "rdinit=/init", "tsc=reliable",
                  "no_timer_check", "noreplace-smp", "8250.nr_uarts=1", "rcupdate.rcu_expedited=1",
                  "i8042.noaux", "i8042.nokbd", "i8042.nopnp", "i8042.dumbkbd", "mitigations=off", "nokaslr",
                  "random.trust_cpu=on", "cryptomgr.notests", "audit=0", "selinux=0", "apparmor=0",
                  "nowatchdog", "init_on_alloc=0", "rodata=off",
                  "initcall_blacklist=init_kprobe_trace,crypto_kdf108_init")


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
    tb_size: int | None = 64                     # TCG translation cache, MiB (bounds RSS; None: qemu's, to 1 GiB)
    ninep_cache: str = DEFAULT_9P_CACHE  # guest's 9p cache: mmap (coherent: the guest sees files the host
                                         # writes later) was as fast as loose for python's startup here
    export: list[Entry] | None = None    # the guest's tree, made at `root` for this qemu alone (export.py)
    fw_cfg: dict[str, Path] = field(default_factory=dict)   # fw_cfg item name → file qemu reads at start
    sandbox: bool = True                 # qemu's seccomp filter (SANDBOX)
    runas: str | None = None             # "uid:gid" qemu switches to once it holds its files and fds
    control_mtu: int | None = None       # the first NIC's (control) MTU, told the guest's virtio-net driver by
                                         # host_mtu (VIRTIO_NET_F_MTU): it sets the NIC's MTU at probe, before
                                         # guestboot or the guest agent configure anything. None: 1500


# qemu's seccomp filter: no obsolete system calls, no fork/exec, no scheduler or resource changes. setuid stays
# allowed: -runas switches user after the filter is in place.
SANDBOX = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"


def kernel_cmdline(spec: VmSpec) -> str:
    args = list(FAST_BOOT_ARGS) + list(spec.extra_append)
    if spec.ninep_cache != DEFAULT_9P_CACHE:
        args.append(f"nestbed.9pcache={spec.ninep_cache}")
    if spec.hostname:
        args.append(f"nestbed.hostname={spec.hostname}")
    if spec.env:
        args.append(f"nestbed.env={encode_env(spec.env)}")
    args.append(f"nestbed.argv={encode_argv(spec.argv)}")
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
           "-machine", machine,
           "-accel", accel if accel != "tcg" or not spec.tb_size else f"tcg,tb-size={spec.tb_size}",
           "-cpu", "host" if accel == "kvm" else "max",
           "-m", str(spec.memory), "-smp", str(spec.cpus),
           *(["-bios", spec.bios] if spec.bios else []),
           "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", kernel_cmdline(spec),
           "-no-reboot",
           "-chardev", f"file,id=console,path={spec.console}", "-serial", "chardev:console",
           "-fsdev", f"local,id=hostroot,path={spec.root},security_model=none,readonly=on,multidevs=remap",
           "-device", f"virtio-9p-{bus},fsdev=hostroot,mount_tag=hostroot"]
    for index, (fd, mac) in enumerate(spec.nics):
        mtu = f",host_mtu={spec.control_mtu}" if index == 0 and spec.control_mtu is not None else ""
        cmd += ["-netdev", f"tap,id=net{index},fd={fd},vhost=off",
                "-device", f"virtio-net-{bus},netdev=net{index},mac={mac}{mtu}"]
    for name, path in spec.fw_cfg.items():
        cmd += ["-fw_cfg", f"name={name},file={_option_value(str(path))}"]
    if spec.sandbox:
        cmd += ["-sandbox", SANDBOX]
    if spec.runas:
        cmd += ["-runas", spec.runas]
    cmd += ["-qmp", f"unix:{spec.qmp},server=on,wait=off", "-pidfile", str(spec.pidfile)]
    return cmd


def _option_value(text: str) -> str:
    """A value inside a qemu option list: a comma is written twice."""
    return text.replace(",", ",,")


def describe(cmd: list[str]) -> str:
    """A qemu command line as a shell would show it (for logs and error messages)."""
    return shlex.join(cmd)
