"""Node mailboxes on disk: `<state>/mailbox/<node>/` with events.jsonl and the FIFO events.fifo.

Each process node sees its mailbox at /var/nestbed/mailbox (processes.enter_node bind-mounts it); programs
append event lines there, which the host agent watches (agent/mailbox.py: the watcher and the line format).

Layout and teardown. `<state>/mailbox` is a tmpfs (plain directories where mounting is not allowed), so a
thousand mailboxes cost one mount and one umount. /var/nestbed and /var/nestbed/mailbox are created when missing,
each with a claim `.nestbed-nb-EXP` (realize.identity's pattern), and removed at teardown when no experiment's claim
is left. One journal entry `{"t": "mailbox", …}` is written before anything is made; teardown calls
remove_mailboxes(entries).

Who may write. Only the node: `<state>/mailbox` and each node's directory are 0700 and the files 0600, all
root's, so no other local user reaches them on the host (the experiment's directory is 0700 too), and inside
the node only root writes them (programs run as root there; a non-root program there cannot, so nor can a local
user of its uid through /proc/PID/root).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from nestbed import paths

TYPE_CHECKING = False     # not typing's: the guest agent imports this module too
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

MOUNTPOINT = paths.MAILBOX_MOUNTPOINT
EVENTS = "events.jsonl"
FIFO = "events.fifo"
MS_NOSUID, MS_NODEV = 0x2, 0x4
PRIVATE = 0o700          # the mailbox root and each node's directory
FILE_MODE = 0o600        # events.jsonl and events.fifo: root appends, the host agent (root) reads


def create_mailboxes(state_dir: Path | str, experiment: str, nodes: Iterable[str],
                     mountpoint: str = MOUNTPOINT) -> Path:
    """Make every node's mailbox (directory, empty events.jsonl, FIFO) and the in-node mountpoint."""
    from nestbed.realize import identity, syscalls
    from nestbed.realize.journal import Journal
    directory = Path(state_dir)
    root = paths.mailbox_root(directory)
    parent = Path(mountpoint).parent
    claims = [(parent, identity.claim_path(parent, experiment)),
              (Path(mountpoint), identity.claim_path(Path(mountpoint), experiment))]
    Journal(directory / "journal.jsonl").record([
        {"t": "mailbox", "root": str(root), "claims": [[str(d), str(c)] for d, c in claims]}])
    for place, claim in claims:              # outer first: /var/nestbed, then /var/nestbed/mailbox
        identity.take_claim(place, claim)
    root.mkdir(mode=PRIVATE, exist_ok=True)
    if not os.path.ismount(root):
        try:
            syscalls.mount("tmpfs", str(root), "tmpfs", MS_NOSUID | MS_NODEV, f"mode={PRIVATE:o}")
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EACCES):
                raise
    os.chmod(root, PRIVATE)            # also where no tmpfs could be mounted (modes pass through the umask)
    for node in nodes:
        path = f"{root}/{node}"
        try:
            os.mkdir(path, PRIVATE)
        except FileExistsError:
            pass
        os.chmod(path, PRIVATE)
        events = f"{path}/{EVENTS}"
        os.close(os.open(events, os.O_WRONLY | os.O_CREAT, FILE_MODE))
        os.chmod(events, FILE_MODE)
        try:
            os.mkfifo(f"{path}/{FIFO}", FILE_MODE)
        except FileExistsError:
            pass
        os.chmod(f"{path}/{FIFO}", FILE_MODE)
    return root


def remove_mailboxes(entries: Iterable[dict[str, Any]]) -> None:
    """Teardown of create_mailboxes from journal entries; idempotent."""
    from nestbed.realize import identity
    for entry in entries:
        if entry.get("t") != "mailbox":
            continue
        identity.remove_mounted_tree(Path(entry["root"]))
        for place, claim in reversed(entry.get("claims") or []):     # inner first
            identity.release(Path(place), Path(claim))
