"""The guest boot kit for qemu nodes: a kernel and a small initramfs that nestbed builds, no disk image.

The kernel is the host's own when /boot/vmlinuz-$(uname -r) and its modules are readable, else Debian's
`linux-image-*-amd64` package that `linux-image-amd64` depends on, fetched with `apt-get download` and unpacked
(never installed) under CACHE/kernel/RELEASE/; a user may give one (`ensure_kit(kernel=..., modules_dir=...)`).

The initramfs (CACHE/initrd/RELEASE-HASH.cpio.gz, rebuilt when any input changes) holds busybox-static, the
kernel modules the guest needs with every dependency (resolved from modules.dep; generated from the modules'
own `.modinfo` when a Debian package ships none) and an /init that:

  1. mounts /proc /sys /dev, loads the modules in dependency order;
  2. mounts the host's / read-only over virtio-9p (mount_tag `hostroot`) and an overlay on it whose upper
     layer is a tmpfs, so the guest can write anywhere (/etc/hosts, /var/emulab/boot) and the host sees nothing;
  3. fresh tmpfs on /run and /dev/shm (/tmp stays the host's, through the overlay: a checkout or a user's
     files may live there), devpts, the modules under /lib/modules/RELEASE (and busybox's
     modprobe as the kernel's modprobe), then switch_root;
  4. runs the command given on the kernel command line (`nestbed.argv=`, see `encode_argv`) with the host's
     programs, from /, as root; when it ends the guest powers off. A step that fails, or a command that exits
     non-zero, prints one line starting with FAILURE_MARKER to the console and powers off at once.
     The ACPI power button (QMP system_powerdown) sends SIGTERM to the command and powers off when it ends
     (at most 3 s later); the console then shows EXIT_MARKER "powered down".

Kernel command-line parameters the init reads (all optional but nestbed.argv):
  nestbed.argv=ITEM,ITEM,...  the command, each argument `%TEXT` (TEXT of [A-Za-z0-9_./:@=+-] only) or its base64
                             (standard alphabet) — any bytes but NUL
  nestbed.env=ITEM,...        extra environment, each `KEY=VALUE` as an item
  nestbed.hostname=NAME      the guest's hostname
  nestbed.9pcache=MODE       9p cache mode (default mmap)
  nestbed.trace              print `nestbed-trace UPTIME STEP` lines for each step of the init
"""
from __future__ import annotations

import base64
import fcntl
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nestbed.errors import PreflightError

DEFAULT_CACHE = Path("/var/cache/nestbed")
FAILURE_MARKER = "NESTBED-GUEST-FAILED:"       # the init prints this (then powers off) when a step fails
EXIT_MARKER = "NESTBED-GUEST-EXIT:"            # ... and this when the command ended with status 0
HANDOFF_MARKER = "NESTBED-GUEST-HANDOFF:"      # ... and this just before running the command
KIT_FORMAT = 9
DEFAULT_9P_CACHE = "mmap"                                 # bump when the init or the layout changes

# Loaded at boot, in this order, each with its dependencies; a missing required one fails the guest.
REQUIRED_MODULES = ("virtio_pci", "virtio_mmio", "virtio_net", "9pnet_virtio", "9p", "overlay")
# Loaded at boot when the kernel has them; what the guest agent needs for LANs, links and shaping.
OPTIONAL_MODULES = ("bridge", "veth", "sch_netem", "sch_htb", "sch_tbf", "8021q", "tun", "evdev", "button")
# Copied into the initramfs (and so /lib/modules in the guest) for modprobe, not loaded at boot.
EXTRA_MODULES = ("sch_prio", "sch_red", "sch_sfq", "sch_pie", "ifb", "act_mirred", "cls_u32", "cls_fw",
                 "cls_matchall", "em_u32", "br_netfilter", "vxlan", "macvlan", "ipip", "ip_gre", "dummy")

