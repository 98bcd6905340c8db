"""Identity files on disk: `<state>/nodes/<node>/boot/*`, seen by each node as /var/emulab/boot (see plan.identity).

Layout and cost. `<state>/nodes` is a tmpfs that write_identity mounts (plain directories where mounting is not
allowed, e.g. unprivileged unit tests): creating 10,000 node directories on the state disk costs ~30 µs per inode
here and removing them seconds, on tmpfs a few µs and one umount. The files every node shares (topomap, ltmap,
hosts; controlif too) are written once and hard-linked into each node's boot directory; per node only nickname,
ifmap and node.json are written. The directories are 0755 and the files 0644 (what Emulab uses), under a root
that is 0700: nodes see their own directory through the bind mount, no other local user reaches any of them.

How nodes see them. processes.enter_node bind-mounts `<state>/nodes/<node>` read-only over /var/emulab in the
node's private mount namespace, so /var/emulab/boot in the node is its boot directory, and no mount is ever made
in the host's namespace at /var/emulab. The mountpoint must exist on the host: when /var/emulab is missing,
write_identity creates it (an empty directory) and drops a claim `.nestbed-nb-EXP` in it; remove_identity takes the
claim back and removes /var/emulab when no experiment's claim is left (under a flock on the directory, so two
experiments coming and going never remove it under each other). A /var/emulab that existed without nestbed claims
(a real Emulab/DETER node) is never written to nor removed: nodes see their own directory over it.

Journal and teardown. One entry `{"t": "identity", "root", "emulab", "claim"}` is journaled before anything is
created; realize/teardown.py calls remove_identity(entries) through the Kernel (it unmounts the tmpfs, removes the
tree, and returns the claim). /etc/hosts: write_identity rewrites the experiment's hosts file in place (same inode, so
nodes already running see it) with hosts_with_control, so every node's nickname resolves.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed import paths
from nestbed.plan.hostplan import HostPlan
from nestbed.plan.identity import DEFAULT_PROJECT, ControlInfo, IdentityBuilder
from nestbed.realize import syscalls
from nestbed.realize.journal import Journal
from nestbed.realize.state import ExperimentState

EMULAB = Path("/var/emulab")          # where nodes look; mountpoint of each node's directory
ROOT = "nodes"
BOOT = "boot"
CLAIM_PREFIX = ".nestbed-"
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8


def identity_root(state_dir: Path | str) -> Path:
    return Path(state_dir) / ROOT


def node_dir(state_dir: Path | str, node: str) -> Path:
    """What enter_node mounts over /var/emulab."""
    return Path(state_dir) / ROOT / node


def boot_dir(state_dir: Path | str, node: str) -> Path:
    return Path(state_dir) / ROOT / node / BOOT


def write_identity(state: ExperimentState | Path | str, plan: HostPlan, control: ControlInfo | None = None, *,
                   project: str = DEFAULT_PROJECT, etc_hosts: bool = True, emulab: Path = EMULAB) -> Path:
    """Write every node's identity files under `<state>/nodes`; returns that root.

    Call it after the experiment's hosts file is written and before start commands run. With `etc_hosts`, the
    experiment's hosts file (`<state>/hosts`, bind-mounted on every node's /etc/hosts) is rewritten with the
    nickname lines. Safe to call again (e.g. once the control network is known): files are replaced.
    """
    directory = state.directory if isinstance(state, ExperimentState) else Path(state)
    root = identity_root(directory)
    builder = IdentityBuilder(plan, project, control)
    shared = builder.shared_files()

    claim = claim_path(emulab, plan.experiment)
    Journal(directory / "journal.jsonl").record([
        {"t": "identity", "root": str(root), "emulab": str(emulab), "claim": str(claim)},
        {"t": "file", "path": str(directory / "hosts")}])
    take_claim(emulab, claim)

    root.mkdir(mode=0o700, exist_ok=True)
    if not os.path.ismount(root):
        try:
            syscalls.mount("tmpfs", str(root), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=700")
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EACCES):
                raise          # anything but "not allowed here" is a real failure; without privilege: plain dirs
    os.chmod(root, 0o700)

    # Shared files once, in a hidden directory (node names never start with a dot), then links.
    originals = root / ".shared"
    originals.mkdir(mode=0o755, exist_ok=True)
    sources: dict[str, str] = {}
    for name, content in {**shared, "controlif.none": builder.controlif(""),
                          **({"controlif.ctl": control.interface + "\n"} if control is not None else {})}.items():
        path = str(originals / name)
        _write(path, content)
        sources[name] = path
    controlif = {False: sources["controlif.none"], True: sources.get("controlif.ctl", "")}
    links = [(name, sources[name]) for name in shared]

    def write_nodes(names: list[str]) -> None:
        for name in names:
            _write_node(str(root / name), builder.node_files(name),
                        [("controlif", controlif[control is not None and control.address(name) is not None]),
                         *links])

    write_nodes([node.name for node in plan.nodes])

    if etc_hosts:
        with open(directory / "hosts", "w") as handle:     # in place: same inode as the nodes' /etc/hosts
            handle.write(shared["hosts"])
    return root


def remove_identity(entries: Iterable[dict[str, Any]]) -> None:
    """Teardown of what write_identity made, from journal entries (the `identity` ones; others are ignored).

    Idempotent and safe after a crash at any point: unmounts the tmpfs (lazily: nodes' copies go with their
    namespaces), removes the tree, returns the /var/emulab claim and removes /var/emulab if it was nestbed's and
    no experiment claims it any more.
    """
    for entry in entries:
        if entry.get("t") != "identity":
            continue
        remove_mounted_tree(Path(entry["root"]))
        if entry.get("claim"):
            release(Path(entry["emulab"]), Path(entry["claim"]))


def remove_mounted_tree(root: Path) -> None:
    """Unmount whatever is stacked on `root` (a tmpfs nestbed mounted), then remove the tree; idempotent."""
    while os.path.ismount(root):
        try:
            syscalls.umount(str(root))
        except OSError:
            break
    shutil.rmtree(root, ignore_errors=True)


def _write_node(directory: str, files: dict[str, str], links: list[tuple[str, str]]) -> None:
    boot = directory + "/" + BOOT
    for path in (directory, boot):
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass
    for name in ("nickname", "ifmap", "node.json"):
        _write(f"{boot}/{name}", files[name])
    for name, source in links:
        target = f"{boot}/{name}"
        try:
            os.link(source, target)
        except FileExistsError:
            os.unlink(target)
            os.link(source, target)


def _write(path: str, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, content.encode())
    finally:
        os.close(fd)


def claim_path(emulab: Path, experiment: str) -> Path:
    """`.nestbed-nb-EXP`: the object prefix keeps apart equal names of two state roots (a test suite's, users')."""
    return emulab / f"{CLAIM_PREFIX}{paths.object_prefix()}-{experiment}"


def _locked(emulab: Path) -> int | None:
    """An fd of `emulab`, flocked, that still names the live directory (None if it does not exist)."""
    while True:
        try:
            fd = os.open(emulab, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd
        os.close(fd)             # removed while we waited for the lock: look again


def take_claim(emulab: Path, claim: Path) -> None:
    """Make sure `emulab` exists as a mountpoint, recording this experiment's claim when it is nestbed's."""
    while True:
        created = False
        try:
            os.mkdir(emulab, 0o755)
            created = True
        except FileExistsError:
            pass
        fd = _locked(emulab)
        if fd is None:
            continue             # removed between mkdir and open by another experiment's teardown: again
        try:
            if created or any(name.startswith(CLAIM_PREFIX) for name in os.listdir(emulab)):
                os.close(os.open(claim, os.O_WRONLY | os.O_CREAT, 0o644))
            return               # else: a /var/emulab nestbed did not make; used as a mountpoint only
        finally:
            os.close(fd)


def release(emulab: Path, claim: Path) -> None:
    fd = _locked(emulab)
    if fd is None:
        return
    try:
        try:
            os.unlink(claim)
        except FileNotFoundError:
            return               # never claimed (not ours), or already released
        if not os.listdir(emulab):
            try:
                os.rmdir(emulab)
            except OSError:
                pass
    finally:
        os.close(fd)
