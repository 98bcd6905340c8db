"""The initramfs nestbed builds for a guest: busybox, the kernel modules it needs, and the init scripts.

The scripts are shell templates shipped as package data (templates/*.sh); `@KEY@` in them is filled in by
`build_initramfs`. A built image is cached as CACHE/initrd/RELEASE-KEY.cpio.gz, KEY a digest of every input,
the templates' text included, so editing a template builds a new image.
"""
from __future__ import annotations

import gzip
import os
import re
from importlib import resources
from pathlib import Path

from nestbed.errors import PreflightError
from nestbed.realize.guestkit.cache import inputs_digest
from nestbed.realize.guestkit.cpio import Cpio
from nestbed.realize.guestkit.modules import (
    load_modules_dep,
    module_name,
    parse_modules_dep,
    read_builtin,
    read_module,
    resolve,
    strip_signature,
)
from nestbed.realize.guestkit.protocol import DEFAULT_9P_CACHE, EXIT_MARKER, FAILURE_MARKER, HANDOFF_MARKER

KIT_FORMAT = 10                                 # bump when the init or the layout changes

# Loaded at boot, in this order, each with its dependencies; a missing required one fails the guest.
REQUIRED_MODULES = ("virtio_pci", "virtio_mmio", "virtio_net", "9pnet_virtio", "9p", "overlay", "qemu_fw_cfg")
# Loaded at boot when the kernel has them; what the guest agent needs for LANs, links and shaping.
OPTIONAL_MODULES = ("bridge", "veth", "sch_netem", "sch_htb", "sch_tbf", "8021q", "tun", "evdev", "button")
# Copied into the initramfs (and so /lib/modules in the guest) for modprobe, not loaded at boot.
EXTRA_MODULES = ("sch_prio", "sch_red", "sch_sfq", "sch_pie", "ifb", "act_mirred", "cls_u32", "cls_fw",
                 "cls_matchall", "em_u32", "br_netfilter", "vxlan", "macvlan", "ipip", "ip_gre", "dummy",
                 "nf_tables")            # attack counters (agent/guest.py loads it on the first counters request)

BUSYBOX_CANDIDATES = ("/usr/bin/busybox", "/bin/busybox")
APPLETS = ("sh", "mount", "umount", "mkdir", "insmod", "modprobe", "switch_root", "poweroff", "reboot", "cat",
           "echo", "cp", "ln", "base64", "hostname", "sleep", "sync", "tr", "ls", "ip", "dmesg")

# The init (stage 1, in the initramfs), stage 2 (PID 1 in the host root overlay) and the ACPI power button
# handler; in this order in the cache key.
TEMPLATES = ("init.sh", "stage2.sh", "power-button.sh")


def template(name: str) -> str:
    """The text of one of TEMPLATES, as shipped in the package."""
    return (resources.files("nestbed.realize.guestkit") / "templates" / name).read_text(encoding="utf-8")


def render(text: str, **values: str) -> str:
    """`text` with each `@KEY@` replaced by values[KEY] as it is (the templates quote where they use it)."""
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


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
                             f"kernel does not have them built in; give a kernel with virtio, 9p, overlayfs and "
                             f"qemu_fw_cfg")
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
    init = render(template("init.sh"), VERSION=version, CACHE=DEFAULT_9P_CACHE, HOSTBB=str(busybox.resolve()),
                   MODLINK=link, KMODPROBE="1" if kmod_modprobe else "", REQUIRED=" ".join(_plain(p) for p in req),
                   OPTIONAL=" ".join(_plain(p) for p in opt), **marks)
    cpio.file("init", init.encode(), 0o755)
    cpio.file("stage2", render(template("stage2.sh"), **marks).encode(), 0o755)
    for d in ("acpi", "acpi/PWRF"):
        cpio.dir(d)
    cpio.file("acpi/PWRF/00000080", template("power-button.sh").encode(), 0o755)
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


def initramfs_key(version: str, busybox: Path, modules_dir: Path | None) -> str:
    """The digest in a cached initramfs's name: every input of build_initramfs, the templates' text included."""
    dep_file = modules_dir / "modules.dep" if modules_dir else None
    return inputs_digest(KIT_FORMAT, version, busybox, modules_dir, dep_file, REQUIRED_MODULES, OPTIONAL_MODULES,
                         EXTRA_MODULES, *(template(name) for name in TEMPLATES), FAILURE_MARKER, EXIT_MARKER,
                         HANDOFF_MARKER)


def cached_initramfs(cache_dir: Path, version: str, modules_dir: Path | None, busybox: Path, writable: bool,
                     kmod_modprobe: bool) -> tuple[Path, tuple[str, ...]]:
    """CACHE/initrd/RELEASE-KEY.cpio.gz (built unless cached) and the names of the modules in it.

    The caller holds the cache lock. Without modules_dir the initramfs carries EXTRA_MODULES (copy, no link).
    """
    initrd = cache_dir / "initrd" / f"{version}-{initramfs_key(version, busybox, modules_dir)}.cpio.gz"
    names_file = initrd.with_suffix(".modules")
    if not initrd.exists() or not names_file.exists():
        initrd.parent.mkdir(parents=True, exist_ok=True)
        data, built = build_initramfs(version, modules_dir, busybox, writable, extra_copy=modules_dir is None,
                                      kmod_modprobe=kmod_modprobe)
        tmp = initrd.with_suffix(".tmp")
        tmp.write_bytes(data)
        names_file.write_text("\n".join(built) + "\n")
        os.replace(tmp, initrd)
        _prune(initrd, keep=3)
    return initrd, tuple(n for n in names_file.read_text().split() if n)


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
