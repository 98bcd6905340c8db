"""The guest boot kit for qemu nodes: a kernel and a small initramfs that nestbed builds, no disk image.

The kernel is the host's own when /boot/vmlinuz-$(uname -r) and its modules are readable, else Debian's
`linux-image-*-amd64` package that `linux-image-amd64` depends on, fetched with `apt-get download` and unpacked
(never installed) under CACHE/kernel/RELEASE/; a user may give one (`ensure_kit(kernel=..., modules_dir=...)`).

The initramfs (CACHE/initrd/RELEASE-HASH.cpio.gz, rebuilt when any input changes) holds busybox-static, the
kernel modules the guest needs with every dependency (resolved from modules.dep; generated from the modules'
own `.modinfo` when a Debian package ships none) and an /init (templates/init.sh, then stage2.sh) that:

  1. mounts /proc /sys /dev, loads the modules in dependency order;
  2. mounts the tree the host exports read-only over virtio-9p (mount_tag `hostroot`: for nestbed's VMs an
     allowlist, realize/qemu/export.py) and an overlay on it whose upper
     layer is a tmpfs, so the guest can write anywhere (/etc/hosts, /var/emulab/boot) and the host sees nothing;
  3. fresh tmpfs on /run and /dev/shm, devpts, the modules under /lib/modules/RELEASE (and busybox's
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

Module map: protocol (command-line items in, console markers out) · kernel (host's, Debian's, PVH vmlinux) ·
modules (modules.dep, .modinfo, signatures) · cpio · initramfs (the image, templates/*.sh, its cache key) ·
cache (lock, input digests) · this module: the Kit and `ensure_kit`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nestbed.errors import PreflightError
from nestbed.realize.guestkit.cache import locked
from nestbed.realize.guestkit.initramfs import cached_initramfs, find_busybox
from nestbed.realize.guestkit.kernel import fetch_debian_kernel, host_kernel, kernel_release, pvh_kernel
from nestbed.realize.guestkit.modules import load_modules_dep

DEFAULT_CACHE = Path("/var/cache/nestbed")


@dataclass(frozen=True)
class Kit:
    kernel: Path                 # what qemu's -kernel boots (an uncompressed PVH vmlinux when one is cached)
    initrd: Path
    version: str                 # kernel release, e.g. 6.1.0-50-amd64
    modules_dir: Path | None = None       # lib/modules/RELEASE the modules came from
    source: str = "debian"                # debian | host | user
    modules: tuple[str, ...] = field(default=())   # module names in the initramfs (deps included)


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
    with locked(cache_dir):
        if kernel is not None:
            kernel = Path(kernel)
            if not kernel.is_file():
                raise PreflightError(f"guest kernel {kernel} does not exist")
            version = kernel_release(kernel) or (modules_dir.name if modules_dir else kernel.name)
            if modules_dir is None and Path(f"/lib/modules/{version}").is_dir():
                modules_dir = Path(f"/lib/modules/{version}")
            source, vmlinuz, writable = "user", kernel, False
        elif use_host_kernel and host_kernel() is not None:
            vmlinuz, modules_dir = host_kernel()            # type: ignore[misc]
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
        boot = pvh_kernel(vmlinuz, cache_dir, version) if pvh and kernel_release(vmlinuz) else vmlinuz
        initrd, names = cached_initramfs(cache_dir, version, modules_dir, busybox, writable,
                                         kmod_modprobe=source == "host")
        return Kit(kernel=boot, initrd=initrd, version=version, modules_dir=modules_dir, source=source,
                   modules=names)
