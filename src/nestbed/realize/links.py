"""Runtime link changes: a link or LAN down/up on every member, or its shaping replaced, while the experiment runs.

    change(state, plan, "link0", "down")
    change(state, plan, "lan0", "set", bandwidth="5Mbit", loss="1%")

Each member's own interface (the node side) is acted on: in its namespace on this host, one netlink batch per
node, or through the guest agent of the VM it lives in (op "link", which runs `apply_in_node` inside the guest).
Down takes the interface down (its routes go with it); up brings it up and puts its routes back. "set" rebuilds
the member's egress qdiscs (realize.shaping) from the segment's current shaping with the given keys replaced.
What the segment is now (state, shaping) is kept in <state>/links.json, journaled as a file, so `status` and
`linktest` see it. The guest agent imports this module at request time: keep its top-level imports light.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed import netlinkwire as wire
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import (
    HostPlan,
    InterfacePlan,
    NodePlan,
    SegmentPlan,
    ShapingPlan,
)
from nestbed.realize import netlink, shaping

ACTIONS = ("down", "up", "set")
KEYS = ("bandwidth", "delay", "jitter", "loss", "queue")
CLEAR = ("none", "off", "")          # a value that removes a key from the shaping
LINKS_FILE = "links.json"


# -- parsing ------------------------------------------------------------------------------------------------
def parse_assignments(words: list[str]) -> dict[str, str]:
    """`bandwidth=5Mbit loss=1%` → {"bandwidth": "5Mbit", "loss": "1%"}; bad keys or words: one line."""
    if not words:
        raise ExperimentError(f"set needs at least one key=value, e.g. bandwidth=5Mbit loss=1% "
                              f"(keys: {', '.join(KEYS)})")
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ExperimentError(f"{word!r} is not key=value; write e.g. bandwidth=5Mbit (keys: {', '.join(KEYS)})")
        _check_key(key)
        if key in values:
            raise ExperimentError(f"{key} is given twice")
        values[key] = value.strip()
    return values


def check_values(values: dict[str, Any]) -> None:
    """Each value on its own, with the model's unit parsers (combinations are checked against the segment's
    current shaping by `change`); one line for the first bad one."""
    from nestbed.model import units
    parsers: dict[str, Any] = {"bandwidth": units.parse_bandwidth, "delay": units.parse_time,
               "jitter": lambda v: units.parse_time(v, "jitter"), "loss": units.parse_loss, "queue": units.parse_queue}
    for key, value in values.items():
        _check_key(key)
        if value is None or (isinstance(value, str) and value.strip().lower() in CLEAR):
            continue
        try:
            parsers[key](value)
        except ValueError as error:
            raise ExperimentError(str(error)) from None


def _check_key(key: str) -> None:
    if key not in KEYS:
        import difflib
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ExperimentError(f"unknown shaping key {key!r}{hint} (keys: {', '.join(KEYS)})")


def merged_shaping(current: ShapingPlan | None, changes: dict[str, Any], where: str = "set") -> ShapingPlan | None:
    """The segment's shaping with `changes` applied (a value of none/off/"" removes a key), checked by the
    model's parsers (units, jitter needs delay …). None when nothing is left."""
    from nestbed.errors import TopologyError
    from nestbed.model.topology import Shaping
    raw: dict[str, object] = {}
    if current is not None:
        for key in KEYS:
            value = getattr(current, key)
            if value:
                raw[key] = f"{value!r}s" if key in ("delay", "jitter") else value
    for key, value in changes.items():
        _check_key(key)
        if value is None or (isinstance(value, str) and value.strip().lower() in CLEAR):
            raw.pop(key, None)
        else:
            raw[key] = value
    try:
        parsed = Shaping.parse(where, **raw)  # type: ignore[arg-type]
    except TopologyError as error:
        raise ExperimentError(str(error)) from None
    plan = ShapingPlan(bandwidth=parsed.bandwidth, delay=parsed.delay or None, jitter=parsed.jitter or None,
                       loss=parsed.loss or None, queue=parsed.queue)
    return None if plan == ShapingPlan() else plan


# -- what the segments are now ------------------------------------------------------------------------------
def links_path(state: Any) -> Any:
    return state.directory / LINKS_FILE


