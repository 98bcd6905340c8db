"""The guest kernel: the host's own, or Debian's package fetched with apt and unpacked (never installed) under
CACHE/kernel/RELEASE/, and the uncompressed PVH vmlinux inside a bzImage that qemu boots faster."""
from __future__ import annotations

import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from nestbed.errors import PreflightError
from nestbed.realize.guestkit.cache import inputs_digest


def guest_kernel() -> Path | None:
    """A user's own guest kernel (bzImage), from NESTBED_GUEST_KERNEL; None: the host's or Debian's."""
    value = os.environ.get("NESTBED_GUEST_KERNEL")
    return Path(value) if value else None


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
        raise PreflightError(f"cannot look up Debian's guest kernel (apt-cache depends linux-image-amd64): "
                             f"{err}") from None
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


def host_kernel() -> tuple[Path, Path] | None:
    """(/boot/vmlinuz-RELEASE, /lib/modules/RELEASE) of the running kernel when both are readable."""
    release = os.uname().release
    vmlinuz, modules = Path(f"/boot/vmlinuz-{release}"), Path(f"/lib/modules/{release}")
    if os.access(vmlinuz, os.R_OK) and modules.is_dir():
        return vmlinuz, modules
    return None


def pvh_kernel(vmlinuz: Path, cache_dir: Path, version: str) -> Path:
    """A cached uncompressed PVH vmlinux for `vmlinuz` when it has the PVH entry, else vmlinuz itself."""
    key = inputs_digest(vmlinuz)
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
