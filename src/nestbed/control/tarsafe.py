"""Unpacking a node's tar as root without trusting it: member by member, under a directory fd, following no link.

The archives come from nodes, where anything may run, and are unpacked as root. tarfile's own "data" filter is
missing before Python 3.11.4 (Debian 12's python3 is 3.11.2) and before 3.11.13 it has the 2025 bypasses
(CVE-2025-4517 and kin: chains of links whose names look inside, long names that defeat realpath at PATH_MAX).
So nothing here resolves a path or calls TarFile.extract:

- the target is opened once (O_DIRECTORY | O_NOFOLLOW); each member's parents are made and entered one component at
  a time relative to it (mkdir and open with dir_fd, O_NOFOLLOW): a component that is a link stops the member;
- files are created with O_CREAT | O_EXCL | O_NOFOLLOW and filled from the archive's own data;
- names lose leading '/'; a name with '..' or NUL is skipped;
- a symlink is made only when its target is relative and can only stay inside: some leading '..' (no more than
  the link's depth), then names only. Since links are never made in place of a directory, every link's
  ancestors are real directories, so following any chain of such links never leaves the target;
- a hard link becomes a copy of the member it names (from the archive, never from the disk), if it is there;
- devices, FIFOs and anything else are skipped; set-id bits are dropped; files belong to whoever unpacks.

Skipped members are returned by name ("/" + their name in the archive).
"""
from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Unpacked:
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


class _Skip(Exception):
    """This member is not unpacked."""


def unpack(archive_path: Path, target: Path) -> Unpacked:
    """Unpack the tar at archive_path under target (which must be a real directory, made if missing)."""
    target.mkdir(parents=True, exist_ok=True)
    result = Unpacked()
    root = os.open(target, DIR_FLAGS)
    try:
        with tarfile.open(archive_path) as archive:
            for member in archive:
                try:
                    result.bytes += _unpack_member(archive, member, root)
                    result.files += member.isfile() or member.islnk()
                except (_Skip, OSError, KeyError, tarfile.TarError):
                    result.skipped.append("/" + member.name)
    finally:
        os.close(root)
    return result


def components(name: str) -> list[str]:
    """The member's path under the target, one component each; _Skip when it could leave the target."""
    if "\0" in name:
        raise _Skip
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise _Skip
    return parts


def link_stays_inside(parts: list[str], linkname: str) -> bool:
    """A symlink at `parts` to `linkname` is kept when following it cannot leave the target: relative, some leading
    '..' (at most the link's depth), then names only (a '..' after a name may climb out of another link)."""
    if not linkname or linkname.startswith("/") or "\0" in linkname:
        return False
    steps = [step for step in linkname.split("/") if step not in ("", ".")]
    ups = 0
    while ups < len(steps) and steps[ups] == "..":
        ups += 1
    return ".." not in steps[ups:] and ups <= len(parts) - 1


def _unpack_member(archive: tarfile.TarFile, member: tarfile.TarInfo, root: int) -> int:
    """Make one member under root; returns the bytes written."""
    parts = components(member.name)
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise _Skip                 # devices, FIFOs, whatever else
    if member.issym() and not link_stays_inside(parts, member.linkname):
        raise _Skip
    if member.islnk():
        components(member.linkname)       # named like a member: inside, no '..'
    parent = _enter(root, parts[:-1])
    try:
        leaf = parts[-1]
        if member.isdir():
            _make_directory(parent, leaf, member.mode)
            return 0
        if member.issym():
            _replace_leaf(parent, leaf, lambda: os.symlink(member.linkname, leaf, dir_fd=parent))
            return 0
        return _write_file(archive, member, parent, leaf)
    finally:
        if parent != root:
            os.close(parent)


def _enter(root: int, parents: list[str]) -> int:
    """A directory fd for the parents of a member (made 0700 when missing); _Skip at a link or a non-directory."""
    current = root
    try:
        for part in parents:
            try:
                os.mkdir(part, 0o700, dir_fd=current)
            except FileExistsError:
                pass
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=current)
            except OSError:             # ELOOP: a link; ENOTDIR: a file
                raise _Skip from None
            if current != root:
                os.close(current)
            current = child
    except BaseException:
        if current != root:
            os.close(current)
        raise
    return current


def _make_directory(parent: int, leaf: str, mode: int) -> None:
    try:
        os.mkdir(leaf, 0o700, dir_fd=parent)
    except FileExistsError:
        pass
    fd = os.open(leaf, DIR_FLAGS, dir_fd=parent)        # a link in its place: ELOOP, skipped
    try:
        os.fchmod(fd, (mode & 0o755) | 0o700)
    finally:
        os.close(fd)


def _replace_leaf(parent: int, leaf: str, make: Callable[[], object]) -> None:
    """make() the leaf; a file or link already there (a later copy in the archive) is replaced, a directory is not."""
    try:
        make()
    except FileExistsError:
        os.unlink(leaf, dir_fd=parent)      # a directory: IsADirectoryError, the member is skipped
        make()


def _write_file(archive: tarfile.TarFile, member: tarfile.TarInfo, parent: int, leaf: str) -> int:
    source = archive.extractfile(member)    # a hard link: the data of the member it names (KeyError if none)
    if source is None:
        raise _Skip
    holder: list[int] = []
    _replace_leaf(parent, leaf, lambda: holder.append(os.open(leaf, FILE_FLAGS, 0o600, dir_fd=parent)))
    fd, written = holder[0], 0
    try:
        while chunk := source.read(CHUNK):
            view = memoryview(chunk)
            while view:
                done = os.write(fd, view)
                view, written = view[done:], written + done
        os.fchmod(fd, (member.mode & 0o755) | 0o600)
        try:
            os.utime(fd, (member.mtime, member.mtime))
        except (OSError, OverflowError, ValueError):       # a time the filesystem cannot hold: keep now
            pass
    finally:
        os.close(fd)
    return written
