"""Runtime link changes: a link or LAN down/up on every member, or its shaping replaced, while the experiment runs.

    change(state, plan, "link0", "down")
    change(state, plan, "lan0", "set", bandwidth="5Mbit", loss="1%")

Each member's own interface (the node side) is acted on: in its namespace on this host, one netlink batch per
node (realize/linkmember.py), or through the guest agent of the VM it lives in (op "link", which runs
`linkmember.apply_in_node` inside the guest). Down takes the interface down (its routes go with it); up brings it
up and puts its routes back. "set" rebuilds the member's egress qdiscs (realize.shaping) from the segment's
current shaping with the given keys replaced (realize/linkvalues.py). What the segment is now (state, shaping)
is kept in <state>/links.json (realize/linkstate.py), so `status` and `linktest` see it. A segment with
per-member shaping (a member's own egress or ingress) refuses "set": edit the file and reconcile instead.
"""
from __future__ import annotations

import os
import time

TYPE_CHECKING = False     # not typing's: keep the realize modules light
if TYPE_CHECKING:
    from typing import Any

from nestbed.errors import ExperimentError
from nestbed.plan import pathshaping
from nestbed.plan.hostplan import HostPlan, NodePlan, SegmentPlan, ShapingPlan
from nestbed.realize import linkmember, linkstate
from nestbed.realize.linkvalues import KEYS, merged_shaping

ACTIONS = ("down", "up", "set")


def find_segment(plan: HostPlan, name: str) -> SegmentPlan:
    for seg in plan.segments:
        if seg.name == name:
            return seg
    import difflib
    names = [s.name for s in plan.segments]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; it has {', '.join(names[:10]) or 'none'}"
    raise ExperimentError(f"experiment {plan.experiment!r} has no link or LAN {name!r}{hint}")


