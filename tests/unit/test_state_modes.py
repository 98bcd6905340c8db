"""Who may read an experiment's state (realize/state.py, realize/mailboxes.py): the state root 0711, the
experiment's directory 0700 and its files 0600, mailboxes 0700 with 0600 files, whatever the umask."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from nestbed import paths
from nestbed.realize import mailboxes
from nestbed.realize.state import experiment


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Any:
    old = os.umask(0)                  # modes must not depend on the caller's umask
    yield
    os.umask(old)


def test_a_new_experiment_is_private_from_its_first_file(tmp_path, monkeypatch, loose_umask):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    state = experiment("lab")
    state.create()
    assert _mode(tmp_path / "state") == 0o711 and _mode(state.directory) == 0o700
    for path in (state.journal.path, state.plan_path, state.directory / "status.json"):
        assert _mode(path) == 0o600
    state.plan_path.write_text("{}")                     # rewriting keeps the mode
    state.set_status("creating")
    state.journal.record([{"t": "file", "path": "x"}])
    assert {_mode(p) for p in (state.plan_path, state.directory / "status.json", state.journal.path)} == {0o600}
    with pytest.raises(FileExistsError):
        state.create()


def test_a_state_root_left_open_is_tightened_never_widened(tmp_path, monkeypatch, loose_umask):
    root = tmp_path / "state"
    root.mkdir(mode=0o777)
    monkeypatch.setenv("NESTBED_STATE_DIR", str(root))
    experiment("one").create()
    assert _mode(root) == 0o711
    os.chmod(root, 0o700)
    experiment("two").create()
    assert _mode(root) == 0o700


def test_mailboxes_are_root_only(tmp_path, loose_umask):
    directory = tmp_path / "lab"
    directory.mkdir()
    root = mailboxes.create_mailboxes(directory, "lab", ["a", "b"], mountpoint=str(tmp_path / "nb" / "mailbox"))
    try:
        assert root == paths.mailbox_root(directory) and _mode(root) == 0o700
        for node in ("a", "b"):
            box = paths.mailbox_dir(directory, node)
            assert (_mode(box), _mode(box / mailboxes.EVENTS), _mode(box / mailboxes.FIFO)) == (0o700, 0o600, 0o600)
            assert stat.S_ISFIFO((box / mailboxes.FIFO).stat().st_mode)
    finally:
        from nestbed.realize.journal import Journal
        mailboxes.remove_mailboxes(Journal(directory / "journal.jsonl").entries())
    assert not root.exists()