BUSYBOX_CANDIDATES = ("/usr/bin/busybox", "/bin/busybox")
APPLETS = ("sh", "mount", "umount", "mkdir", "insmod", "modprobe", "switch_root", "poweroff", "reboot", "cat",
           "echo", "cp", "ln", "base64", "hostname", "sleep", "sync", "tr", "ls", "ip", "dmesg")


@dataclass(frozen=True)
class Kit:
    kernel: Path                 # what qemu's -kernel boots (an uncompressed PVH vmlinux when one is cached)
    initrd: Path
    version: str                 # kernel release, e.g. 6.1.0-50-amd64
    modules_dir: Path | None = None       # lib/modules/RELEASE the modules came from
    source: str = "debian"                # debian | host | user
    modules: tuple[str, ...] = field(default=())   # module names in the initramfs (deps included)


# ---------------------------------------------------------------------------------------------------- modules

def module_name(path_or_name: str) -> str:
    """`kernel/net/9p/9pnet_virtio.ko.xz` or `9pnet-virtio` -> `9pnet_virtio` (the kernel's spelling)."""
    base = path_or_name.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """modules.dep -> {name: (path, (dependency paths...))}; paths relative to lib/modules/RELEASE."""
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, deps = line.partition(":")
        table[module_name(path.strip())] = (path.strip(), tuple(deps.split()))
    return table


def resolve(names: Iterable[str], dep: dict[str, tuple[str, tuple[str, ...]]],
            builtin: Iterable[str] = ()) -> list[str]:
    """Module paths to load for `names`, every dependency before its users, each once.

    Built-in modules are skipped; a name that is neither in modules.dep nor built in raises KeyError.
    modules.dep lists the full (transitive) dependencies, but this does not rely on it: it walks them.
    """
    by_path = {path: name for name, (path, _) in dep.items()}
    built = {module_name(b) for b in builtin}
    order: list[str] = []
    state: dict[str, int] = {}          # 1 visiting, 2 done

    def visit(name: str) -> None:
        if state.get(name) == 2 or name in built:
            return
        if state.get(name) == 1:
            return                      # a cycle (never in a valid kernel); break it
        if name not in dep:
            raise KeyError(name)
        state[name] = 1
        path, deps = dep[name]
        for dpath in deps:
            visit(by_path.get(dpath, module_name(dpath)))
        state[name] = 2
        order.append(path)

    for wanted in names:
        visit(module_name(wanted))
    return order


def _elf_section(data: bytes, wanted: str) -> bytes | None:
    """The contents of one section of a 64-bit little-endian ELF file (a .ko), or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + k * shentsize) for k in range(shnum)]
    strtab = sections[shstrndx]
    names = data[strtab[4]:strtab[4] + strtab[5]]
    for name_off, _type, _flags, _addr, offset, size in sections:
        end = names.find(b"\0", name_off)
        if names[name_off:end].decode() == wanted:
            return data[offset:offset + size]
    return None


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


SIGNATURE_MAGIC = b"~Module signature appended~\n"


def strip_signature(data: bytes) -> bytes:
    """A module without its appended signature: the kernel skips the RSA check (tens of ms each under TCG)
    and loads it, tainted, unless module.sig_enforce (Debian: only under Secure Boot lockdown)."""
    if not data.endswith(SIGNATURE_MAGIC):
        return data
    body = data[:-len(SIGNATURE_MAGIC)]
    sig_len, = struct.unpack(">I", body[-4:])
    return body[:-(12 + sig_len)]


def modinfo(path: Path) -> tuple[list[str], list[str]]:
    """(`depends=`, `alias=` values) of a module's .modinfo (what depmod derives its files from)."""
    info = _elf_section(read_module(path), ".modinfo") or b""
    depends: list[str] = []
    aliases: list[str] = []
    for item in info.split(b"\0"):
        if item.startswith(b"depends="):
            depends = [module_name(n) for n in item[8:].decode().split(",") if n]
        elif item.startswith(b"alias="):
            aliases.append(item[6:].decode(errors="replace"))
    return depends, aliases


