"""Integration tests: real namespaces, real packets. They need root; each experiment is removed afterwards.

They keep to their own: while an integration test runs, NESTBED_STATE_DIR is a directory of this test session
(not /var/lib/nestbed) and NESTBED_PREFIX is "nt", for the test's in-process calls and every nestbed it starts.
So `status` and `cleanup` see only the tests' experiments, and their namespaces and links (nt-…) are told apart
from the machine's own (nb-…). Unit tests run with neither set.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestbed import paths
from nestbed.plan.compile import netns_name

NESTBED = [sys.executable, "-m", "nestbed.cli.main"]
PREFIX = "nt"
HERE = Path(__file__).parent
_session: dict[str, Path] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.root)
            item.add_marker(pytest.mark.needs("root"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The whole protocol (module fixtures too) runs with the tests' own state root and prefix."""
    if HERE not in item.path.parents:
        yield
        return
    if "state" not in _session:
        _session["state"] = Path(tempfile.mkdtemp(prefix="nestbed-tests.")) / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NESTBED_STATE_DIR", str(_session["state"]))
        patch.setenv("NESTBED_PREFIX", PREFIX)
        yield


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The session's state root goes when the tests left nothing in it (else it stays, for `nestbed cleanup`)."""
    state = _session.get("state")
    if state is not None and not (state.is_dir() and any(state.iterdir())):
        shutil.rmtree(state.parent, ignore_errors=True)


def nestbed(*args: str, check: bool = True, timeout: float = 300, input: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(NESTBED + list(args), capture_output=True, text=True, timeout=timeout, input=input,
                            env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"nestbed {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def our_namespaces(experiment: str) -> list[str]:
    """The namespaces of this experiment (under the tests' prefix) on the host."""
    start = netns_name(experiment, "")
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith(start)]
    except FileNotFoundError:
        return []


def state_dir(experiment: str) -> Path:
    return paths.experiment_dir(experiment)


class Experiments:
    """Writes topology files, brings experiments up and makes sure they are down after the test."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.names: list[str] = []

    def name(self, stem: str = "t") -> str:
        name = f"{stem}{uuid.uuid4().hex[:6]}"
        self.names.append(name)
        return name

    def write(self, text: str, name: str | None = None) -> tuple[str, Path]:
        name = name or self.name()
        path = self.tmp / f"{name}.yaml"
        path.write_text(f"name: {name}\n" + textwrap.dedent(text))
        return name, path

    def up(self, text: str, name: str | None = None) -> str:
        name, path = self.write(text, name)
        nestbed("up", str(path))
        return name

    def down_all(self) -> None:
        for name in self.names:
            nestbed("down", name, check=False)
            assert not our_namespaces(name), f"namespaces of {name} left behind"


@pytest.fixture
def own_state_root(monkeypatch) -> Iterator[Path]:
    """A state root of this test alone, so that `status` and `cleanup --all` see only what the test makes.
    Ask for it before `experiments` (which then downs the test's experiments in it)."""
    top = Path(tempfile.mkdtemp(prefix="nestbed-test."))
    monkeypatch.setenv("NESTBED_STATE_DIR", str(top / "state"))
    yield top / "state"
    if not ((top / "state").is_dir() and any((top / "state").iterdir())):
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def experiments(tmp_path):
    exps = Experiments(tmp_path)
    yield exps
    exps.down_all()


def exec_in(name: str, node: str, *command: str, check: bool = True, timeout: float = 60):
    return nestbed("exec", name, node, "--", *command, check=check, timeout=timeout)


def have(program: str) -> bool:
    return shutil.which(program) is not None
