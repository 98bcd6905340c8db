"""What a VM sees of the host: a read-only allowlist, built per VM in a private mount namespace for its qemu.

The guest's root (one virtio-9p share, an overlay on it in the guest) is a tmpfs that exists only in the mount
namespace of that VM's qemu: the host's program and library trees bound into it read-only at their own paths,
the interpreter and the packages nestbed runs with, nestbed's source, the guest kernel's modules, a generated
/etc, and copies of the few files of the VM's own (its guest.json, the hosts file, its nodes' identity files).
Nothing else of the host exists there: no /root, /home, /var/lib/nestbed, other VMs' or experiments' files, no
shadow or host keys. qemu's 9p server walks paths without following symlinks on the host (a link is handed to
the guest, which resolves it in its own tree), so a link cannot lead out of the allowlist.

`plan` is pure data (unit-tested); `launch_inside` makes the namespace and the tree in a thread of its own and
starts qemu from that thread, so the tree lives exactly as long as qemu and the host's mounts never change.
"""
from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nestbed.realize import syscalls

MS_NOSUID, MS_NODEV, MS_REMOUNT = 0x2, 0x4, 0x20
T = TypeVar("T")

# Program and library trees (each bound when it is a directory, recreated when it is a link, as /lib → usr/lib).
SYSTEM_TREES = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr/bin", "/usr/sbin", "/usr/lib",
                "/usr/lib32", "/usr/lib64", "/usr/libx32", "/usr/libexec", "/usr/share", "/usr/local")
# Public tables of the host's /etc that programs read (names of protocols and services, the dynamic linker's
# cache, which alternative /usr/bin/awk or iptables is): copied. Nothing else of the host's /etc is seen.
ETC_TABLES = ("protocols", "services", "ethertypes", "ld.so.cache")
ETC_LINK_DIRS = ("alternatives",)          # directories of symlinks only: recreated link by link
ETC_LINKS = ("localtime",)
EMPTY_DIRS = ("/root", "/tmp", "/var/tmp", "/run", "/dev", "/proc", "/sys", "/var/emulab")
RUN_LINKS = ("/var/run", "/var/lock")      # into /run on most systems (pyroute2 finds namespaces in /var/run/netns)


@dataclass(frozen=True)
class Entry:
    """One thing in the guest's tree: `bind` (a host tree, read-only), `link` (a symlink), `file` (contents)."""
    kind: str
    path: str                 # absolute, as the guest sees it
    source: str = ""          # bind: the host directory; link: the target
    data: bytes = b""         # file
    mode: int = 0o644


def generated_etc(hostname: str, hosts: str) -> list[Entry]:
    """The guest's own /etc: users and groups root and nobody, its names, no name server."""
    files = {
        "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": "root:x:0:\nnogroup:x:65534:\n",
        "hostname": f"{hostname}\n",
        "hosts": hosts or f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n",
        "resolv.conf": "# nestbed: an experiment has no name server; names are in /etc/hosts\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n"
                         "protocols: files\nservices: files\nethers: files\nrpc: files\n",
    }
    return [Entry("file", f"/etc/{name}", data=text.encode()) for name, text in files.items()]


def host_etc(etc: Path = Path("/etc")) -> list[Entry]:
    entries = []
    for name in ETC_TABLES:
        path = etc / name
        if path.is_file() and not path.is_symlink():
            entries.append(Entry("file", f"/etc/{name}", data=path.read_bytes()))
    for name in ETC_LINKS:
        if (etc / name).is_symlink():
            entries.append(Entry("link", f"/etc/{name}", source=os.readlink(etc / name)))
    for name in ETC_LINK_DIRS:
        if (etc / name).is_dir():
            entries += [Entry("link", f"/etc/{name}/{link.name}", source=os.readlink(link))
                        for link in sorted((etc / name).iterdir()) if link.is_symlink()]
    return entries


