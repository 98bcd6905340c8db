"""Unpacking a node's tar safely: tarfile's "data" filter, or the same rules where the interpreter lacks it.

tarfile.data_filter came with Python 3.11.4 (and 3.12); Debian 12's own python3 is 3.11.2. The rules kept here
are the filter's: no absolute names (the leading / is dropped), nothing outside the target, no links to absolute
paths or out of the target, no device files or FIFOs, no set-id bits, owned by whoever unpacks.
"""
from __future__ import annotations

import copy
import os
import tarfile
from pathlib import Path

HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def safe_member(member: tarfile.TarInfo, target: str) -> tarfile.TarInfo | None:
    """The member as it may be unpacked under target, or None when it must be skipped."""
    if HAS_DATA_FILTER:
        try:
            return tarfile.data_filter(member, target)
        except tarfile.FilterError:
            return None
    return _filtered(member, target)


def extract(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Unpack a member that safe_member returned (it is already filtered: no second filter)."""
    if HAS_DATA_FILTER:
        archive.extract(member, target, filter="fully_trusted")
    else:
        archive.extract(member, target, set_attrs=not member.issym())


def _inside(path: str, target: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), target]) == target


def _filtered(member: tarfile.TarInfo, target: str) -> tarfile.TarInfo | None:
    target = os.path.realpath(target)
    name = member.name.lstrip("/" + os.sep)
    if not name or not _inside(os.path.join(target, name), target):
        return None
    if member.ischr() or member.isblk() or member.isfifo() or not (member.isfile() or member.isdir()
                                                                    or member.issym() or member.islnk()):
        return None
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            return None
        base = os.path.dirname(os.path.join(target, name)) if member.issym() else target
        if not _inside(os.path.join(base, member.linkname), target):
            return None
    safe = copy.copy(member)
    safe.name = name
    safe.mode = (member.mode & 0o755) | (0o600 if member.isfile() else 0o700 if member.isdir() else 0)
    safe.uid, safe.gid = os.getuid(), os.getgid()
    safe.uname = safe.gname = ""
    return safe
