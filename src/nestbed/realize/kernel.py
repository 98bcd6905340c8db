"""The effects realization and teardown have on this host, behind one interface (tests use a fake).

`Kernel` names every effect realize.apply and realize.teardown need: namespaces (made with a callback that runs
inside each new one, for sysctls), netlink batches (in one namespace, or through one socket holding the fds of
many, so a thousand veths are one batch), iptables-restore in a namespace, identity files and mailboxes (they
take claims on /var/emulab and /var/nestbed and mount tmpfs), and finding and killing the processes in
namespaces. `LinuxKernel` is the real one; tests/unit/fake_kernel.py records objects instead.
VMs, the control network and start commands stay on their own code paths (plans without them touch nothing).
"""
from __future__ import annotations

import os
import socket
import subprocess

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path
    from typing import Any, Protocol

    from nestbed.plan.hostplan import HostPlan
    from nestbed.plan.identity import ControlInfo
    from nestbed.realize.state import ExperimentState
else:
    Protocol = object

from nestbed import procs
from nestbed.realize import identity, mailboxes, namespaces, netlink, processes


class Kernel(Protocol):
    def features(self, plan: HostPlan) -> dict[str, bool]:
        """What the kernel offers the plan (netem, iptables loss …); raises PreflightError when it cannot."""
        ...

    def create_namespaces(self, names: list[str], inside: Callable[[str], None],
                          advance: Callable[[int], None]) -> None:
        """Create each namespace; `inside(name)` runs in it (sysctls through write_sysctl)."""
        ...

    def write_sysctl(self, path: str, value: str, if_present: bool = False) -> None:
        """/proc/sys/PATH of the namespace the calling thread is in; `if_present`: skip a missing one."""
        ...

    def host_sysctl(self, path: str) -> str | None:
        ...

    def set_sysctls(self, netns: str, values: dict[str, str]) -> None:
        """/proc/sys/PATH = value in a namespace that exists (a modify: a node's forwarding changed)."""
        ...

    def send(self, netns: str, batch: netlink.Batch, where: str) -> None:
        """One netlink socket in the namespace ("" for the caller's own), the batch, every ack."""
        ...

    def send_with_namespaces(self, names: list[str], build: Callable[[dict[str, int]], netlink.Batch],
                             where: str, inside: str = "") -> int:
        """Open the namespaces, `build(fds)` a batch naming them, send it through one socket (in namespace
        `inside`, "" the caller's own); returns its size."""
        ...

    def sender_ifindexes(self) -> set[int] | None:
        """The ifindexes of the caller's namespace when this kernel checks a new link's ifindex against the
        sender's namespace (before 6.15: realize/linksender.py); None when it checks the target's."""
        ...

    def host_link_index(self, name: str) -> int | None:
        """The ifindex of a link in the caller's own namespace (a VXLAN's underlay), None when there is none."""
        ...

    def iptables_restore(self, netns: str, rules: str) -> tuple[int, str]:
        """`iptables-restore --noflush` in the namespace: (exit code, stderr)."""
        ...

    def iptables_save(self, netns: str) -> tuple[int, str]:
        """`iptables-save` in the namespace: (exit code, its rules or stderr)."""
        ...

    def write_identity(self, state: ExperimentState, plan: HostPlan, control: ControlInfo | None) -> None:
        ...

    def remove_identity(self, entries: list[dict[str, Any]]) -> None:
        ...

    def create_mailboxes(self, state_dir: Path, experiment: str, nodes: Iterable[str]) -> None:
        ...

    def remove_mailboxes(self, entries: list[dict[str, Any]]) -> None:
        ...

    def processes_in(self, names: list[str]) -> set[int]:
        """Pids of every process in these namespaces (missing ones hold none)."""
        ...

    def process_start_time(self, pid: int) -> int | None:
        ...

    def kill(self, pids: list[int]) -> list[int]:
        """SIGTERM, SIGKILL what is left, wait until they are gone from the process table: the pids still
        listed (zombies nobody reaped, processes that did not die)."""
        ...

    def remove_namespace(self, name: str) -> bool:
        """False when it was not there."""
        ...

    def delete_link(self, netns: str, name: str) -> None:
        """Delete a link by name in a namespace ("" for the host's own), if it is there."""
        ...


