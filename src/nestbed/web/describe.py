"""A running experiment as the web view draws it: the vtopo (nodes, links, LANs) and the ptopo (host → VM →
node), as the JSON of `GET /api/topology`. Pure: the plan and the links' current state in, plain data out.

`links` keeps the plan's segment order: the live frames later sent for counters index links by it.
Positions (web/layout.py, pixels): each node's `x, y` (vtopo) and `px, py` (ptopo), a LAN's `x, y` (its hub), each
VM's `px, py` (the centre of its box), `host_positions` {host: [px, py]} (box centres) and `layout` (the vtopo's
engine, "sfdp" or "grid").
"""
from __future__ import annotations

from typing import Any

from nestbed.plan.hostplan import HostPlan, NodePlan, ShapingPlan
from nestbed.web.layout import Layout, centre, fallback, host_of, hosts_of

COLLAPSE_ABOVE = 2000        # nodes: above this the ptopo starts folded at VM/host level (redraws grow to seconds)

LinkStates = dict[str, tuple[str, ShapingPlan | None]]     # realize/linkstate.current(): segment → (state, shaping)


def topology(plan: HostPlan, links_now: LinkStates, layout: Layout | None = None) -> dict[str, Any]:
    """`layout`: the positions (layout.cached); None: the grid's, computed here (pure, no sfdp)."""
    nodes = plan.every_node()
    hosts = hosts_of(plan)
    placed = layout if layout is not None else fallback(plan)
    links = [_link(seg.name, seg.kind, [member for member, _, _ in seg.members], *links_now.get(
        seg.name, ("up", seg.shaping))) for seg in plan.segments]
    for link in links:
        if link["kind"] == "lan":
            link["x"], link["y"] = placed.hubs[link["name"]]
    vms = _vms(plan, nodes)
    for vm in vms:
        vm["px"], vm["py"] = centre(placed.vm_boxes[vm["name"]])
    return {
        "experiment": plan.experiment,
        "hosts": hosts,
        "vms": vms,
        "nodes": [_node(plan, node, placed) for node in nodes],
        "links": links,
        "collapsed": len(nodes) > COLLAPSE_ABOVE,
        "host_positions": {host: list(centre(placed.host_boxes[host])) for host in hosts},
        "layout": placed.engine,
    }


def _vms(plan: HostPlan, nodes: list[NodePlan]) -> list[dict[str, Any]]:
    """Every VM some node is or runs in. The plan's own VMs give their kind; a VM of another host (only named by
    its nodes' `vm`) is a qemu VM when it is its node, else a vhost."""
    kinds = {vm.name: vm.kind for vm in plan.vms}
    result: dict[str, dict[str, Any]] = {}
    for vm in plan.vms:
        result[vm.name] = {"name": vm.name, "kind": vm.kind, "host": plan.host}
    for node in nodes:
        if node.vm is not None and node.vm not in result:
            kind = kinds.get(node.vm) or ("qemu" if node.vm == node.name else "vhost")
            result[node.vm] = {"name": node.vm, "kind": kind, "host": host_of(plan, node)}
        elif node.vm is not None and node.host:          # the whole plan's VM entry: where its nodes are
            result[node.vm]["host"] = node.host
    return list(result.values())


def _node(plan: HostPlan, node: NodePlan, placed: Layout) -> dict[str, Any]:
    (x, y), (px, py) = placed.nodes[node.name], placed.leaves[node.name]
    return {"name": node.name, "kind": node.kind, "vm": node.vm, "host": host_of(plan, node),
            "interfaces": [{"name": i.name, "address": i.address, "mac": i.mac, "segment": i.segment}
                           for i in node.interfaces], "x": x, "y": y, "px": px, "py": py}


def _link(name: str, kind: str, members: list[str], state: str, shaping: ShapingPlan | None) -> dict[str, Any]:
    return {"name": name, "kind": kind, "members": members,
            "bandwidth": shaping.bandwidth if shaping is not None else None, "state": state}
