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
def test_a_host_of_the_users_own_keeps_the_users_configuration_and_keys():
    info = ConnectInfo.from_destination("admin@192.0.2.10:2222")
    argv = ssh_argv(info, "exec true")
    assert "-F" not in argv and "-i" not in argv and not any("KnownHostsFile" in a for a in argv)
    resolved = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True, check=True).stdout
    assert "port 2222" in resolved.splitlines() and "user admin" in resolved.splitlines()
