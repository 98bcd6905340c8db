"""What every test shares: a prerequisite of the machine that is missing FAILS the test, unless a developer opts out.

A test that needs something says so, `@pytest.mark.needs("qemu")` (names in PREREQUISITES); every integration
test needs root (tests/integration/conftest.py marks them). When it is missing the test fails with what to do:
CI sets nothing, so a machine that cannot run a test never passes it by skipping it. A developer without root or
qemu opts out with NESTBED_SKIP_MISSING=1 (those tests are then skipped, with the same reason), or deselects the
integration tests with `-m "not root"`.

Skips about the behaviour under test stay plain skips, e.g. "this kernel has netem" in a test of the refusal on
kernels without it: the machine is fine, that kernel just cannot show the case.
"""
from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable

import pytest

OPT_OUT = "NESTBED_SKIP_MISSING"


def _root() -> bool:
    return os.geteuid() == 0


def _qemu() -> bool:
    from nestbed.realize.qemu import cmdline
    return shutil.which(cmdline.QEMU) is not None


def _rapidyaml() -> bool:
    from nestbed.model import fastyaml
    return fastyaml.ryml is not None


def _sh() -> bool:
    return shutil.which("sh") is not None


def _ngircd() -> bool:
    return shutil.which("ngircd") is not None or os.access("/usr/sbin/ngircd", os.X_OK)


def _sshd() -> bool:
    return os.access("/usr/sbin/sshd", os.X_OK) and shutil.which("ssh-keygen") is not None


def _etcd() -> bool:
    return os.access("/usr/bin/etcd", os.X_OK) or shutil.which("etcd") is not None


def _tclsh() -> bool:
    return shutil.which("tclsh") is not None


def _sfdp() -> bool:
    return shutil.which("sfdp") is not None


def _chromium() -> bool:
    return os.access(os.environ.get("NESTBED_CHROMIUM", "/usr/bin/chromium"), os.X_OK)


PREREQUISITES: dict[str, tuple[Callable[[], bool], str]] = {
    "root": (_root, "integration tests need root (network namespaces): run ./run tests as root"),
    "qemu": (_qemu, "qemu-system-x86_64 is not installed: ./run tests installs it (apt-get install qemu-system-x86)"),
    "rapidyaml": (_rapidyaml, "rapidyaml is not installed: pip install -e '.[test]' installs it"),
    "sh": (_sh, "no sh on PATH to check the guest scripts' syntax"),
    "ngircd": (_ngircd, "ngircd is not installed: apt-get install ngircd (the CATCH demo's IRC server)"),
    "sshd": (_sshd, "OpenSSH's sshd is not installed: ./run tests installs it without starting it "
                    "(apt-get install openssh-server; emulated hosts run their own)"),
    "etcd": (_etcd, "etcd is not installed: ./run tests installs it without starting it (apt-get install "
                    "etcd-server; tests run their own on loopback)"),
    "tclsh": (_tclsh, "Tcl is not installed: ./run tests installs it (apt-get install tcl; NS files run in it)"),
    "sfdp": (_sfdp, "Graphviz's sfdp is not installed: ./run tests installs it (apt-get install graphviz; the web "
                    "view's layouts)"),
    "chromium": (_chromium, "Debian's chromium is not installed: ./run tests installs it (apt-get install chromium; "
                            "Playwright drives it, or the one NESTBED_CHROMIUM names)"),
}


@functools.cache
def present(name: str) -> bool:
    return PREREQUISITES[name][0]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"needs(*names): fails unless the machine has these ({', '.join(PREREQUISITES)})"
                                       f"; skipped instead with {OPT_OUT}=1")


@pytest.hookimpl(tryfirst=True)      # before fixtures: a module's VM kit is not built for a test that cannot run
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        for name in mark.args:
            if present(name):
                continue
            why = PREREQUISITES[name][1]
            if os.environ.get(OPT_OUT):
                pytest.skip(f"{why} ({OPT_OUT} is set)")
            pytest.fail(f"{why} (or set {OPT_OUT}=1 to skip the tests that need it)", pytrace=False)
