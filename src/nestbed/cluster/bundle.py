"""nestbed brings itself to a real host: this controller's own nestbed and the pure-Python packages its host side
needs, as one tarball, unpacked once per version into the host's state root and run by the host's python3.

    made = bundle.build()                   # Bundle: its id (content hash), files, the tarball (cached here)
    dir = await bundle.ensure(conn, made, python="python3", state_dir=None)    # over an open asyncssh connection

Why not a wheel into a venv there: a host need not have pip, python3-venv or a package index (lab hosts often
have no internet); copying the controller's exact files runs the exact same code. The controller's own packages
(numpy, pymetis, matplotlib, networkx, the SSH client, aiohttp: embedding, plots, SSH, the web view) are left out,
and so is nestbed's own web/ (the web view, with its npm libraries: 16 MB that no host runs); PyYAML goes without
its optional C loader. The host side's compiled packages (grpcio and protobuf, for the etcd engine's agent) come
as a second tarball, unpacked into `<bundle>/compiled/<abi>/`, only to a host whose Python has the controller's
ABI (`cpython-311` on the same machine type): nestbed/__init__.py puts that directory on sys.path when it is there.
Elsewhere the pure part runs everything but the etcd agent, which then says that its client is missing.

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
import sys
import tarfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from nestbed import __version__, paths
from nestbed.errors import ExperimentError

# The controller's alone: the embedder, plots, the SSH client, the web server and what they pull in.
CONTROLLER_ONLY = {"asyncssh", "networkx", "matplotlib", "numpy", "pymetis", "rapidyaml", "aiohttp"}
# nestbed's own packages that run on the controller alone (web/: the web view and its node_modules)
CONTROLLER_ONLY_PACKAGES = {"web"}
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
    left_out: tuple[str, ...]     # distributions not brought (the controller's alone)
    compiled: dict[str, Path] = field(default_factory=dict)   # compiled distributions' files (under compiled/<abi>/)
    compiled_tarball: Path | None = None
    abi: str = ""                 # this controller's Python ABI and machine, e.g. cpython-311-x86_64


def abi() -> str:
    """This interpreter's ABI and machine type: compiled modules run where both are the same."""
    return f"{sys.implementation.cache_tag}-{os.uname().machine}"


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


def ships(relative: Path) -> bool:
    """Whether a file of nestbed's package directory (relative to it) goes to hosts."""
    return (relative.parts[0] not in CONTROLLER_ONLY_PACKAGES and "__pycache__" not in relative.parts
            and relative.suffix != ".pyc")


def host_files() -> tuple[dict[str, Path], dict[str, Path], tuple[str, ...]]:
    """What a host needs: nestbed's package directory and its requirements' files, recursively, without the
    controller's own: (pure files, compiled distributions' files, what was left out)."""
    import nestbed
    package = Path(nestbed.__file__).parent
    files = {str(Path("nestbed") / p.relative_to(package)): p for p in sorted(package.rglob("*"))
             if ships(p.relative_to(package)) and p.is_file()}
    compiled_files: dict[str, Path] = {}
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
        if name in CONTROLLER_ONLY:
            left_out.append(name)
            continue
        listed = [f for f in dist.files or [] if "__pycache__" not in f.parts and f.suffix != ".pyc"
                  and not str(f).startswith("..") and f.name not in ("RECORD", "INSTALLER", "direct_url.json")]
        compiled = any(f.suffix in (".so", ".pyd") for f in listed) and name not in OPTIONAL_COMPILED
        for f in listed:
            if compiled:
                compiled_files[str(f)] = Path(str(dist.locate_file(f)))
            elif f.suffix not in (".so", ".pyd"):
                files[str(f)] = Path(str(dist.locate_file(f)))
        todo += _requirements(dist)
    return files, compiled_files, tuple(sorted(left_out))


