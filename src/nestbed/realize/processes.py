"""Programs inside nodes: entering a node (network, hosts file, hostname), start commands.

A process node is a network namespace; a program "in" the node also gets a private mount namespace with the
experiment's hosts file on /etc/hosts and a /sys of the node's network, and a UTS namespace named after the node
(what `ip netns exec` does, plus the hostname).
"""
from __future__ import annotations

import functools
import os
import subprocess

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed import paths, procs
from nestbed.plan.hostplan import NodePlan
from nestbed.realize import identity, namespaces, syscalls
from nestbed.realize.state import ExperimentState

MS_REMOUNT = 0x20


def enter_netns(netns: str) -> None:
    fd = os.open(namespaces.netns_path(netns), os.O_RDONLY)
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    finally:
        os.close(fd)


def enter_node(netns: str, hosts_file: str, hostname: str, identity_dir: str | None = None,
               mailbox_dir: str | None = None, netns_fd: int | None = None) -> None:
    """Move the calling (single-threaded) process into a node. Used before exec and in preexec_fn.

    `identity_dir` (`<state>/nodes/<node>`, see realize.identity) goes read-only over /var/emulab, so the node
    reads its own /var/emulab/boot; `mailbox_dir` (`<state>/mailbox/<node>`) goes read-write over
    /var/nestbed/mailbox. The mounts live only in the node's mount namespace. `netns_fd`: an open fd of the
    node's network namespace (the host agent's launcher holds them), instead of its name.
    """
    if netns_fd is not None:
        syscalls.setns(netns_fd, syscalls.CLONE_NEWNET)
    else:
        enter_netns(netns)
    syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS)
    syscalls.mount(None, "/", None, syscalls.MS_SLAVE | syscalls.MS_REC)
    if os.path.exists(hosts_file):
        syscalls.mount(hosts_file, "/etc/hosts", None, syscalls.MS_BIND)
    if identity_dir is not None:
        try:
            syscalls.mount(identity_dir, "/var/emulab", None, syscalls.MS_BIND)
            syscalls.mount(None, "/var/emulab", None, syscalls.MS_BIND | MS_REMOUNT | syscalls.MS_RDONLY)
        except OSError:
            pass      # an experiment without identity files (or no /var/emulab mountpoint): nothing to show
    if mailbox_dir is not None:
        try:
            syscalls.mount(mailbox_dir, paths.MAILBOX_MOUNTPOINT, None, syscalls.MS_BIND)
        except OSError:
            pass      # no mailbox (an experiment made before mailboxes, or no mountpoint)
    try:
        syscalls.umount("/sys")
        syscalls.mount("sysfs", "/sys", "sysfs", 0)
    except OSError:
        pass          # /sys of the host stays visible; the network is still the node's
    syscalls.sethostname(hostname)


def node_environment(experiment: str, node: str) -> dict[str, str]:
    import sys
    path = os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    scripts = os.path.dirname(sys.executable)        # nestbed's own (nestbed-event) in its venv
    if scripts not in path.split(os.pathsep):
        path = f"{path}{os.pathsep}{scripts}"
    return {**os.environ, "PATH": path, "NESTBED_EXPERIMENT": experiment, "NESTBED_NODE": node,
            "NESTBED_MAILBOX": paths.MAILBOX_MOUNTPOINT}


def mailbox_dir(state: ExperimentState, node: str) -> str | None:
    """The node's mailbox directory on the host (None when the experiment has none)."""
    path = paths.mailbox_dir(state.directory, node)
    return str(path) if path.is_dir() else None


def start_commands(nodes: list[NodePlan], state: ExperimentState, progress: Any = None) -> None:
    """Start nodes' commands in the background, output appended to logs/NODE.log.

    One journal write before (log files, commands) and one after (pids with their start times): teardown also
    finds every process by its namespace, so a crash in between loses nothing.
    """
    state.journal.record([{"t": "file", "path": str(state.log_dir / f"{node.name}.log")} for node in nodes]
                         + [{"t": "process", "node": node.name, "netns": node.netns, "command": command}
                            for node in nodes for command in node.commands])
    started = []
    for node in nodes:
        with open(state.log_dir / f"{node.name}.log", "ab") as log:
            for command in node.commands:
                child = subprocess.Popen(
                    ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd="/", env=node_environment(state.name, node.name), start_new_session=True,
                    preexec_fn=functools.partial(enter_node, node.netns, str(state.hosts_path), node.name,
                                                 str(identity.node_dir(state.directory, node.name)),
                                                 mailbox_dir(state, node.name)))
                started.append({"t": "pid", "node": node.name, "pid": child.pid,
                                "start": procs.start_time(child.pid)})
        if progress is not None:
            progress.advance()
    state.journal.record(started)


def shell_rc(experiment: str) -> str:
    """bash rc for `nestbed shell`: the user's own rc, then a prompt naming experiment and node."""
    return ("[ -f ~/.bashrc ] && . ~/.bashrc\n"
            f'PS1="[{experiment}:${{NESTBED_NODE}}] \\\\w\\\\$ "\n')
