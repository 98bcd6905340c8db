"""How plans and experiments look in a terminal or as JSON (read-only)."""
from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from nestbed.model.units import format_bandwidth, format_time
from nestbed.plan.hostplan import HostPlan, ShapingPlan
from nestbed.realize import namespaces
from nestbed.realize.state import ExperimentState, all_experiments, require

MAX_ROWS = 200


def shaping_text(shaping: ShapingPlan | None) -> str:
    if shaping is None:
        return ""
    parts = []
    if shaping.bandwidth:
        parts.append(format_bandwidth(shaping.bandwidth))
    if shaping.delay:
        parts.append(format_time(shaping.delay) + (f"±{format_time(shaping.jitter)}" if shaping.jitter else ""))
    if shaping.loss:
        parts.append(f"{shaping.loss * 100:g}% loss")
    if shaping.queue:
        parts.append(f"queue {shaping.queue}")
    return " ".join(parts)


def links_json(plan: HostPlan, state: ExperimentState | None = None) -> list[dict[str, Any]]:
    """Every link and LAN; with the experiment's state, as it is now (`nestbed link` changes: state, shaping)."""
    from nestbed.realize import linkstate
    now = linkstate.current(state, plan) if state is not None else {}
    result = []
    for seg in plan.segments:
        link_state, shaping = now.get(seg.name, ("up", seg.shaping))
        entry: dict[str, Any] = {"name": seg.name, "kind": seg.kind}
        ends = [{"node": n, "interface": i, "address": a} for n, i, a in seg.members]
        entry["ends" if seg.kind == "link" else "members"] = ends
        entry.update(subnet=seg.subnet, state=link_state, shaping=shaping.__dict__ if shaping else None)
        result.append(entry)
    return result


def vms_json(plan: HostPlan) -> list[dict[str, Any]]:
    return [{"name": vm.name, "kind": vm.kind, "cpus": vm.cpus, "memory_mib": vm.memory,
             "control_address": vm.control_address,
             "nodes": [n.name for n in plan.nodes if n.vm == vm.name]} for vm in plan.vms]


def nodes_json(plan: HostPlan) -> list[dict[str, Any]]:
    return [{"name": n.name, "kind": n.kind, "netns": n.netns, "forwarding": n.forwarding,
             "interfaces": [{"name": i.name, "address": i.address, "mac": i.mac, "segment": i.segment}
                            for i in n.interfaces],
             "routes": [r.__dict__ for r in n.routes], "commands": n.commands,
             **({"host": n.host} if n.host else {})} for n in plan.nodes]


def _nodes_table(plan: HostPlan, title: str) -> Table:
    where = any(node.host for node in plan.nodes)          # a multi-host experiment: where each node runs
    table = Table(title=title, title_justify="left")
    for column in ("node", "kind", *(("host",) if where else ()), "interfaces", "routes"):
        table.add_column(column)
    for node in plan.nodes[:MAX_ROWS]:
        ifaces = ", ".join(f"{i.name} {i.address} ({i.segment})" for i in node.interfaces)
        kind = node.kind + (" router" if node.forwarding else "")
        host = (node.host or "") + (f" / {node.vm}" if node.vm else "")
        table.add_row(node.name, kind, *((host,) if where else ()), ifaces, str(len(node.routes)))
    if len(plan.nodes) > MAX_ROWS:
        table.add_row(f"… {len(plan.nodes) - MAX_ROWS} more", "", *(("",) if where else ()), "", "")
    return table


def _links_table(plan: HostPlan, state: ExperimentState | None = None) -> Table:
    from nestbed.realize import linkstate
    now = linkstate.current(state, plan) if state is not None else {}
    table = Table(title="links and LANs", title_justify="left")
    columns = ("name", "kind", "subnet", "members", "shaping") + (("state",) if state is not None else ())
    for column in columns:
        table.add_column(column)
    for seg in plan.segments[:MAX_ROWS]:
        members = ", ".join(n for n, _, _ in seg.members[:8]) + (" …" if len(seg.members) > 8 else "")
        link_state, shaping = now.get(seg.name, ("up", seg.shaping))
        row = [seg.name, seg.kind, seg.subnet, f"{members} ({len(seg.members)})", shaping_text(shaping)]
        if state is not None:
            row.append(link_state if link_state == "up" else f"[bold red]{link_state}[/]")
        table.add_row(*row)
    return table


def print_plan(console: Console, plan: HostPlan) -> None:
    console.print(_nodes_table(plan, f"experiment {plan.experiment} on host {plan.host}"))
    console.print(_links_table(plan))
    console.print(f"{len(plan.netns_names)} network namespaces, {len(plan.veths)} veth pairs, "
                  f"{len(plan.bridges)} bridges, {sum(len(n.routes) for n in plan.nodes)} routes")
    if plan.vms:
        held = {vm.name: sum(1 for n in plan.nodes if n.vm == vm.name) for vm in plan.vms}
        console.print(f"{len(plan.vms)} VMs: " + ", ".join(
            f"{vm.name} ({vm.kind}{f', {held[vm.name]} nodes' if vm.kind == 'vhost' else ''})" for vm in plan.vms))


