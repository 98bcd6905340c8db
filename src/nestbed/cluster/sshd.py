"""A real OpenSSH sshd per emulated host: throwaway keys, its configuration, starting it inside the host's namespace.

Keys are made with ssh-keygen (ed25519, no passphrase), all at once: one client key per experiment, one host key
per host, each host key pinned in the experiment's known_hosts. sshd runs in the foreground (`-D -e`), logging to
a file, listening only on the host's underlay address; root logs in with the client key and nothing else.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nestbed.errors import PreflightError
from nestbed.realize import namespaces

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
PORT = 22
PRIVSEP_DIR = Path("/run/sshd")     # sshd's empty chroot (compiled in); systemd's unit makes it, we may have to


def config(address: str, host_key: Path, authorized_keys: Path, pid_file: Path) -> str:
    # SetEnv SHLVL=1: Debian's bash sources ~/.bashrc for commands sshd starts (SSH_SOURCE_BASHRC) unless it runs
    # at shell level 2 or deeper; a root .bashrc (pyenv, cargo) costs ~90 ms per host and may change PATH.
    return "\n".join([
        f"ListenAddress {address}:{PORT}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "AllowUsers root",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "PermitUserRC no",
        "PermitUserEnvironment no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "PermitTunnel no",
        "SetEnv SHLVL=1",
        "LogLevel ERROR",
        "",
    ])


def check_installed() -> None:
    if not os.access(SSHD, os.X_OK):
        raise PreflightError(f"emulated hosts need OpenSSH's sshd ({SSHD}): apt-get install openssh-server "
                             "(./run installs it without starting it on this host)")


def generate_keys(paths: list[Path]) -> None:
    """One ed25519 key pair per path (PATH and PATH.pub), ssh-keygen processes in parallel."""
    children = [subprocess.Popen([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "nestbed", "-f", str(path)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for path in paths]
    failures = []
    for path, child in zip(paths, children):
        _, err = child.communicate()
        if child.returncode != 0:
            failures.append(f"{path.name}: {err.decode(errors='replace').strip() or child.returncode}")
    if failures:
        raise PreflightError(f"ssh-keygen failed: {failures[0]}")


def known_hosts_line(address: str, public_key: Path) -> str:
    kind, key = public_key.read_text().split()[:2]
    return f"{address} {kind} {key}\n"


def ensure_privsep_dir() -> None:
    """sshd refuses to start without /run/sshd. It is shared by every sshd of the machine (as /run/netns is by
    every namespace), so it is made when missing and never removed."""
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)


def start(netns: str, config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """sshd in the foreground inside the namespace (the forking thread's namespace is the child's)."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with namespaces.entered(netns):
            return subprocess.Popen([SSHD, "-D", "-e", "-f", str(config_path)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, cwd="/", start_new_session=True)
    finally:
        os.close(log)


def first_line(log_path: Path) -> str:
    """What sshd said first (the cause; its last line is the consequence, e.g. "terminating")."""
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[0].strip() if lines else "nothing logged"