def load(state: Any) -> dict[str, dict[str, Any]]:
    """{segment: {"state": "up"|"down", "shaping": {...}|None, "changed": unix time}} of changed segments."""
    try:
        data = json.loads(links_path(state).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data.get("segments", {}) if isinstance(data, dict) else {}


def _shaping_from(data: dict[str, Any] | None) -> ShapingPlan | None:
    return ShapingPlan(**{k: data.get(k) for k in KEYS}) if data else None


def current(state: Any, plan: HostPlan) -> dict[str, tuple[str, ShapingPlan | None]]:
    """Every segment's (state, shaping) as it is now: the plan's, overridden by runtime changes."""
    changed = load(state)
    result = {}
    for seg in plan.segments:
        entry = changed.get(seg.name)
        if entry is None:
            result[seg.name] = ("up", seg.shaping)
        else:
            result[seg.name] = (entry.get("state", "up"), _shaping_from(entry["shaping"]) if "shaping" in entry
                                else seg.shaping)
    return result


def effective_segments(state: Any, plan: HostPlan) -> list[tuple[SegmentPlan, str]]:
    """The plan's segments with their current shaping, each with its state."""
    now = current(state, plan)
    return [(replace(seg, shaping=now[seg.name][1]), now[seg.name][0]) for seg in plan.segments]


def _save(state: Any, segment: str, link_state: str, shaping_plan: ShapingPlan | None) -> None:
    try:
        data = json.loads(links_path(state).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    data.setdefault("segments", {})[segment] = {"state": link_state,
                                                "shaping": shaping_plan.__dict__ if shaping_plan else None,
                                                "changed": time.time()}
    _write(state, data)


def _write(state: Any, data: dict[str, Any]) -> None:
    """links.json, journaled (as a file, with its temporary) before it is first written."""
    path = links_path(state)
    journal = state.journal
    if not path.exists() and not any(e.get("t") == "file" and e.get("path") == str(path)
                                     for e in journal.entries()):
        journal.record([{"t": "file", "path": str(path)}, {"t": "file", "path": str(path) + ".tmp"}])
    tmp = path.with_name(LINKS_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# -- the change ---------------------------------------------------------------------------------------------
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
    link_state, old_shaping = current(state, plan)[seg.name]
    new_shaping = old_shaping
    if action == "set":
        if not shaping_values:
            raise ExperimentError(f"set needs at least one of {', '.join(KEYS)}, e.g. set bandwidth=5Mbit")
        new_shaping = merged_shaping(old_shaping, shaping_values, f"{seg.name} set")
    members = [(plan.node(node), iface) for node, iface, _ in seg.members]
    local = [node.name for node, _ in members if node.vm is None]
    features = _host_features(state, seg.name, local, new_shaping) if action == "set" and local \
        else {"netem": False}

    by_node: dict[str, list[str]] = {}
    for node, iface in members:
        by_node.setdefault(node.name, []).append(iface)
    host_work = [(plan.node(n), names) for n, names in by_node.items() if plan.node(n).vm is None]
    vm_work = [(plan.node(n), names) for n, names in by_node.items() if plan.node(n).vm is not None]
    # Everything compiled and every socket opened first: the members then change within a short window.
    prepared = [(node, prepare_on_host(node, names, action, new_shaping, features["netem"]))
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
            _send(sock, quiet, strict, f"node {node.name}")
        except Exception as error:
            errors.append(f"node {node.name}: {error}")
    if host_work and needs_iptables(action, old_shaping, new_shaping, features["netem"]):
        from concurrent.futures import ThreadPoolExecutor

        def rules(item: tuple[NodePlan, list[str]]) -> None:
            try:
                _replace_iptables_loss(item[0], item[1], old_shaping, new_shaping)
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
    _save(state, seg.name, new_state, new_shaping)
    return {"segment": seg.name, "kind": seg.kind, "action": action, "state": new_state,
            "shaping": new_shaping.__dict__ if new_shaping else None,
            "members": [f"{node.name}:{iface}" for node, iface in members], "seconds": seconds}


def _probe(state: Any, feature: str) -> bool:
    """A kernel feature (preflight's probes fork a child in a scratch namespace: ~50 ms), remembered in
    links.json: the kernel does not change under a running experiment."""
    from nestbed.realize import preflight
    path = links_path(state)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    known = data.get("features", {})
    if feature in known:
        return bool(known[feature])
    value = preflight.has_iptables_statistic() if feature == "iptables_statistic" else preflight.has_qdisc(feature)
    _write(state, {**data, "features": {**known, feature: value}})
    return value


def _host_features(state: Any, segment: str, local: list[str], new: ShapingPlan | None) -> dict[str, bool]:
    """What this host's kernel offers for the new shaping of its local members; refuse what it cannot do."""
    features = {"netem": _probe(state, "netem")}     # also: where old loss lives (netem or iptables)
    if new is None:
        return features
    if new.bandwidth and not _probe(state, "htb"):
        raise ExperimentError(f"bandwidth needs the htb qdisc, which this kernel lacks; "
                              f"{_members_are(local)} on this host")
    wanted = [k for k in ("delay", "jitter") if getattr(new, k)]
    if wanted and not features["netem"]:
        raise ExperimentError(f"{'/'.join(wanted)} needs netem, which this kernel lacks; {_members_are(local)} "
                              f"on this host (on {segment}; qemu nodes have it)")
    if new.loss and not features["netem"] and not _probe(state, "iptables_statistic"):
        raise ExperimentError(f"loss needs netem or iptables' statistic match, neither works here; "
                              f"{_members_are(local)} on this host")
    return features


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _members_are(names: list[str]) -> str:
    return f"member {names[0]} is a process" if len(names) == 1 else f"members {_names(names)} are processes"


def _via_agent(state: Any, plan: HostPlan, node: NodePlan, names: list[str], action: str,
               new: ShapingPlan | None) -> None:
    from nestbed.realize import vms
    assert node.vm is not None
    client = vms.client(state, plan, plan.vm(node.vm))
    client.request("link", timeout=15.0, node=node.name, interfaces=names, action=action,
                   shaping=new.__dict__ if new else None)


# -- one node's interfaces (on the host, or inside a guest) -------------------------------------------------
def link_down(ifindex: int) -> bytes:
    return wire.message(wire.RTM_NEWLINK, wire.NLM_F_REQUEST | wire.NLM_F_ACK,
                        wire.IFINFO.pack(0, 0, ifindex, 0, wire.IFF_UP))


def delete_root_qdisc(ifindex: int) -> bytes:
    return wire.message(wire.RTM_DELQDISC, wire.NLM_F_REQUEST | wire.NLM_F_ACK,
                        wire.TCMSG.pack(0, ifindex, 0, shaping.TC_H_ROOT, 0))


def _replacing(message: bytes) -> bytes:
    """A create message turned into create-or-replace (routes put back after an up)."""
    return wire.with_flags(message, wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.NLM_F_CREATE | wire.NLM_F_REPLACE)


def node_batches(node: NodePlan, names: list[str], action: str, new: ShapingPlan | None, netem: bool,
                 ifindex: dict[str, int]) -> tuple[netlink.Batch, netlink.Batch]:
    """(messages whose failure does not matter, messages that must succeed) for one node."""
    quiet, strict = netlink.Batch(), netlink.Batch()
    ifaces = [i for i in node.interfaces if i.name in names]
    if action == "down":
        for iface in ifaces:
            strict.add(link_down(ifindex[iface.name]), f"{iface.name} down")
    elif action == "up":
        for iface in ifaces:
            strict.add(netlink.link_up(ifindex[iface.name]), f"{iface.name} up")
        for route in node.routes:
            if route.device in names:
                strict.add(_replacing(netlink.route(route.destination, route.gateway, ifindex[route.device])),
                           f"route to {route.destination} via {route.gateway}")
    else:
        for iface in ifaces:
            quiet.add(delete_root_qdisc(ifindex[iface.name]), f"old qdisc on {iface.name}")
            here = replace(iface, ifindex=ifindex[iface.name], shaping=new)
            for message, purpose in shaping.messages(here, netem):
                strict.add(message, purpose)
    return quiet, strict


def _send(sock: Any, quiet: netlink.Batch, strict: netlink.Batch, where: str) -> None:
    """Send on a socket opened in the node's namespace, then close it."""
    try:
        if quiet.messages:
            try:
                netlink.send(sock, quiet, where)
            except netlink.NetlinkError:
                pass        # e.g. no root qdisc to delete
        netlink.send(sock, strict, where)
    finally:
        sock.close()


def prepare_on_host(node: NodePlan, names: list[str], action: str, new: ShapingPlan | None,
                    netem: bool) -> tuple[Any, netlink.Batch, netlink.Batch]:
    """A process node of this host: its batches (plan ifindexes) and a netlink socket in its namespace."""
    from nestbed.realize import namespaces
    ifindex = {i.name: i.ifindex for i in node.interfaces}
    quiet, strict = node_batches(node, names, action, new, netem, ifindex)
    try:
        with namespaces.entered(node.netns):
            sock = netlink.open_socket()
    except OSError as error:
        raise ExperimentError(f"cannot enter node {node.name} ({error.strerror}); its namespace may be gone") \
            from None
    return sock, quiet, strict


def needs_iptables(action: str, old: ShapingPlan | None, new: ShapingPlan | None, netem: bool) -> bool:
    return action == "set" and not netem and bool((old and old.loss) or (new and new.loss))


def _replace_iptables_loss(node: NodePlan, names: list[str], old: ShapingPlan | None,
                           new: ShapingPlan | None) -> None:
    """Swap the iptables `statistic` rules of these interfaces (loss where the kernel has no netem): one
    iptables-restore deleting the old rules by their exact text and adding the new; if the old rules are not
    as expected, they are found with iptables-save instead."""
    import subprocess

    from nestbed.realize import processes

    def run(argv: list[str], text: str | None = None) -> tuple[int, str]:
        result = subprocess.run(argv, input=text, text=True, capture_output=True,
                                preexec_fn=lambda: processes.enter_netns(node.netns))
        return result.returncode, result.stdout if result.returncode == 0 else result.stderr.strip()

    def body(deletions: list[str]) -> str:
        added = shaping.iptables_loss_rules([replace(i, shaping=new) for i in node.interfaces if i.name in names],
                                            False)
        lines = "".join(line + "\n" for line in deletions)
        if added:
            lines += added.split("\n", 1)[1].rsplit("COMMIT", 1)[0]
        return "*filter\n" + lines + "COMMIT\n" if lines else ""

    expected = shaping.iptables_loss_rules([replace(i, shaping=old) for i in node.interfaces if i.name in names],
                                           False)
    deletions = ["-D" + line[2:] for line in expected.splitlines() if line.startswith("-A ")]
    text = body(deletions)
    if text and run(["iptables-restore", "-w", "--noflush"], text)[0] == 0:
        return
    code, saved = run(["iptables-save", "-t", "filter"])
    if code != 0:
        raise netlink.NetlinkError(f"iptables-save failed: {saved}")
    deletions = []
    for line in saved.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0] == "-A" and parts[1] in ("OUTPUT", "FORWARD") and parts[2] == "-o" \
                and parts[3] in names and "statistic" in parts:
            deletions.append("-D" + line[2:])
    text = body(deletions)
    if text:
        code, message = run(["iptables-restore", "-w", "--noflush"], text)
        if code != 0:
            raise netlink.NetlinkError(f"iptables loss rules failed: {message}")


def apply_in_node(node: NodePlan, names: list[str], action: str, new: dict[str, Any] | None) -> None:
    """Inside a guest (the guest agent's "link" op): the node is the VM itself (netns "") or a namespace of a
    vhost; interfaces are found by name there. Guest kernels have netem."""
    import socket

    from nestbed.realize import namespaces
    shaping_plan = _shaping_from(new)

    def here() -> None:
        ifindex = {name: socket.if_nametoindex(name) for name in names}
        quiet, strict = node_batches(node, names, action, shaping_plan, True, ifindex)
        _send(netlink.open_socket(), quiet, strict, f"node {node.name}")
    if node.netns:
        with namespaces.entered(node.netns):
            here()
    else:
        here()


def interfaces_of(plan: HostPlan, segment: SegmentPlan) -> list[tuple[NodePlan, InterfacePlan]]:
    """Each member's node and its interface on the segment."""
    result: list[tuple[NodePlan, InterfacePlan]] = []
    for node_name, iface_name, _ in segment.members:
        node = plan.node(node_name)
        result.extend((node, i) for i in node.interfaces if i.name == iface_name)
    return result