def modinfo_depends(path: Path) -> list[str]:
    return modinfo(path)[0]


def generate_modules_dep(modules_dir: Path) -> tuple[str, str]:
    """modules.dep and modules.alias texts for a tree that has none (Debian's package leaves them to depmod)."""
    paths = {}
    for ko in sorted(modules_dir.rglob("*.ko*")):
        if re.search(r"\.ko(\.xz|\.gz)?$", ko.name):
            paths[module_name(ko.name)] = str(ko.relative_to(modules_dir))
    infos = {name: modinfo(modules_dir / rel) for name, rel in paths.items()}
    direct = {name: info[0] for name, info in infos.items()}
    aliases = [f"alias {alias} {name}" for name, info in infos.items() for alias in info[1]]
    lines = []
    for name, rel in paths.items():
        seen: list[str] = []
        stack = list(direct[name])
        while stack:                              # transitive closure, users before their dependencies
            dep_name = stack.pop(0)
            if dep_name in seen or dep_name not in paths:
                continue
            seen.append(dep_name)
            stack.extend(direct[dep_name])
        lines.append(f"{rel}: {' '.join(paths[d] for d in seen)}".rstrip())
    return "\n".join(lines) + "\n", "\n".join(aliases) + "\n"


def load_modules_dep(modules_dir: Path, writable: bool) -> str:
    dep_file = modules_dir / "modules.dep"
    if dep_file.exists() and (not writable or (modules_dir / "modules.alias").exists()):
        return dep_file.read_text()
    text, aliases = generate_modules_dep(modules_dir)
    if writable:
        for name, content in (("modules.alias", aliases), ("modules.dep", text)):   # modules.dep last: the flag
            tmp = modules_dir / f"{name}.tmp"
            tmp.write_text(content)
            os.replace(tmp, modules_dir / name)
    return text


def read_builtin(modules_dir: Path) -> list[str]:
    try:
        return [module_name(line.strip()) for line in (modules_dir / "modules.builtin").read_text().splitlines()
                if line.strip()]
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------------------------------------- kernel

def kernel_release(vmlinuz: Path) -> str | None:
    """The release string in a bzImage's header (`6.1.0-50-amd64`), or None when it is not a bzImage."""
    try:
        with open(vmlinuz, "rb") as handle:
            head = handle.read(0x10000)
    except OSError:
        return None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    offset, = struct.unpack_from("<H", head, 0x20E)
    text = head[offset + 0x200:offset + 0x200 + 256]
    return text.split(b" ", 1)[0].split(b"\0", 1)[0].decode(errors="replace") or None


def _has_pvh_note(elf: bytes) -> bool:
    """Whether an uncompressed vmlinux has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) qemu boots."""
    return elf[:4] == b"\x7fELF" and b"Xen\0" in elf and _find_note(elf, b"Xen\0", 18)


