"""nestbed brings itself to a real host: this controller's own nestbed and the pure-Python packages its host side
needs, as one tarball, unpacked once per version into the host's state root and run by the host's python3.

    made = bundle.build()                   # Bundle: its id (content hash), files, the tarball (cached here)
    dir = await bundle.ensure(conn, made, python="python3", state_dir=None)    # over an open asyncssh connection

Why not a wheel into a venv there: a host need not have pip, python3-venv or a package index (lab hosts often
have no internet); the host side (agent, realizer, `nestbed shell`) needs only pure-Python packages, so copying
the controller's exact files runs the exact same code. Compiled packages (numpy, pymetis, matplotlib,
cryptography) serve the controller only (embedding, plots, the SSH client) and are left out; PyYAML goes without
its optional C loader.

On the host: `<state root>/bundles/<id>/` (the state root is the host's NESTBED_STATE_DIR, or the cluster file's
`state_dir`, else /var/lib/nestbed), made atomically (unpacked beside it, then renamed) and marked complete; an
id is a hash of every file's path and bytes, so a changed file is a new id and a present id is never rewritten.
Bundles stay, as an installed package does: running experiments' agents import from theirs. Remove
`<state root>/bundles` on a host to uninstall.

Both steps are one exec session each on the host's one connection (a check, then the unpack reading the tarball
on stdin), before the agent's session starts.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from nestbed import __version__, paths
from nestbed.errors import ExperimentError

# The controller's alone: the embedder, plots, the SSH client and what they pull in.
CONTROLLER_ONLY = {"asyncssh", "networkx", "matplotlib", "numpy", "pymetis", "rapidyaml"}
OPTIONAL_COMPILED = {"pyyaml"}       # pure Python without its compiled part (yaml falls back to its own loader)
MIN_PYTHON = (3, 11)
INSTALL_SECONDS = 120.0
DEFAULT_STATE_ROOT = "/var/lib/nestbed"
MARK = ".complete"


@dataclass(frozen=True)
class Bundle:
    id: str                       # <version>-<12 hex digits of the content hash>
    files: dict[str, Path]        # path in the bundle → file here
    tarball: Path
    left_out: tuple[str, ...]     # distributions not brought (compiled, or the controller's alone)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: metadata.Distribution) -> list[str]:
    names = []
    for requirement in dist.requires or []:
        if "extra ==" in requirement:
            continue
        found = re.match(r"[A-Za-z0-9][A-Za-z0-9_.-]*", requirement)
        if found:
            names.append(found.group(0))
    return names


def host_files() -> tuple[dict[str, Path], tuple[str, ...]]:
    """What a host needs: nestbed's package directory, then its requirements' files, recursively, without the
    controller's own and compiled ones."""
    import nestbed
    package = Path(nestbed.__file__).parent
    files = {str(Path("nestbed") / p.relative_to(package)): p for p in sorted(package.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    left_out: list[str] = []
    seen = {"nestbed"}
    todo = _requirements(metadata.distribution("nestbed"))
    while todo:
        name = _normalized(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue                      # a requirement for another platform (colorama on Windows)
        listed = [f for f in dist.files or [] if "__pycache__" not in f.parts and f.suffix != ".pyc"
                  and not str(f).startswith("..")]                  # scripts in bin/ are the controller's
        compiled = any(f.suffix in (".so", ".pyd") for f in listed)
        if name in CONTROLLER_ONLY or (compiled and name not in OPTIONAL_COMPILED):
            left_out.append(name)
            continue
        for f in listed:
            if f.suffix in (".so", ".pyd") or f.name in ("RECORD", "INSTALLER", "direct_url.json"):
                continue
            files[str(f)] = Path(str(dist.locate_file(f)))
        todo += _requirements(dist)
    return files, tuple(sorted(left_out))


def build(cache: Path | None = None) -> Bundle:
    """The bundle of this controller's nestbed (its tarball made once per id, under the state root)."""
    files, left_out = host_files()
    digest = hashlib.sha256()
    contents: dict[str, bytes] = {}
    for name in sorted(files):
        data = files[name].read_bytes()
        contents[name] = data
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    ident = f"{__version__}-{digest.hexdigest()[:12]}"
    directory = cache or paths.state_root() / "bundles"
    tarball = directory / f"nestbed-{ident}.tar.gz"
    if not tarball.exists():
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
            for name in sorted(contents):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(contents[name]), 0o644, 0
                tar.addfile(info, io.BytesIO(contents[name]))
        partial = tarball.with_name(f"{tarball.name}.{os.getpid()}")
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, tarball)        # whole or absent: another controller may build the same at once
    return Bundle(ident, files, tarball, left_out)


def root_expression(state_dir: str | None) -> str:
    """The host's state root in sh: the cluster file's, else the host's NESTBED_STATE_DIR, else the default."""
    return shlex.quote(state_dir) if state_dir else f'"${{NESTBED_STATE_DIR:-{DEFAULT_STATE_ROOT}}}"'


def check_script(bundle_id: str, python: str, state_dir: str | None) -> str:
    """Prints `python X.Y.Z` (or `nopython`), the bundle's directory there, and `present` or `absent`."""
    return "; ".join([
        f"d={root_expression(state_dir)}/bundles/{bundle_id}",
        f"if command -v {shlex.quote(python)} >/dev/null 2>&1; then {shlex.quote(python)} -c "
        f"'import sys; print(\"python\", \"%d.%d.%d\" % sys.version_info[:3])'; else echo nopython; fi",
        'echo "dir $d"',
        f'if [ -f "$d/{MARK}" ]; then echo present; else echo absent; fi',
    ])


def install_script(directory: str) -> str:
    """Unpacks the tarball on stdin beside the directory, marks it complete, renames it into place (a concurrent
    install of the same id that won leaves ours to remove)."""
    d = shlex.quote(directory)
    part = shlex.quote(f"{directory}.part") + ".$$"
    return (f"set -e; mkdir -p {part}; tar -xzf - -C {part}; touch {part}/{MARK}; "
            f"if ! mv -T {part} {d} 2>/dev/null; then rm -rf {part}; test -f {d}/{MARK}; fi")


@dataclass(frozen=True)
class Checked:
    python: str | None         # X.Y.Z, None when there is no such interpreter
    directory: str
    present: bool


def parse_check(output: str) -> Checked:
    python, directory, present = None, "", False
    for line in output.splitlines():
        if line.startswith("python "):
            python = line.split()[1]
        elif line.startswith("dir "):
            directory = line[4:].strip()
        elif line.strip() == "present":
            present = True
    if not directory:
        raise ExperimentError(f"unexpected answer to the install check: {output.strip()[:200]!r}")
    return Checked(python, directory, present)


def refuse_python(label: str, python: str, found: str | None) -> None:
    """One line when the host's interpreter cannot run this nestbed."""
    need = ".".join(map(str, MIN_PYTHON))
    if found is None:
        raise ExperimentError(f"{label} has no {python}: nestbed {__version__} needs Python {need} or newer there "
                              f"(Debian 12: apt-get install python3), or set python: in the cluster file")
    if tuple(int(part) for part in found.split(".")[:2]) < MIN_PYTHON:
        raise ExperimentError(f"{label}: its {python} is Python {found}; nestbed {__version__} needs {need} or "
                              f"newer there: install a newer python3, or set python: to one in the cluster file")


async def ensure(conn: Any, made: Bundle, label: str, python: str, state_dir: str | None) -> str:
    """The bundle's directory on the host behind `conn` (an asyncssh connection), unpacked there if absent."""
    import asyncio
    result = await asyncio.wait_for(conn.run(check_script(made.id, python, state_dir), check=False), 30.0)
    if result.exit_status != 0:
        said = str(result.stderr or "").strip().splitlines()
        raise ExperimentError(f"{label}: the install check failed: {said[-1] if said else result.exit_status}")
    checked = parse_check(str(result.stdout))
    refuse_python(label, python, checked.python)
    if not checked.present:
        result = await asyncio.wait_for(
            conn.run(install_script(checked.directory), input=made.tarball.read_bytes(), encoding=None,
                     check=False), INSTALL_SECONDS)
        if result.exit_status != 0:
            said = (result.stderr or b"").decode(errors="replace").strip().splitlines()
            raise ExperimentError(f"{label}: cannot install nestbed {made.id} in {checked.directory}: "
                                  f"{said[-1] if said else f'exit {result.exit_status}'}")
    return checked.directory
