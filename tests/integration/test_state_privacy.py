"""An experiment's state is root's alone: another local user (`nobody`) can neither read its credential, store,
logs, journal or identity files nor write into a node's mailbox (a forged event would fire triggers), while the
node's own programs still post events."""
from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import exec_in
from nestbed import paths
from nestbed.agent.store import Store
from nestbed.realize import identity
from nestbed.realize.mailboxes import EVENTS, FIFO
from nestbed.realize.state import experiment

TOPOLOGY = """
nodes:
  a: {}
  b: {}
lans:
  lan0: {members: [a, b]}
"""
AS_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from conftest import Experiments
    exps = Experiments(tmp_path_factory.mktemp("privacy"))
    name = exps.up(TOPOLOGY)
    yield name
    exps.down_all()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _as_nobody(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(AS_NOBODY + ["sh", "-c", script], capture_output=True, text=True, timeout=10)


def test_the_experiments_files_are_root_only(lab):
    state = experiment(lab)
    directory = state.directory
    assert _mode(paths.state_root()) & 0o066 == 0                   # others may pass, not list nor write
    assert _mode(directory) == 0o700
    for path in (paths.credential(directory), state.journal.path, state.plan_path, directory / "status.json",
                 paths.store(directory), paths.agent_log(directory)):
        assert _mode(path) == 0o600, path
    assert _mode(state.log_dir) == 0o700 and _mode(identity.identity_root(directory)) == 0o700
    box = paths.mailbox_dir(directory, "a")
    assert (_mode(paths.mailbox_root(directory)), _mode(box)) == (0o700, 0o700)
    assert (_mode(box / EVENTS), _mode(box / FIFO)) == (0o600, 0o600)


def test_another_local_user_reads_nothing_of_the_experiment(lab):
    directory = experiment(lab).directory
    for path in (paths.credential(directory), paths.store(directory), paths.agent_log(directory),
                 directory / "journal.jsonl", identity.boot_dir(directory, "a") / "nickname"):
        assert path.exists()
        result = _as_nobody(f"cat {path}")
        assert result.returncode != 0 and "Permission denied" in result.stderr, (path, result)
    listing = _as_nobody(f"ls {directory}")
    assert listing.returncode != 0 and "Permission denied" in listing.stderr


def test_a_forged_mailbox_write_from_outside_the_node_is_refused_and_the_node_still_posts(lab):
    directory = experiment(lab).directory
    box = paths.mailbox_dir(directory, "a")
    for target in (box / EVENTS, box / FIFO):
        result = _as_nobody(f"echo forged >> {target}")
        assert result.returncode != 0 and "Permission denied" in result.stderr, (target, result)
    # inside the node only root writes the mailbox: a program there that dropped to nobody cannot either
    inside = exec_in(lab, "a", *AS_NOBODY, "sh", "-c", "echo forged-inside >> $NESTBED_MAILBOX/events.jsonl",
                     check=False)
    assert inside.returncode != 0 and "Permission denied" in inside.stderr
    exec_in(lab, "a", "nestbed-event", "legit", '{"k": 1}')
    store = Store(paths.store(directory))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(e["name"] == "legit" for e in store.events()):
        time.sleep(0.02)
    names = [e["name"] for e in store.events()]
    assert "legit" in names and not {"forged", "forged-inside"} & set(names)
    assert "forged" not in (box / EVENTS).read_text()