def _find_note(elf: bytes, owner: bytes, note_type: int) -> bool:
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for k in range(phnum):
        p_type, _flags, offset, _va, _pa, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + k * phentsize)
        if p_type != 4:               # PT_NOTE
            continue
        pos, end = offset, offset + filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz]
            if name == owner and ntype == note_type:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def extract_vmlinux(vmlinuz: Path) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage (xz, gzip or zstd payload), or None.

    qemu boots it through the PVH entry, which skips the in-guest decompression (about a second under TCG).
    """
    data = vmlinuz.read_bytes()
    def unxz(raw: bytes) -> bytes:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(raw)

    def ungzip(raw: bytes) -> bytes:
        return zlib.decompressobj(31).decompress(raw)

    for magic, decode in ((b"\xfd7zXZ\x00", unxz), (b"\x1f\x8b\x08", ungzip)):
        at = data.find(magic)
        while at != -1:
            try:
                out = decode(data[at:])
            except (lzma.LZMAError, zlib.error, EOFError):
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            at = data.find(magic, at + 1)
    return None


def _debian_kernel_package() -> str:
    try:
        result = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True,
                                timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PreflightError(f"cannot look up Debian's guest kernel (apt-cache depends linux-image-amd64): {err}")
    for line in result.stdout.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-[0-9][^\s]*)", line)
        if match:
            return match.group(1)
    last = (result.stderr.strip().splitlines() or ["no Depends: linux-image-* line"])[-1]
    raise PreflightError(f"cannot find Debian's guest kernel package (apt-cache depends linux-image-amd64: "
                         f"{last}); run `apt-get update`, or give a kernel")


def _cached_kernels(cache_dir: Path) -> list[Path]:
    root = cache_dir / "kernel"
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if (d / ".complete").exists()), key=lambda d: d.stat().st_mtime)


def fetch_debian_kernel(cache_dir: Path, refresh: bool = False) -> Path:
    """CACHE/kernel/RELEASE with boot/vmlinuz-RELEASE and lib/modules/RELEASE; downloaded once."""
    cached = _cached_kernels(cache_dir)
    if cached and not refresh:
        return cached[-1]               # the newest fetched; refresh=True asks apt for a newer one
    try:
        package = _debian_kernel_package()
    except PreflightError:
        if cached:
            return cached[-1]           # offline, but a kernel was fetched before
        raise
    release = package.removeprefix("linux-image-")
    target = cache_dir / "kernel" / release
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{release}.", dir=target.parent))     # same filesystem: rename works
    try:
        result = subprocess.run(["apt-get", "download", "-q", package], cwd=work, capture_output=True, text=True,
                                timeout=600, check=False)
        debs = list(work.glob("*.deb"))
        if result.returncode != 0 or not debs:
            last = (result.stderr.strip().splitlines() or ["no .deb was downloaded"])[-1]
            raise PreflightError(f"cannot download the guest kernel ({package}) with apt-get: {last}; "
                                 f"check apt sources, or give a kernel")
        unpacked = work / "root"
        result = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise PreflightError(f"cannot unpack {debs[0].name}: {result.stderr.strip()}")
        (unpacked / ".complete").write_text(debs[0].name + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(unpacked, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------------- initramfs

class Cpio:
    """A newc (SVR4, no CRC) archive written in memory; ownership root, times zero (reproducible)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1000

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        self.ino += 1
        raw = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        self.out.write(b"\0" * (-(110 + len(raw)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self.out.getvalue()
        return data + b"\0" * (-len(data) % 512)


INIT_TEMPLATE = r"""#!/bin/sh
# nestbed guest init (nestbed.realize.guestkit, format @FORMAT@): modules, host root over 9p + tmpfs overlay, handoff
export PATH=/bin
t() { [ -z "$TRACE" ] || echo "nestbed-trace $(cat /proc/uptime) $*" >/dev/console; }
fail() {
  echo "@FAIL@ $*" >/dev/console
  sync; poweroff -f; sleep 2; reboot -f
}
mount -t devtmpfs dev /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sys /sys
case " $(cat /proc/cmdline) " in *" nestbed.trace "*) TRACE=1 ;; esac
t init
V=@VERSION@
for m in @REQUIRED@; do insmod /lib/modules/$V/$m || fail "cannot load module $m (kernel $V)"; done
t required modules loaded
for m in @OPTIONAL@; do insmod /lib/modules/$V/$m 2>/dev/null; done
t optional modules loaded
CACHE=@CACHE@
for p in $(cat /proc/cmdline); do
  case "$p" in
    nestbed.argv=*) ARGV="${p#nestbed.argv=}" ;;
    nestbed.env=*) ENVS="${p#nestbed.env=}" ;;
    nestbed.hostname=*) hostname "${p#nestbed.hostname=}" ;;
    nestbed.9pcache=*) CACHE="${p#nestbed.9pcache=}" ;;
  esac
done
[ -n "$ARGV" ] || fail "no nestbed.argv= on the kernel command line (nothing to run)"
mkdir -p /lower /rw /newroot
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=$CACHE,msize=512000 hostroot /lower ||
  fail "cannot mount the host root over virtio-9p (mount_tag hostroot)"
mount -t tmpfs -o mode=0755 rw /rw && mkdir -p /rw/upper /rw/work || fail "cannot mount the tmpfs upper layer"
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
  fail "cannot mount the overlay on the host root"
t overlay mounted
N=/newroot
mkdir -p $N/.nestbed $N/lib/modules $N/run $N/tmp $N/dev $N/proc $N/sys || fail "cannot write to the overlay"
cp /stage2 $N/.nestbed/stage2 && cp -a /acpi $N/.nestbed/acpi || fail "cannot write to the overlay"
# busybox for stage 2 and the modules: the host's files seen over 9p when they are there (no copy), else ours
if [ -x "$N@HOSTBB@" ]; then ln -s "@HOSTBB@" $N/.nestbed/busybox; else cp /bin/busybox $N/.nestbed/busybox; fi
ln -s busybox $N/.nestbed/modprobe
if [ ! -e $N/lib/modules/$V ]; then
  if [ -n "@MODLINK@" ] && [ -f "$N@MODLINK@/modules.dep" ]; then ln -s "@MODLINK@" $N/lib/modules/$V
  else cp -a /lib/modules/$V $N/lib/modules/$V; fi
fi
[ -n "@KMODPROBE@" ] || echo /.nestbed/modprobe > /proc/sys/kernel/modprobe
mount -t tmpfs -o mode=0755 run $N/run
echo "$ARGV" > $N/run/nestbed-argv
echo "$ENVS" > $N/run/nestbed-env
mount --move /dev $N/dev && mount --move /proc $N/proc && mount --move /sys $N/sys || fail "cannot move /dev /proc /sys"
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts -o mode=0620,ptmxmode=0666 devpts $N/dev/pts
mount -t tmpfs -o mode=1777 shm $N/dev/shm
t switch_root
exec switch_root $N /.nestbed/busybox sh /.nestbed/stage2
fail "switch_root failed"
"""

STAGE2_TEMPLATE = r"""# nestbed guest stage 2: PID 1 in the host root overlay; runs the command, then powers off
B=/.nestbed/busybox
fail() { echo "@FAIL@ $*" >/dev/console; $B sync; $B poweroff -f; $B sleep 2; $B reboot -f; }
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
# Items are `%RAW` or base64 (see encode_argv); shell builtins only, but one base64 per encoded item: under
# emulation every fork+exec costs ~15 ms of a booting VM's CPU.
item() { case "$1" in %*) ITEM="${1#%}" ;; *) ITEM="$(echo "$1" | $B base64 -d)" ;; esac; }
read -r ENVS < /run/nestbed-env
read -r ARGS < /run/nestbed-argv
IFS=,
for e in $ENVS; do item "$e"; export "$ITEM"; done
set --
for a in $ARGS; do item "$a"; set -- "$@" "$ITEM"; done
unset IFS
cd /
read -r CMDLINE < /proc/cmdline
case " $CMDLINE " in *" nestbed.trace "*) read -r UP < /proc/uptime; echo "nestbed-trace $UP handoff" ;; esac
echo "@HANDOFF@ $*" >/dev/console
# the ACPI power button (QMP system_powerdown): SIGTERM to the command, power off when it ends (or after 3 s)
[ -e /dev/input/event0 ] && $B acpid -c /.nestbed/acpi -p /run/nestbed-acpid.pid 2>/dev/null
"$@" </dev/console &
echo $! > /run/nestbed-command.pid
wait $!
rc=$?
if [ -e /run/nestbed-powerdown ]; then
  echo "@EXIT@ powered down (command ended with status $rc)" >/dev/console
  $B sync; $B poweroff -f; $B sleep 2; $B reboot -f
fi
[ $rc -eq 0 ] || fail "command exited with status $rc: $*"
echo "@EXIT@ command exited with status 0" >/dev/console
$B sync; $B poweroff -f; $B sleep 2; $B reboot -f
"""


POWER_BUTTON = r"""#!/.nestbed/busybox sh
# nestbed: ACPI power button -> SIGTERM to the guest's command; stage 2 powers off when it ends
B=/.nestbed/busybox
$B touch /run/nestbed-powerdown
$B kill -TERM "$($B cat /run/nestbed-command.pid)" 2>/dev/null
$B sleep 3
$B sync; $B poweroff -f
"""


def _render(template: str, **values: str) -> str:
    text = template
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


_PLAIN_ITEM = re.compile(r"[A-Za-z0-9_./:@=+-]*")


def _item(text: str) -> str:
    """One item of nestbed.argv/env: `%TEXT` when TEXT needs no quoting (stage 2 takes it as it is), else its
    base64 (stage 2 decodes it: one fork+exec in the guest)."""
    if _PLAIN_ITEM.fullmatch(text):
        return f"%{text}"
    return base64.b64encode(text.encode()).decode()


def encode_argv(argv: list[str]) -> str:
    """The value of `nestbed.argv=` for a command (NUL-free strings; a trailing newline of an argument is lost)."""
    return ",".join(_item(arg) for arg in argv)


def encode_env(env: dict[str, str]) -> str:
    return ",".join(_item(f"{k}={v}") for k, v in env.items())


def decode_items(value: str) -> list[str]:
    """encode_argv/encode_env's inverse (what stage 2 does in the guest)."""
    return [item[1:] if item.startswith("%") else base64.b64decode(item).decode() for item in value.split(",")]


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.exists():
            if b"libc.so" in path.read_bytes()[:1 << 20] and not os.environ.get("NESTBED_ALLOW_DYNAMIC_BUSYBOX"):
                continue                # dynamically linked: useless in an initramfs
            return path
    raise PreflightError("no static busybox for the guest initramfs; install busybox-static")


def _module_plan(modules_dir: Path | None, writable: bool,
                 extra_copy: bool = True) -> tuple[list[str], list[str], list[str], list[str]]:
    """(required paths, optional paths, every path to copy, names) for the initramfs."""
    if modules_dir is None or not modules_dir.is_dir():
        return [], [], [], []
    dep = parse_modules_dep(load_modules_dep(modules_dir, writable))
    builtin = read_builtin(modules_dir)
    required = [r for r in REQUIRED_MODULES if r in dep or r in builtin]
    missing = [r for r in REQUIRED_MODULES if r not in dep and r not in builtin and r != "virtio_mmio"]
    if missing:
        raise PreflightError(f"the guest kernel's modules ({modules_dir}) lack {', '.join(missing)} and the "
                             f"kernel does not have them built in; give a kernel with virtio, 9p and overlayfs")
    req_paths = resolve(required, dep, builtin)
    opt_paths = [p for p in resolve([o for o in OPTIONAL_MODULES if o in dep], dep, builtin) if p not in req_paths]
    extra = [p for p in resolve([e for e in EXTRA_MODULES if e in dep], dep, builtin)
             if p not in req_paths and p not in opt_paths] if extra_copy else []
    every = req_paths + opt_paths + extra
    return req_paths, opt_paths, every, [module_name(p) for p in every]


def _plain(rel: str) -> str:
    """Modules go into the initramfs uncompressed (busybox insmod and the kernel need no decompressor)."""
    return re.sub(r"\.ko\.(xz|gz|zst)$", ".ko", rel)


def build_initramfs(version: str, modules_dir: Path | None, busybox: Path, writable: bool = False,
                    extra_copy: bool = False, kmod_modprobe: bool = False) -> tuple[bytes, list[str]]:
    """The gzip'd newc cpio and the names of the modules in it.

    The guest's /lib/modules/VERSION is a link to `modules_dir` as the guest sees it over 9p (every module,
    for modprobe), unless extra_copy: then the initramfs carries EXTRA_MODULES too and they are copied.
    kmod_modprobe: leave the kernel's modprobe (the host's kmod) instead of busybox's.
    """
    req, opt, every, names = _module_plan(modules_dir, writable, extra_copy)
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", f"lib/modules/{version}", "lower", "rw", "newroot"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in APPLETS:
        cpio.symlink(f"bin/{applet}", "busybox")
    marks = {"FAIL": FAILURE_MARKER, "EXIT": EXIT_MARKER, "HANDOFF": HANDOFF_MARKER, "FORMAT": str(KIT_FORMAT)}
    link = str(modules_dir.resolve()) if modules_dir is not None and not extra_copy else ""
    init = _render(INIT_TEMPLATE, VERSION=version, CACHE=DEFAULT_9P_CACHE, HOSTBB=str(busybox.resolve()),
                   MODLINK=link, KMODPROBE="1" if kmod_modprobe else "", REQUIRED=" ".join(_plain(p) for p in req),
                   OPTIONAL=" ".join(_plain(p) for p in opt), **marks)
    cpio.file("init", init.encode(), 0o755)
    cpio.file("stage2", _render(STAGE2_TEMPLATE, **marks).encode(), 0o755)
    for d in ("acpi", "acpi/PWRF"):
        cpio.dir(d)
    cpio.file("acpi/PWRF/00000080", POWER_BUTTON.encode(), 0o755)
    if modules_dir is not None and every:
        dep = parse_modules_dep(load_modules_dep(modules_dir, writable))
        made = {f"lib/modules/{version}"}
        dep_lines = []
        for rel in every:
            parts = rel.split("/")
            for k in range(1, len(parts)):
                d = f"lib/modules/{version}/" + "/".join(parts[:k])
                if d not in made:
                    cpio.dir(d)
                    made.add(d)
            cpio.file(f"lib/modules/{version}/{_plain(rel)}", strip_signature(read_module(modules_dir / rel)))
            deps = " ".join(_plain(d) for d in dep[module_name(rel)][1])
            dep_lines.append(f"{_plain(rel)}: {deps}".rstrip())
        for name in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
            if (modules_dir / name).exists():
                cpio.file(f"lib/modules/{version}/{name}", (modules_dir / name).read_bytes())
        cpio.file(f"lib/modules/{version}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0), names


def _inputs_digest(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            try:
                st = part.stat()
                digest.update(f"{part}:{st.st_size}:{st.st_mtime_ns}".encode())
            except FileNotFoundError:
                digest.update(f"{part}:missing".encode())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


def _prune(initrd: Path, keep: int) -> None:
    """Remove all but the newest `keep` initramfs images of this kernel (qemu reads them only at start)."""
    version = initrd.name.rsplit("-", 1)[0]
    images = sorted(initrd.parent.glob(f"{version}-*.cpio.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in images[keep:]:
        for path in (old, old.with_suffix(".modules")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pvh_kernel(vmlinuz: Path, cache_dir: Path, version: str) -> Path:
    """A cached uncompressed PVH vmlinux for `vmlinuz` when it has the PVH entry, else vmlinuz itself."""
    key = _inputs_digest(vmlinuz)
    target = cache_dir / "vmlinux" / f"vmlinux-{version}-{key}"
    if target.exists():
        return target
    no_pvh = target.with_suffix(".nopvh")
    if no_pvh.exists():
        return vmlinuz
    target.parent.mkdir(parents=True, exist_ok=True)
    elf = extract_vmlinux(vmlinuz)
    if elf is None or not _has_pvh_note(elf):
        no_pvh.touch()
        return vmlinuz
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(elf)
    os.replace(tmp, target)
    return target


def _host_kernel() -> tuple[Path, Path] | None:
    release = os.uname().release
    vmlinuz, modules = Path(f"/boot/vmlinuz-{release}"), Path(f"/lib/modules/{release}")
    if os.access(vmlinuz, os.R_OK) and modules.is_dir():
        return vmlinuz, modules
    return None


def ensure_kit(cache_dir: Path = DEFAULT_CACHE, kernel: Path | None = None, modules_dir: Path | None = None,
               use_host_kernel: bool = True, pvh: bool = True, refresh: bool = False) -> Kit:
    """The kernel and initramfs for guests, fetched and built once and cached under `cache_dir`.

    kernel/modules_dir: a user's kernel (a bzImage) and its lib/modules/RELEASE (default: /lib/modules/RELEASE
    from the bzImage's header, when it exists; without modules the kernel must have virtio, 9p and overlay
    built in). Otherwise the host's own kernel when readable, else Debian's package (apt-get download; the
    newest one cached is used without asking apt unless refresh=True).
    Raises PreflightError with one line when no kernel can be had.
    """
    cache_dir = Path(cache_dir)
    with _locked(cache_dir):
        if kernel is not None:
            kernel = Path(kernel)
            if not kernel.is_file():
                raise PreflightError(f"guest kernel {kernel} does not exist")
            version = kernel_release(kernel) or (modules_dir.name if modules_dir else kernel.name)
            if modules_dir is None and Path(f"/lib/modules/{version}").is_dir():
                modules_dir = Path(f"/lib/modules/{version}")
            source, vmlinuz, writable = "user", kernel, False
        elif use_host_kernel and _host_kernel() is not None:
            vmlinuz, modules_dir = _host_kernel()            # type: ignore[misc]
            version, source, writable = os.uname().release, "host", False
        else:
            root = fetch_debian_kernel(cache_dir, refresh)
            version = root.name
            vmlinuz = root / "boot" / f"vmlinuz-{version}"
            modules_dir = root / "lib" / "modules" / version
            source, writable = "debian", True
            if not vmlinuz.exists():
                raise PreflightError(f"the cached guest kernel {root} has no boot/vmlinuz-{version}; remove {root}")
        busybox = find_busybox()
        if modules_dir is not None and modules_dir.is_dir():
            load_modules_dep(modules_dir, writable)      # generated once for Debian's package
        boot = _pvh_kernel(vmlinuz, cache_dir, version) if pvh and kernel_release(vmlinuz) else vmlinuz
        dep_file = modules_dir / "modules.dep" if modules_dir else None
        key = _inputs_digest(KIT_FORMAT, version, busybox, modules_dir, dep_file, REQUIRED_MODULES,
                             OPTIONAL_MODULES, EXTRA_MODULES, INIT_TEMPLATE, STAGE2_TEMPLATE, POWER_BUTTON,
                             FAILURE_MARKER, EXIT_MARKER, HANDOFF_MARKER)
        initrd = cache_dir / "initrd" / f"{version}-{key}.cpio.gz"
        names_file = initrd.with_suffix(".modules")
        if not initrd.exists() or not names_file.exists():
            initrd.parent.mkdir(parents=True, exist_ok=True)
            data, built = build_initramfs(version, modules_dir, busybox, writable,
                                          extra_copy=modules_dir is None,
                                          kmod_modprobe=source == "host")
            tmp = initrd.with_suffix(".tmp")
            tmp.write_bytes(data)
            names_file.write_text("\n".join(built) + "\n")
            os.replace(tmp, initrd)
            _prune(initrd, keep=3)
        names = tuple(n for n in names_file.read_text().split() if n)
        return Kit(kernel=boot, initrd=initrd, version=version, modules_dir=modules_dir, source=source,
                   modules=names)