def change(state: Any, plan: HostPlan, segment: str, action: str, **shaping_values: Any) -> dict[str, Any]:
    """Take a link/LAN down or up on every member, or (action "set") replace its shaping on every member's
    egress. Returns what was done: segment, action, state, shaping, members, seconds (time to apply).
    Changes of one experiment are serialized (flock on its state directory: links.json is read, then written)."""
    import fcntl
    fd = os.open(state.directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _change(state, plan, segment, action, **shaping_values)
    finally:
        os.close(fd)


def _change(state: Any, plan: HostPlan, segment: str, action: str, **shaping_values: Any) -> dict[str, Any]:
    if action not in ACTIONS:
        raise ExperimentError(f"unknown link action {action!r}; use down, up or set")
    seg = find_segment(plan, segment)
    if action != "set" and shaping_values:
        raise ExperimentError(f"{action} takes no shaping values; use: set {' '.join(shaping_values)}")
    link_state, old_shaping = linkstate.current(state, plan)[seg.name]
    new_shaping = old_shaping
    if action == "set":
        if not shaping_values:
            raise ExperimentError(f"set needs at least one of {', '.join(KEYS)}, e.g. set bandwidth=5Mbit")
        new_shaping = merged_shaping(old_shaping, shaping_values, f"{seg.name} set")
        if pathshaping.has_member_shaping(plan, seg):
            # The members' qdiscs hold their own settings composed with the segment's: replacing them with the
            # segment's alone would silently drop those (the plan keeps only the composition).
            raise ExperimentError(f"{seg.kind} {seg.name} has per-member shaping (egress/ingress); set cannot "
                                  f"change it at run time: edit the topology file and run `nestbed up` again")
    here = {node.name for node in plan.nodes}     # a multi-host experiment: this host changes its members only
    members = [(plan.node(node), iface) for node, iface, _ in seg.members if node in here]
    if not members:
        raise ExperimentError(f"{seg.name} has no member on this host ({plan.host})")
    local = [node.name for node, _ in members if node.vm is None]
    features = _host_features(state, seg.name, local, new_shaping) if action == "set" and local \
        else {"netem": False}

    by_node: dict[str, list[str]] = {}
    for node, iface in members:
        by_node.setdefault(node.name, []).append(iface)
    host_work = [(plan.node(n), names) for n, names in by_node.items() if plan.node(n).vm is None]
    vm_work = [(plan.node(n), names) for n, names in by_node.items() if plan.node(n).vm is not None]
    # Everything compiled and every socket opened first: the members then change within a short window.
    prepared = [(node, linkmember.prepare_on_host(node, names, action, new_shaping, features["netem"]))
                for node, names in host_work]
    started = time.monotonic()
    errors: list[str] = []
    threads = []
    if vm_work:
        import threading

        def remote(node: NodePlan, names: list[str]) -> None:
            try:
                _via_agent(state, plan, node, names, action, new_shaping)
            except Exception as error:     # collected; reported in one line below
                errors.append(str(error))
        for node, names in vm_work:
            thread = threading.Thread(target=remote, args=(node, names))
            thread.start()
            threads.append(thread)
    for node, (sock, quiet, strict) in prepared:
        try:
            linkmember.send(sock, quiet, strict, f"node {node.name}")
        except Exception as error:
            errors.append(f"node {node.name}: {error}")
    if host_work and linkmember.needs_iptables(action, old_shaping, new_shaping, features["netem"]):
        from concurrent.futures import ThreadPoolExecutor

        def rules(item: tuple[NodePlan, list[str]]) -> None:
            try:
                linkmember.replace_iptables_loss(item[0], item[1], old_shaping, new_shaping)
            except Exception as error:
                errors.append(f"node {item[0].name}: {error}")
        with ThreadPoolExecutor(min(16, len(host_work))) as pool:
            list(pool.map(rules, host_work))
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    if errors:
        raise ExperimentError(f"{action} on {seg.name} failed: {errors[0]}"
                              + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    new_state = {"down": "down", "up": "up", "set": link_state}[action]
    linkstate.save(state, seg.name, new_state, new_shaping)
    return {"segment": seg.name, "kind": seg.kind, "action": action, "state": new_state,
            "shaping": new_shaping.__dict__ if new_shaping else None,
            "members": [f"{node.name}:{iface}" for node, iface in members], "seconds": seconds}


def _host_features(state: Any, segment: str, local: list[str], new: ShapingPlan | None) -> dict[str, bool]:
    """What this host's kernel offers for the new shaping of its local members; refuse what it cannot do."""
    features = {"netem": linkstate.probe(state, "netem")}     # also: where old loss lives (netem or iptables)
    if new is None:
        return features
    if new.bandwidth and not linkstate.probe(state, "htb"):
        raise ExperimentError(f"bandwidth needs the htb qdisc, which this kernel lacks; "
                              f"{_members_are(local)} on this host")
    wanted = [k for k in ("delay", "jitter") if getattr(new, k)]
    if wanted and not features["netem"]:
        raise ExperimentError(f"{'/'.join(wanted)} needs netem, which this kernel lacks; {_members_are(local)} "
                              f"on this host (on {segment}; qemu nodes have it)")
    if new.loss and not features["netem"] and not linkstate.probe(state, "iptables_statistic"):
        raise ExperimentError(f"loss needs netem or iptables' statistic match, neither works here; "
                              f"{_members_are(local)} on this host")
    return features


def _members_are(names: list[str]) -> str:
    from nestbed.realize.preflight import name_list
    return f"member {names[0]} is a process" if len(names) == 1 else f"members {name_list(names)} are processes"


def _via_agent(state: Any, plan: HostPlan, node: NodePlan, names: list[str], action: str,
               new: ShapingPlan | None) -> None:
    from nestbed.realize import vms
    assert node.vm is not None
    client = vms.client(state, plan, plan.vm(node.vm))
    client.request("link", timeout=15.0, node=node.name, interfaces=names, action=action,
                   shaping=new.__dict__ if new else None)