def _summary(state: ExperimentState) -> dict[str, Any]:
    status = state.status()
    plan = state.load_plan()
    summary: dict[str, Any] = {"name": state.name, "state": status.get("state", "unknown")}
    if state.is_busy():
        summary["state"] = status.get("state", "busy")
    elif summary["state"] in ("creating", "removing"):
        summary["state"] = f"crashed while {summary['state']} (nestbed cleanup)"
    cluster = status.get("cluster") or {}
    if cluster.get("pending"):
        summary["state"] = f"down, but host(s) {', '.join(cluster['pending'])} still hold a part (nestbed cleanup)"
    if plan is not None:
        # a real host's namespaces are there, not here (emulated hosts share this machine's /run/netns)
        missing = [] if cluster.get("real") else [n for n in plan.netns_names if not namespaces.exists(n)]
        summary.update(nodes=len(plan.nodes), segments=len(plan.segments))
        if summary["state"] == "up" and missing:
            summary["state"] = f"degraded: {len(missing)} namespaces missing"
    if "started" in status:
        summary["started"] = status["started"]
    return summary


def print_experiments(console: Console, as_json: bool) -> None:
    summaries = [_summary(state) for state in all_experiments()]
    if as_json:
        print(json.dumps({"experiments": summaries}, indent=2))
        return
    if not summaries:
        console.print("no experiments on this host")
        return
    table = Table()
    for column in ("experiment", "state", "nodes", "links/LANs", "started"):
        table.add_column(column)
    for s in summaries:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["started"])) if "started" in s else ""
        table.add_row(s["name"], s["state"], str(s.get("nodes", "")), str(s.get("segments", "")), started)
    console.print(table)


def _print_engine(console: Console, name: str) -> None:
    """The etcd engine's statuses, aggregated: generation, hosts per phase, those behind, errors."""
    from nestbed.cluster import deploy
    from nestbed.errors import ExperimentError
    try:
        found = deploy.engine_summary(name)
    except ExperimentError as error:
        console.print(f"etcd: {error}", highlight=False)
        return
    if found is None:
        return
    phases = ", ".join(f"{n} {p}" for p, n in sorted(found["phases"].items())) or "no status yet"
    behind = f"; behind: {', '.join(found['behind'])}" if found["behind"] else ""
    console.print(f"etcd: generation {found['generation']}, {found['hosts']} hosts: {phases}{behind}", highlight=False)
    if found.get("lost"):
        from nestbed.cluster.etcd.records import describe_lost
        console.print(f"  [red]lost[/]: {describe_lost(found['lost'])}", highlight=False)
    for line in found["errors"]:
        console.print(f"  error: {line}", highlight=False)


def print_experiment(console: Console, name: str, as_json: bool) -> None:
    from nestbed.cluster.local import LocalHost
    state = require(name)
    summary = _summary(state)
    plan = state.load_plan()
    cluster = state.status().get("cluster")
    host_status = {"agent": None} if cluster else LocalHost().status(name)   # a cluster's agents are its hosts'
    agent = host_status["agent"]
    if as_json:
        data = {**summary, "agent": agent, "vms": vms_json(plan) if plan else [],
                "nodes": nodes_json(plan) if plan else [], "links": links_json(plan, state) if plan else []}
        if cluster and cluster.get("engine"):
            from nestbed.cluster import deploy
            data["etcd"] = deploy.engine_status(name)      # as plain status shows it (_print_engine)
        print(json.dumps(data, indent=2))
        return
    console.print(f"experiment [bold]{name}[/]: {summary['state']}")
    if cluster:
        reached = "real, over SSH" if cluster.get("real") else f"emulated: {cluster.get('emulate', 0)}"
        console.print(f"hosts: {', '.join(cluster.get('hosts', []))} ({reached})", highlight=False)
        if cluster.get("lost"):
            console.print(f"lost hosts, their nodes moved to the others: {', '.join(cluster['lost'])}",
                          highlight=False)
        for note in cluster.get("notes", []):
            console.print(f"note: {note}", highlight=False)
        if cluster.get("engine"):
            _print_engine(console, name)
    if agent is not None:
        alive = "running" if agent["alive"] else f"[red]dead[/] (run nestbed down {name})"
        console.print(f"host agent: pid {agent['pid']}, {alive}")
    if plan is not None and plan.vms:
        console.print(f"VMs: {len(plan.vms)} ({host_status.get('accelerator', '?')}: "
                      f"{host_status.get('accelerator_reason', '')}); "
                      f"control network {plan.control.subnet if plan.control else '-'} on "
                      f"{host_status.get('control_bridge', '?')}",
                      highlight=False)
    if plan is not None:
        console.print(_nodes_table(plan, "nodes"))
        console.print(_links_table(plan, state))