def _tarball(path: Path, contents: dict[str, bytes]) -> None:
    """Written once: whole or absent (another controller may build the same at once)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for name in sorted(contents):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(contents[name]), 0o755 if name.endswith(".so") else 0o644, 0
            tar.addfile(info, io.BytesIO(contents[name]))
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, path)


def build(cache: Path | None = None) -> Bundle:
    """The bundle of this controller's nestbed (its tarballs made once per id, under the state root)."""
    files, compiled, left_out = host_files()
    digest = hashlib.sha256()
    parts: dict[str, dict[str, bytes]] = {"pure": {}, "compiled": {}}
    for part, listed in (("pure", files), ("compiled", compiled)):
        for name in sorted(listed):
            data = listed[name].read_bytes()
            parts[part][name] = data
            digest.update(f"{part}/{name}".encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    ident = f"{__version__}-{digest.hexdigest()[:12]}"
    directory = cache or paths.state_root() / "bundles"
    tarball = directory / f"nestbed-{ident}.tar.gz"
    _tarball(tarball, parts["pure"])
    compiled_tarball = None
    if compiled:
        compiled_tarball = directory / f"nestbed-{ident}-{abi()}.tar.gz"
        _tarball(compiled_tarball, parts["compiled"])
    return Bundle(ident, files, tarball, left_out, compiled, compiled_tarball, abi())


def root_expression(state_dir: str | None) -> str:
    """The host's state root in sh: the cluster file's, else the host's NESTBED_STATE_DIR, else the default."""
    return shlex.quote(state_dir) if state_dir else f'"${{NESTBED_STATE_DIR:-{DEFAULT_STATE_ROOT}}}"'


def check_script(bundle_id: str, python: str, state_dir: str | None) -> str:
    """Prints `python X.Y.Z` and `abi TAG-MACHINE` (or `nopython`), the bundle's directory there, `present` or
    `absent`, and `compiled TAG-MACHINE` for each ABI whose compiled part is there."""
    code = ("import os, sys; print('python', '%d.%d.%d' % sys.version_info[:3]); "
            "print('abi', sys.implementation.cache_tag + '-' + os.uname().machine)")
    return "; ".join([
        f"d={root_expression(state_dir)}/bundles/{bundle_id}",
        f"if command -v {shlex.quote(python)} >/dev/null 2>&1; then {shlex.quote(python)} -c "
        f"{shlex.quote(code)}; else echo nopython; fi",
        'echo "dir $d"',
        f'if [ -f "$d/{MARK}" ]; then echo present; else echo absent; fi',
        f'for c in "$d"/compiled/*/{MARK}; do [ -f "$c" ] && echo "compiled $(basename "$(dirname "$c")")"; done; '
        "true",
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
    abi: str | None = None                    # the host interpreter's (abi())
    compiled: tuple[str, ...] = ()            # ABIs whose compiled part is there


def parse_check(output: str) -> Checked:
    python, directory, present, host_abi, compiled = None, "", False, None, []
    for line in output.splitlines():
        if line.startswith("python "):
            python = line.split()[1]
        elif line.startswith("abi "):
            host_abi = line.split()[1]
        elif line.startswith("compiled "):
            compiled.append(line.split()[1])
        elif line.startswith("dir "):
            directory = line[4:].strip()
        elif line.strip() == "present":
            present = True
    if not directory:
        raise ExperimentError(f"unexpected answer to the install check: {output.strip()[:200]!r}")
    return Checked(python, directory, present, host_abi, tuple(compiled))


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
    wanted = [(checked.directory, made.tarball)] if not checked.present else []
    if made.compiled_tarball is not None and checked.abi == made.abi and made.abi not in checked.compiled:
        wanted.append((f"{checked.directory}/compiled/{made.abi}", made.compiled_tarball))
    for directory, tarball in wanted:          # the pure part first: its mark comes before the compiled one's
        result = await asyncio.wait_for(
            conn.run(install_script(directory), input=tarball.read_bytes(), encoding=None, check=False),
            INSTALL_SECONDS)
        if result.exit_status != 0:
            said = (result.stderr or b"").decode(errors="replace").strip().splitlines()
            raise ExperimentError(f"{label}: cannot install nestbed {made.id} in {directory}: "
                                  f"{said[-1] if said else f'exit {result.exit_status}'}")
    return checked.directory
