"""File collection: files from nodes, as each node sees them, unpacked on the controller under DIR/NODE/PATH.

In every node `tar` packs the paths (through the host agent: its launcher for process nodes, the guest agent for
qemu nodes and nodes inside vhosts, whose files live in the VM's memory); the stream comes back over the agent's
exec channel into a temporary file beside DIR/NODE and is unpacked member by member under a directory fd,
following no link (control/tarsafe.py: no absolute paths, no `..`, no links out of the node's directory, no
devices: such members are skipped and named). Paths a node lacks are reported, not fatal.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestbed.control import tarsafe
from nestbed.errors import ExperimentError

PARALLEL = 8               # nodes packed at once
_CANNOT = re.compile(r"tar: (.+?): (?:Warning: )?Cannot (?:stat|open)")


@dataclass
class Collected:
    node: str
    files: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)      # paths the node does not have
    skipped: list[str] = field(default_factory=list)      # members not unpacked (links out, devices …)
    error: str | None = None


def check_paths(paths: list[str]) -> list[str]:
    """Absolute, normalized paths; one clear error for anything else."""
    if not paths:
        raise ExperimentError("name at least one path to collect, as the nodes see it, e.g. /var/log/syslog")
    checked = []
    for path in paths:
        if not path.startswith("/") or "\0" in path:
            raise ExperimentError(f"path {path!r} must be absolute, as the nodes see it (e.g. /tmp/{path.lstrip('/')})")
        normal = os.path.normpath(path)
        if normal == "/":
            raise ExperimentError("collecting / would copy the whole machine; name files or directories under it")
        checked.append(normal)
    return checked


def tar_command(paths: list[str]) -> list[str]:
    """What runs in the node: the paths relative to /, missing ones warned about, not fatal."""
    return ["tar", "-C", "/", "-cf", "-", "--ignore-failed-read", "--", *[p.lstrip("/") for p in paths]]


def missing_paths(stderr: str) -> list[str]:
    return ["/" + name.lstrip("/") for name in _CANNOT.findall(stderr)]


def unpack(archive_path: Path, target: Path) -> tuple[int, int, list[str]]:
    """Unpack a node's tar into target (made here); returns (files, bytes, skipped): members that could leave
    target (a link to an absolute path or out of the node's directory, a name with `..`, a device …) are skipped,
    by name."""
    unpacked = tarsafe.unpack(archive_path, target)
    return unpacked.files, unpacked.bytes, unpacked.skipped


def collect(exec_in: Any, nodes: list[str], paths: list[str], directory: Path) -> list[Collected]:
    """exec_in(node, argv, on_out, on_err) -> exit code runs argv in a node (HostAgentClient.exec does)."""
    paths = check_paths(paths)
    made = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)

    def one(node: str) -> Collected:
        result = Collected(node)
        errors = bytearray()
        with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{node}-", suffix=".tar") as archive:
            try:
                rc = exec_in(node, tar_command(paths), archive.write, errors.extend)
            except ExperimentError as error:
                result.error = str(error)
                return result
            archive.flush()
            stderr = errors.decode(errors="replace")
            result.missing = missing_paths(stderr)
            if rc not in (0, 1):           # 1: a file changed while it was read (tar says so; the copy is kept)
                result.error = f"tar exited with {rc}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}"
                return result
            if len(result.missing) < len(paths):
                try:
                    result.files, result.bytes, result.skipped = unpack(Path(archive.name), directory / node)
                except (tarfile.TarError, OSError) as error:      # a truncated stream, DIR/NODE not a directory
                    result.error = f"cannot unpack what {node} sent: {error}"
        return result

    with concurrent.futures.ThreadPoolExecutor(max(1, min(PARALLEL, len(nodes)))) as pool:
        results = list(pool.map(one, nodes))
    if made and not any(r.files for r in results):
        shutil.rmtree(directory, ignore_errors=True)      # nothing found anywhere: leave nothing behind
    return results
