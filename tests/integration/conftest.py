"""Integration tests: real namespaces, real packets. They need root; each experiment is removed afterwards."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

NESTBED = [sys.executable, "-m", "nestbed.cli.main"]

pytestmark = pytest.mark.root


def pytest_collection_modifyitems(items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests need root (network namespaces)")
        for item in items:
            if "integration" in str(item.fspath):
                item.add_marker(skip)


def nestbed(*args: str, check: bool = True, timeout: float = 300, input: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(NESTBED + list(args), capture_output=True, text=True, timeout=timeout, input=input,
                            env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"nestbed {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def our_namespaces(prefix: str) -> list[str]:
    try:
        return [n for n in os.listdir("/run/netns") if n == prefix or n.startswith(prefix + ".")]
    except FileNotFoundError:
        return []


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
            assert not our_namespaces(f"nb-{name}"), f"namespaces of {name} left behind"


@pytest.fixture
def experiments(tmp_path):
    exps = Experiments(tmp_path)
    yield exps
    exps.down_all()


def exec_in(name: str, node: str, *command: str, check: bool = True, timeout: float = 60):
    return nestbed("exec", name, node, "--", *command, check=check, timeout=timeout)


def have(program: str) -> bool:
    return shutil.which(program) is not None
