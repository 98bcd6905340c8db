"""emulated.cleanup and the experiment's directory (no root: journals without namespaces or processes): it goes
when the hosts' journal names it — made by `up`, or the controller's and left empty —, never by its name alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed import paths
from nestbed.cluster import emulated
from nestbed.realize.journal import Journal


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def _left_by_a_crash(name: str, made_top: bool | None, controller_file: bool = False) -> Path:
    """The hosts' journal as `up` writes it first (made_top None: an older one, without the top directory)."""
    top = paths.experiment_dir(name)
    cluster = emulated.cluster_dir(name)
    cluster.mkdir(parents=True)
    if controller_file:
        (top / "status.json").write_text("{}")
    entries = [] if made_top is None else [emulated.top_entry(top, made_top)]
    Journal(cluster / emulated.JOURNAL).record(entries + [{"t": "dir", "path": str(cluster)}])
    return top


def test_cleanup_removes_the_controller_s_directory_once_it_is_empty(root) -> None:
    top = _left_by_a_crash("crashed", made_top=False)
    (report,) = emulated.cleanup()
    assert report.left == [] and not top.exists() and root.is_dir()


def test_a_directory_with_the_controller_s_files_stays_and_is_no_complaint(root) -> None:
    top = _left_by_a_crash("running", made_top=False, controller_file=True)
    (report,) = emulated.cleanup()
    assert report.left == [] and (top / "status.json").exists()
    assert not emulated.cluster_dir("running").exists()


def test_a_directory_up_made_goes_and_one_holding_a_stranger_s_file_is_said(root) -> None:
    top = _left_by_a_crash("ours", made_top=True)
    emulated.cleanup()
    assert not top.exists()
    top = _left_by_a_crash("stranger", made_top=True, controller_file=True)
    (report,) = emulated.cleanup()
    assert top.exists() and report.left == [f"{top}: holds files nestbed did not make"]


def test_a_directory_no_journal_names_is_left_alone(root) -> None:
    top = _left_by_a_crash("older", made_top=None)
    (report,) = emulated.cleanup()
    assert report.left == [] and top.is_dir() and list(top.iterdir()) == []     # empty, but not ours to say
