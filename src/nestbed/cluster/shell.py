"""`nestbed shell NAME NODE` for a node on another host: an interactive session through the system's OpenSSH client.

The controller becomes `ssh -tt` (exec: the terminal, signals and the exit status are the shell's) to the host
holding the node, which runs that host's own `nestbed shell` (its interpreter with its NESTBED_STATE_DIR and
NESTBED_PREFIX, as ConnectInfo.command() starts its agent; on a real host nestbed was brought to, from that bundle):
the same bash with the same prompt as on one host. For an emulated host the client runs inside the underlay
namespace (ConnectInfo.netns), so nothing is added to this machine's own namespace; its key and pinned known_hosts
are the experiment's (cluster/emulated.py). A real host is reached with the user's keys and known_hosts, the files
the SSH transport (asyncssh) reads from $HOME. An interactive session is a channel of its own, besides the
agent's: the one-channel rule is for automated fan-out.
"""
from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import NoReturn

from nestbed.cluster.ssh import ConnectInfo
from nestbed.errors import ExperimentError

SSH = "ssh"
USER_KEYS = ("id_ed25519_sk", "id_ecdsa_sk", "id_ed448", "id_ed25519", "id_ecdsa", "id_rsa", "id_dsa")   # asyncssh's


def remote_command(info: ConnectInfo, experiment: str, node: str, bundle_id: str | None = None) -> str:
    """What the host runs: its own `nestbed shell` (its state root and prefix), in place of the login shell; with
    a bundle, the nestbed brought there (cluster/bundle.py), run as the agent is (-S)."""
    env = [f"NESTBED_STATE_DIR={shlex.quote(info.state_dir)}"] if info.state_dir else []
    env += [f"NESTBED_PREFIX={shlex.quote(info.prefix)}"] if info.prefix else []
    shell = ["-m", "nestbed.cli.main", "shell", shlex.quote(experiment), shlex.quote(node)]
    if bundle_id is None:
        return " ".join(["exec", "env", *env, shlex.quote(info.python), *shell])
    from nestbed.cluster import bundle
    where = f"d={bundle.root_expression(info.state_dir)}/bundles/{shlex.quote(bundle_id)}"
    return where + "; " + " ".join(["exec", "env", 'PYTHONPATH="$d"', *env, shlex.quote(info.python), "-S", *shell])


def ssh_argv(info: ConnectInfo, command: str, ssh: str = SSH) -> list[str]:
    """The OpenSSH client's command line: a forced tty, no prompts (a key or nothing), the host key pinned when
    the host has a known_hosts file of its own; with keys of its own, the user's configuration and agent unused
    (as the SSH transport does)."""
    argv = [ssh, "-tt", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={max(1, round(info.connect_seconds))}",
            "-o", f"ServerAliveInterval={max(1, round(info.keepalive_seconds))}", "-o", "ServerAliveCountMax=3"]
    if info.client_keys is not None:
        argv[1:1] = ["-F", "none"]
        argv += ["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
        for key in info.client_keys:
            argv += ["-i", key]
    else:                    # the user's, as asyncssh finds them ($HOME; OpenSSH itself looks in the passwd entry's)
        home = Path(os.path.expanduser("~")) / ".ssh"
        for name in USER_KEYS:
            if (home / name).is_file():
                argv += ["-i", str(home / name)]
    if info.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={info.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                 "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no"]
    else:
        argv += ["-o", f"UserKnownHostsFile={os.path.expanduser('~/.ssh/known_hosts')}",
                 "-o", "StrictHostKeyChecking=yes"]
    argv += ["-p", str(info.port), "-l", info.username, info.address, "--", command]
    return argv


def open_shell(experiment: str, node: str, host: str) -> NoReturn:
    """Replace this process with the session (its exit status is the shell's; ssh's own failures exit 255)."""
    info = connect_info(experiment, host)
    client = shutil.which(SSH)
    if client is None:
        raise ExperimentError("a shell on another host needs OpenSSH's client (ssh): apt-get install "
                              "openssh-client")
    bundle_id = None
    if info.bring:            # the bundle `up` brought there: this controller's, so its id is ours
        from nestbed.cluster.ssh import built_bundle
        bundle_id = built_bundle().id
    argv = ssh_argv(info, remote_command(info, experiment, node, bundle_id), client)
    if info.netns:
        _enter_for_good(info.netns, f"the underlay of host {host} is gone; see 'nestbed status {experiment}'")
    from nestbed.agent.localrunner import restore_signals
    restore_signals()
    os.execv(client, argv)


def connect_info(experiment: str, host: str) -> ConnectInfo:
    """How the experiment's host is reached: a real host as its status names it, else its emulated host."""
    from nestbed.realize.state import experiment as state_of
    listed = ((state_of(experiment).status().get("cluster") or {}).get("real") or {})
    if host in listed:
        from nestbed.cluster.real import RealHost
        return RealHost.from_json(listed[host]).connect_info()
    from nestbed.cluster import emulated
    hosts = emulated.load(experiment)
    if hosts is None:
        raise ExperimentError(f"experiment {experiment!r} has no hosts up (its node runs on {host}); see "
                              f"'nestbed status {experiment}'")
    return hosts.connect_info(host)


def _enter_for_good(netns: str, gone: str) -> None:
    """This process into the namespace for the rest of its life (exec follows: nothing here comes back)."""
    from nestbed.realize import namespaces, syscalls
    try:
        fd = os.open(namespaces.netns_path(netns), os.O_RDONLY)
    except OSError as error:
        raise ExperimentError(f"{gone} ({error.strerror})") from None
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    finally:
        os.close(fd)
