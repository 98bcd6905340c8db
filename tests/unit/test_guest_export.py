"""What a VM sees of the host: the export plan (pure; no root, no VM)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nestbed.realize.qemu import export


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """An experiment's state directory as realize leaves it: credential, plan, a VM's guest.json, nodes."""
    directory = tmp_path / "lab"
    (directory / "vms" / "vm1").mkdir(parents=True)
    (directory / "vms" / "vm2").mkdir(parents=True)
    (directory / "nodes" / "vm1" / "boot").mkdir(parents=True)
    (directory / "nodes" / "other" / "boot").mkdir(parents=True)
    (directory / "credential").write_text("secret\n")
    (directory / "vms" / "vm1" / "guest.json").write_text("{}")
    (directory / "vms" / "vm2" / "guest.json").write_text("{}")
    (directory / "nodes" / "vm1" / "boot" / "nickname").write_text("vm1.lab.nestbed\n")
    (directory / "nodes" / "other" / "boot" / "nickname").write_text("other.lab.nestbed\n")
    (directory / "hosts").write_text("10.0.0.1 vm1\n")
    return directory


def vm1_plan(state: Path) -> list[export.Entry]:
    own = [state / "vms/vm1/guest.json", state / "hosts", state / "nodes/vm1"]
    return export.plan(export.python_trees(), [(str(p), str(p)) for p in own],
                       export.generated_etc("vm1", "10.0.0.1 vm1\n") + export.host_etc())


def test_only_allowlisted_host_trees_are_bound_and_only_read_only_ones(state):
    entries = vm1_plan(state)
    binds = [e.path for e in entries if e.kind == "bind"]
    assert binds and all(e.source == e.path for e in entries if e.kind == "bind")
    for secret in ("/etc", "/root", "/home", "/var/lib/nestbed", "/var", "/tmp", "/", str(state)):
        assert not any(_inside(secret, b) for b in binds), (secret, binds)     # no bind holds it
    for forbidden in ("/etc", "/home", "/var/lib", "/boot", "/srv"):
        assert not any(_inside(b, forbidden) for b in binds), (forbidden, binds)
    assert all(not _inside(b, "/root") or _inside(os.path.realpath(sys.base_prefix), b) or
               _inside(b, os.path.realpath(sys.base_prefix)) for b in binds), binds   # under /root: the interpreter


def test_the_interpreter_its_packages_and_nestbed_are_reachable(state):
    import nestbed
    entries = vm1_plan(state)
    seen = [e.path for e in entries if e.kind in ("bind", "link")]

    def reachable(path: str) -> bool:
        path = os.path.realpath(path)
        return any(_inside(path, p) or _inside(path, os.path.realpath(p)) for p in seen)
    for path in (sys.executable, os.path.realpath(sys.executable), nestbed.__file__, os.__file__, "/usr/bin/env",
                 "/bin/sh"):
        assert reachable(path), path


def test_the_vms_own_files_are_copies_and_nothing_else_of_the_state_directory(state):
    entries = vm1_plan(state)
    copied = {e.path: e.data for e in entries if e.kind == "file" and _inside(e.path, str(state))}
    assert copied == {str(state / "vms/vm1/guest.json"): b"{}", str(state / "hosts"): b"10.0.0.1 vm1\n",
                      str(state / "nodes/vm1/boot/nickname"): b"vm1.lab.nestbed\n"}


def test_the_guests_etc_is_generated(state):
    etc = {e.path: e for e in vm1_plan(state) if _inside(e.path, "/etc")}
    assert not {"/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh"} & set(etc)
    assert not any(_inside(p, "/etc/ssh") for p in etc)
    users = etc["/etc/passwd"].data.decode().splitlines()
    assert [line.split(":")[0] for line in users] == ["root", "nobody"]
    assert etc["/etc/hosts"].data == b"10.0.0.1 vm1\n" and b"nameserver" not in etc["/etc/resolv.conf"].data
    allowed = set(export.ETC_TABLES) | set(export.ETC_LINKS) | set(export.ETC_LINK_DIRS) | {
        "passwd", "group", "hostname", "hosts", "resolv.conf", "nsswitch.conf"}
    assert {Path(p).relative_to("/etc").parts[0] for p in etc} <= allowed
    assert all(e.kind == "link" for p, e in etc.items() if _inside(p, "/etc/alternatives"))


def test_a_file_inside_a_read_only_tree_is_refused(state):
    with pytest.raises(ValueError, match="read-only"):
        export.plan(["/usr/bin"], [(str(state / "hosts"), "/usr/bin/hosts")], [])


def test_a_tree_that_holds_a_system_tree_is_left_to_the_system_trees():
    binds = [e.path for e in export.plan(["/usr", "/"], [], []) if e.kind == "bind"]
    assert "/usr" not in binds and "/" not in binds and "/usr/bin" in binds
