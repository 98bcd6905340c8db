"""A node in its host's own namespace (a physical node): that namespace is shared with the host's own links,
routes and firewall, so what nestbed puts there must not clash with them and must come out exactly.

- Its name: an emulated host's namespace has one (the plan gives it); a real host's root namespace has none, so
  the agent bind-mounts a handle of its own namespace at /run/netns/<the node's netns name>, journaled as
  HANDLE. Teardown unmounts the handle alone: it never kills what runs in that namespace (the host's processes)
  nor destroys it.
- Its interfaces come with fixed ifindexes (plan/multihost.py) and names: both must be free there (`check`).
- Its loss rules (iptables, where the kernel has no netem) carry the experiment's mark as a comment, are
  journaled as MARKED_RULES, and teardown deletes the rules carrying that mark, and only those: the namespace,
  whose destruction removes a process node's rules, stays.
"""
from __future__ import annotations

import os
import socket

from nestbed.errors import PreflightError
from nestbed.realize import namespaces, syscalls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from nestbed.plan.hostplan import NodePlan
    from nestbed.realize.kernel import Kernel

HANDLE = "netns_handle"
MARKED_RULES = "iptables_marked"


def _own_namespace() -> tuple[int, int]:
    st = os.stat("/proc/self/ns/net")
    return st.st_dev, st.st_ino


def check(nodes: list[NodePlan]) -> None:
    """Before anything is made: each node's namespace is this agent's own (or has no name yet), and its
    interfaces' names and ifindexes are free there."""
    own = _own_namespace()
    for node in nodes:
        found = namespaces.namespace_id(node.netns)
        if found is not None and found != own:
            raise PreflightError(f"node {node.name} is to be this host's own namespace, but {node.netns} names "
                                 f"another one; remove it (ip netns del {node.netns}) or rename the experiment")
        for iface in node.interfaces:
            try:
                socket.if_nametoindex(iface.name)
            except OSError:
                pass
            else:
                raise PreflightError(f"node {node.name} (kind physical) would add interface {iface.name} to this "
                                     f"host's own namespace, which has one of that name already; rename it "
                                     f"in the topology (or free it on the host)")
            if iface.ifindex:
                try:
                    taken = socket.if_indextoname(iface.ifindex)
                except OSError:
                    continue
                raise PreflightError(f"node {node.name}: ifindex {iface.ifindex} for its {iface.name} is taken on "
                                     f"this host by {taken}")


def attach(nodes: list[NodePlan], journal: Any) -> None:
    """Name this agent's namespace after each node that has no handle yet (journaled first)."""
    missing = [node.netns for node in nodes if not namespaces.exists(node.netns)]
    if not missing:
        return
    journal.record({"t": HANDLE, "name": name} for name in missing)
    namespaces.ensure_shared_netns_dir()
    for name in missing:
        path = namespaces.netns_path(name)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        syscalls.mount("/proc/self/ns/net", path, None, syscalls.MS_BIND)


def remove_handles(entries: list[dict[str, Any]]) -> int:
    """Unmount and unlink the handles (never the namespace behind them)."""
    return sum(1 for e in entries if e["t"] == HANDLE and namespaces.remove(e["name"]))


def marked_rules_removal(saved: str, mark: str) -> str:
    """iptables-restore input deleting every rule of `saved` (iptables-save output) that carries `mark`."""
    tables: dict[str, list[str]] = {}
    table = None
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table and line.startswith("-A ") and (f'"{mark}"' in line or f" {mark} " in line
                                                   or line.endswith(f" {mark}")):
            tables.setdefault(table, []).append("-D " + line[3:])
    return "".join(f"*{name}\n" + "\n".join(rules) + "\nCOMMIT\n" for name, rules in tables.items())


def remove_marked_rules(entries: list[dict[str, Any]], kernel: Kernel) -> list[str]:
    """Delete the journaled namespaces' rules carrying their mark; one line per namespace where it failed."""
    failed = []
    for entry in entries:
        if entry["t"] != MARKED_RULES or not namespaces.exists(entry["netns"]):
            continue
        code, saved = kernel.iptables_save(entry["netns"])
        script = marked_rules_removal(saved, entry["mark"]) if code == 0 else ""
        if script:
            code, error = kernel.iptables_restore(entry["netns"], script)
            if code != 0:
                failed.append(f"iptables rules marked {entry['mark']} in {entry['netns']}: {error}")
    return failed