class LinuxKernel:
    def features(self, plan: HostPlan) -> dict[str, bool]:
        from nestbed.realize import preflight
        return preflight.check(plan)

    def create_namespaces(self, names: list[str], inside: Callable[[str], None],
                          advance: Callable[[int], None]) -> None:
        namespaces.create(names, inside=inside, advance=advance)

    def write_sysctl(self, path: str, value: str, if_present: bool = False) -> None:
        if if_present and not os.path.exists(f"/proc/sys/{path}"):
            return
        namespaces.write_sysctl(path, value)

    def set_sysctls(self, netns: str, values: dict[str, str]) -> None:
        import threading
        failed: list[BaseException] = []

        def inside() -> None:     # a thread of its own enters the namespace: the caller's stays where it is
            try:
                with namespaces.entered(netns):
                    for path, value in values.items():
                        namespaces.write_sysctl(path, value)
            except BaseException as error:
                failed.append(error)
        thread = threading.Thread(target=inside)
        thread.start()
        thread.join()
        if failed:
            raise failed[0]

    def host_sysctl(self, path: str) -> str | None:
        try:
            with open(f"/proc/sys/{path}") as handle:
                return handle.read().strip()
        except OSError:
            return None

    def send(self, netns: str, batch: netlink.Batch, where: str) -> None:
        sock = netlink.open_socket(netns)
        try:
            netlink.send(sock, batch, where)
        finally:
            sock.close()

    def send_with_namespaces(self, names: list[str], build: Callable[[dict[str, int]], netlink.Batch],
                             where: str, inside: str = "") -> int:
        fds: dict[str, int] = {}
        try:
            for name in names:
                fds[name] = os.open(namespaces.netns_path(name), os.O_RDONLY)
            batch = build(fds)
            sock = netlink.open_socket(inside)
            try:
                netlink.send(sock, batch, where)
            finally:
                sock.close()
            return len(batch)
        finally:
            for fd in fds.values():
                os.close(fd)

    def sender_ifindexes(self) -> set[int] | None:
        from nestbed.realize import linksender
        release = os.environ.get("NESTBED_KERNEL_RELEASE") or os.uname().release    # tests: an older one's path
        if not linksender.sender_checks_ifindex(release):
            return None
        return {index for index, _ in socket.if_nameindex()}      # the calling thread's namespace

    def host_link_index(self, name: str) -> int | None:
        try:
            return socket.if_nametoindex(name)      # an ioctl in the calling thread's namespace
        except OSError:
            return None

    def iptables_restore(self, netns: str, rules: str) -> tuple[int, str]:
        result = subprocess.run(["iptables-restore", "-w", "--noflush"], input=rules, text=True,
                                capture_output=True, preexec_fn=lambda: processes.enter_netns(netns))
        return result.returncode, result.stderr.strip()

    def iptables_save(self, netns: str) -> tuple[int, str]:
        result = subprocess.run(["iptables-save"], text=True, capture_output=True,
                                preexec_fn=lambda: processes.enter_netns(netns))
        return result.returncode, result.stdout if result.returncode == 0 else result.stderr.strip()

    def write_identity(self, state: ExperimentState, plan: HostPlan, control: ControlInfo | None) -> None:
        identity.write_identity(state, plan, control)

    def remove_identity(self, entries: list[dict[str, Any]]) -> None:
        identity.remove_identity(entries)        # unmounts the nodes' tmpfs, releases /var/emulab

    def create_mailboxes(self, state_dir: Path, experiment: str, nodes: Iterable[str]) -> None:
        mailboxes.create_mailboxes(state_dir, experiment, nodes)

    def remove_mailboxes(self, entries: list[dict[str, Any]]) -> None:
        mailboxes.remove_mailboxes(entries)      # unmounts the mailboxes' tmpfs, releases /var/nestbed/mailbox

    def processes_in(self, names: list[str]) -> set[int]:
        ids = {nsid for nsid in map(namespaces.namespace_id, names) if nsid is not None}
        return set(namespaces.processes_in(ids)) if ids else set()

    def process_start_time(self, pid: int) -> int | None:
        return procs.start_time(pid)

    def kill(self, pids: list[int]) -> list[int]:
        starts = {pid: procs.start_time(pid) for pid in pids}
        procs.kill_all(pids)
        return procs.wait_gone(starts, procs.GONE_SECONDS)

    def remove_namespace(self, name: str) -> bool:
        return namespaces.remove(name)

    def delete_link(self, netns: str, name: str) -> None:
        from pyroute2 import IPRoute, NetNS
        with NetNS(netns) if netns else IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)


LINUX = LinuxKernel()