def python_trees() -> list[str]:
    """The interpreter's prefixes (its stdlib; a venv's packages, bin and pyvenv.cfg), the packages nestbed
    runs with and nestbed's own source; a prefix of the system's own (/usr) is left to SYSTEM_TREES."""
    import sysconfig

    import nestbed
    paths = sysconfig.get_paths()
    trees = [sys.base_prefix, sys.prefix, paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"],
             str(Path(nestbed.__file__).resolve().parents[1]), os.path.dirname(sys.executable),
             os.path.dirname(os.path.realpath(sys.executable))]
    return [os.path.realpath(tree) for tree in trees]


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def plan(trees: Iterable[str], files: Iterable[tuple[str, str]], etc: list[Entry]) -> list[Entry]:
    """The guest's tree: the system trees and `trees` (host directories, bound at their own paths; a tree inside
    another is dropped, and so is one that holds a system tree, as /usr or /), `files` ((host file, guest path),
    copied), `etc`, and the empty directories guests use."""
    entries: list[Entry] = []
    bound: list[str] = []
    wanted = [*SYSTEM_TREES, *(t for t in trees if not any(_inside(s, t) for s in SYSTEM_TREES))]
    for path in sorted(set(wanted), key=lambda p: (p.count("/"), p)):
        if any(_inside(path, b) for b in bound):
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode) and path in SYSTEM_TREES:
            entries.append(Entry("link", path, source=os.readlink(path)))
        elif stat.S_ISDIR(info.st_mode):
            entries.append(Entry("bind", path, source=path))
            bound.append(path)
    own = [entry for source, path in files for entry in copies(source, path)]
    own += etc
    own += [Entry("dir", path, mode=0o1777 if path.endswith("tmp") else 0o755) for path in EMPTY_DIRS]
    own += [Entry("link", path, source=os.readlink(path)) if os.path.islink(path) else Entry("dir", path, mode=0o755)
            for path in RUN_LINKS]
    for entry in own:
        if any(_inside(entry.path, b) for b in bound):
            raise ValueError(f"{entry.path} is inside {next(b for b in bound if _inside(entry.path, b))}, "
                             f"which the guest sees read-only from the host")
    return entries + own


def copies(source: str, path: str) -> list[Entry]:
    """A host file, or a directory's files and links (recursively), copied to `path` in the guest's tree."""
    if not os.path.isdir(source) or os.path.islink(source):
        return [Entry("file", path, data=Path(source).read_bytes())]
    entries = [Entry("dir", path, mode=0o755)]
    for item in sorted(os.scandir(source), key=lambda e: e.name):
        if item.is_symlink():
            entries.append(Entry("link", f"{path}/{item.name}", source=os.readlink(item.path)))
        else:
            entries += copies(item.path, f"{path}/{item.name}")
    return entries


def build(root: str, entries: list[Entry]) -> None:
    """Make the tree at `root` (a fresh tmpfs) in this thread's mount namespace, then make it read-only.

    Everything is made in the tmpfs before the first bind mount, and no path may resolve outside `root`:
    nothing here writes to a host file system."""
    syscalls.mount("nestbed-guest-root", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    binds = []
    for entry in entries:
        target = root + entry.path
        parent = os.path.dirname(target)
        os.makedirs(parent, 0o755, exist_ok=True)
        if not _inside(os.path.realpath(parent), root):
            raise ValueError(f"{entry.path}: its directory leads out of the guest's tree")
        if entry.kind == "bind":
            os.mkdir(target, 0o755)
            binds.append((entry.source, target))
        elif entry.kind == "link":
            os.symlink(entry.source, target)
        elif entry.kind == "file":
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, entry.mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(entry.data)
        else:
            os.makedirs(target, entry.mode, exist_ok=True)
            os.chmod(target, entry.mode)
    flags = syscalls.MS_BIND | MS_REMOUNT | syscalls.MS_RDONLY | MS_NOSUID | MS_NODEV
    for source, target in binds:
        syscalls.mount(source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
        syscalls.mount(None, target, None, flags)
    syscalls.mount(None, root, None, MS_REMOUNT | syscalls.MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755")


def launch_inside(root: Path, entries: list[Entry], start: Callable[[], T]) -> T:
    """start() in a new mount namespace (of this thread only) that has the tree at `root`; returns what it
    returned. Mounts made there never propagate to the host's namespace."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            build(str(root), entries)
            outcome.append(start())
        except BaseException as error:  # noqa: BLE001 -- re-raised in the caller's thread
            outcome.append(error)

    thread = threading.Thread(target=run, name=f"vm-root-{root.parent.name}")
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]
