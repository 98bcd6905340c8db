"""`nestbed shell` of a node on another host (cluster/shell.py): the host's own `nestbed shell` as the remote
command, and the OpenSSH client's command line, read back by the client itself (`ssh -G` resolves every option
without connecting)."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from nestbed.cluster.shell import remote_command, ssh_argv
from nestbed.cluster.ssh import ConnectInfo


def emulated(tmp_path: Path) -> ConnectInfo:
    key = tmp_path / "client_ed25519"
    key.write_text("")
    return ConnectInfo(address="10.250.0.3", netns="nb-lab.ul", client_keys=(str(key),),
                       known_hosts=str(tmp_path / "known_hosts"), python="/opt/venv/bin/python",
                       state_dir="/var/lib/nestbed/lab/hosts/emu2", prefix="nb2")


def test_the_remote_command_is_the_hosts_own_nestbed_shell_with_its_state_and_prefix(tmp_path):
    info = emulated(tmp_path)
    command = remote_command(info, "lab", "c")
    assert shlex.split(command) == ["exec", "env", "NESTBED_STATE_DIR=/var/lib/nestbed/lab/hosts/emu2",
                                    "NESTBED_PREFIX=nb2", "/opt/venv/bin/python", "-m", "nestbed.cli.main",
                                    "shell", "lab", "c"]
    odd = remote_command(ConnectInfo(address="h", python="python3"), "my lab", "a;b")
    assert shlex.split(odd) == ["exec", "env", "python3", "-m", "nestbed.cli.main", "shell", "my lab", "a;b"]


def test_the_command_goes_last_after_the_destination(tmp_path):
    argv = ssh_argv(emulated(tmp_path), "exec true", ssh="/usr/bin/ssh")
    assert argv[0] == "/usr/bin/ssh" and argv[1:3] == ["-F", "none"] and "-tt" in argv
    assert argv[-7:] == ["-p", "22", "-l", "root", "10.250.0.3", "--", "exec true"]   # the command one word
    assert argv.count("exec true") == 1


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client here")
def test_openssh_reads_a_forced_tty_the_pinned_host_key_and_our_key_alone(tmp_path):
    argv = ssh_argv(emulated(tmp_path), "exec true")
    resolved = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True, check=True).stdout
    options: dict[str, list[str]] = {}
    for line in resolved.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key, []).append(value)
    assert options["requesttty"] == ["force"] and options["batchmode"] == ["yes"]
    assert options["hostname"] == ["10.250.0.3"] and options["port"] == ["22"] and options["user"] == ["root"]
    assert options["stricthostkeychecking"] == ["true"]
    assert options["userknownhostsfile"] == [str(tmp_path / "known_hosts")]
    assert options["globalknownhostsfile"] == ["/dev/null"]
    assert options["identityfile"] == [str(tmp_path / "client_ed25519")]
    assert options["identitiesonly"] == ["yes"] and options["identityagent"] == ["none"]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client here")
def test_a_real_host_is_reached_with_the_users_keys_and_known_hosts_from_home(tmp_path, monkeypatch):
    """The files the SSH transport (asyncssh) used, found through $HOME as it finds them."""
    ssh_dir = tmp_path / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "id_ed25519").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = ssh_argv(ConnectInfo.from_destination("admin@192.0.2.10:2222"), "exec true")
    assert "-F" not in argv and "IdentitiesOnly=yes" not in argv          # the user's configuration and agent
    resolved = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True, check=True).stdout
    lines = resolved.splitlines()
    assert "port 2222" in lines and "user admin" in lines and "stricthostkeychecking true" in lines
    assert f"identityfile {ssh_dir / 'id_ed25519'}" in lines
    assert f"userknownhostsfile {ssh_dir / 'known_hosts'}" in lines


def test_with_a_bundle_the_host_runs_the_nestbed_brought_there(tmp_path):
    """Run by sh as sshd would: the bundle's directory under the host's state root, -S, the host's prefix."""
    python = tmp_path / "python3"
    python.write_text('#!/bin/sh\necho "$PYTHONPATH|$NESTBED_STATE_DIR|$NESTBED_PREFIX|$*"\n')
    python.chmod(0o755)
    info = ConnectInfo(address="h", python=str(python), bring=True, state_dir=str(tmp_path / "root"), prefix="nu1")
    ran = subprocess.run(["sh", "-c", remote_command(info, "lab", "c", bundle_id="0.1.0-abc")],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert ran == f"{tmp_path}/root/bundles/0.1.0-abc|{tmp_path}/root|nu1|-S -m nestbed.cli.main shell lab c"
    default = ConnectInfo(address="h", python=str(python), bring=True)
    env = {"PATH": "/usr/bin:/bin"}                                   # no NESTBED_STATE_DIR there: the default
    ran = subprocess.run(["sh", "-c", remote_command(default, "lab", "c", bundle_id="0.1.0-abc")], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert ran == "/var/lib/nestbed/bundles/0.1.0-abc|||-S -m nestbed.cli.main shell lab c"
