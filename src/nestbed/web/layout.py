"""Where the web view draws things: positions for both panes, computed once on the server and cached.

vtopo: every node and every LAN's hub (a LAN is drawn as a small hub joined to its members; a point-to-point link
is an edge and needs no position), from Graphviz's `sfdp -Tplain` (0.17 s at 1k nodes, ~3 s at 10k; the page's
fcose never finishes at 10k), else a grid in plan order, deterministic and pure. `engine` says which.
ptopo: host → VM → node as nested boxes. Cytoscape derives a compound box from its children, so only leaves
(nodes) get positions: packed on a grid inside their VM box, VM boxes and host-level nodes shelf-packed in their
host box, hosts side by side. O(N), pure. Each VM and host box also gives a centre, where the folded ptopo
(above describe.COLLAPSE_ABOVE nodes) draws it. A qemu VM that is its node is one leaf, not a box.
Cache (of the vtopo; the ptopo is cheap): <experiment>/web-layout.json, journaled (with its temporary) before it
is first written, so `down` removes it; keyed by a hash of what the positions depend on, so a `modify` that
changes the topology recomputes.
Pixels throughout; y grows downwards (Cytoscape's), Graphviz's is flipped.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.realize.state import FILE_MODE, ExperimentState

SFDP = ["sfdp", "-Tplain"]         # the DOT graph on stdin; tests point it at fakes
SFDP_TIMEOUT = 60.0                # s: ~3 s at 10k nodes here; past this the grid is used
SPACING_PX = 50.0                  # the vtopo's median distance from a node to its nearest neighbour, scaled to
                                   # (sfdp packs a LAN's members around its hub closer than its edges are long)
CELL = 60.0                        # px between ptopo leaves (and the grid fallback's cells)
PAD = 20.0                         # px between a box's edge and what it holds (room for its label)
HOST_GAP = 80.0                    # px between host boxes
CACHE_FILE = "web-layout.json"
VERSION = 1                        # in the cache key: a change to how positions are made invalidates old files

Point = tuple[float, float]
Box = tuple[float, float, float, float]        # x0, y0, x1, y1


@dataclass(frozen=True)
class Layout:
    engine: str                    # "sfdp" | "grid": what placed the vtopo
    nodes: dict[str, Point]        # vtopo: node → position
    hubs: dict[str, Point]         # vtopo: LAN segment → its hub's position
    leaves: dict[str, Point]       # ptopo: node → position inside its box
    vm_boxes: dict[str, Box]       # ptopo: VM → its box (a qemu VM that is its node: that leaf's cell)
    host_boxes: dict[str, Box]     # ptopo: host → its box


def centre(box: Box) -> Point:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def compute(plan: HostPlan, command: list[str] | None = None) -> Layout:
    """Both panes, the vtopo from sfdp (`command`, default SFDP) when it works, else from the grid."""
    placed = sfdp_positions(plan, command or SFDP)
    engine = "sfdp" if placed is not None else "grid"
    nodes, hubs = placed if placed is not None else grid_positions(plan)
    return Layout(engine, nodes, hubs, *ptopo(plan))


def fallback(plan: HostPlan) -> Layout:
    """Both panes without running anything: the grid vtopo. Pure."""
    nodes, hubs = grid_positions(plan)
    return Layout("grid", nodes, hubs, *ptopo(plan))


# --- vtopo ---------------------------------------------------------------------------------------------------

def _lans(plan: HostPlan) -> list[tuple[str, list[str]]]:
    return [(seg.name, [member for member, _, _ in seg.members]) for seg in plan.segments if seg.kind == "lan"]


def to_dot(plan: HostPlan) -> str:
    """The vtopo as DOT. Nodes are `vI` (the I-th node) and hubs `hJ` (the J-th LAN): nothing a name holds can
    break the syntax, and `-Tplain` gives them back unquoted."""
    index = {node.name: f"v{i}" for i, node in enumerate(plan.every_node())}
    lines = ["graph nestbed {", "graph [start=1];", "node [shape=point];"]      # start: sfdp's fixed seed
    lines += [f"{dot_id};" for dot_id in index.values()]          # isolated nodes too
    for seg in plan.segments:
        if seg.kind != "lan" and len(seg.members) == 2:
            lines.append(f"{index[seg.members[0][0]]} -- {index[seg.members[1][0]]};")
    for j, (_, members) in enumerate(_lans(plan)):
        lines.append(f"h{j};")
        lines += [f"h{j} -- {index[member]};" for member in members]
    lines.append("}")
    return "\n".join(lines) + "\n"


def sfdp_positions(plan: HostPlan, command: list[str]) -> tuple[dict[str, Point], dict[str, Point]] | None:
    """(nodes, hubs) from sfdp, None when it is missing, fails, times out or answers something unusable."""
    names = [node.name for node in plan.every_node()]
    lans = [name for name, _ in _lans(plan)]
    if not names and not lans:
        return {}, {}
    try:
        done = subprocess.run(command, input=to_dot(plan), capture_output=True, text=True, timeout=SFDP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    found = parse_plain(done.stdout)
    wanted = [f"v{i}" for i in range(len(names))] + [f"h{j}" for j in range(len(lans))]
    if found is None or any(dot_id not in found for dot_id in wanted):
        return None
    placed = {dot_id: found[dot_id] for dot_id in wanted}
    scale = SPACING_PX / (median_spacing(list(placed.values())) or SPACING_PX / 72)    # one point: inches → pt
    points = _normalised(placed, scale)
    return ({name: points[f"v{i}"] for i, name in enumerate(names)},
            {name: points[f"h{j}"] for j, name in enumerate(lans)})


def parse_plain(text: str) -> dict[str, Point] | None:
    """`node ID X Y …` lines of `-Tplain` (inches); None if one is malformed or not finite."""
    found: dict[str, Point] = {}
    for line in text.splitlines():
        if not line.startswith("node "):
            continue
        parts = line.split()
        try:
            x, y = float(parts[2]), float(parts[3])
        except (IndexError, ValueError):
            return None
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        found[parts[1]] = (x, y)
    return found


def median_spacing(points: list[Point], samples: int = 2000) -> float:
    """The median distance from a point to its nearest other point, over at most `samples` points (0.0: fewer
    than two distinct points). Buckets of the mean spacing: O(n), a 5×5 neighbourhood of buckets searched."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    if len(points) < 2:
        return 0.0
    area = max(max(xs) - min(xs), 1e-9) * max(max(ys) - min(ys), 1e-9)
    cell = math.sqrt(area / len(points)) or 1e-9
    buckets: dict[tuple[int, int], list[Point]] = {}
    for point in points:
        buckets.setdefault((int(point[0] // cell), int(point[1] // cell)), []).append(point)
    nearest = []
    for point in points[::max(1, len(points) // samples)]:
        bx, by = int(point[0] // cell), int(point[1] // cell)
        near = [math.dist(point, other) for dx in range(-2, 3) for dy in range(-2, 3)
                for other in buckets.get((bx + dx, by + dy), ()) if other != point]
        if near:
            nearest.append(min(near))
    nearest.sort()
    return nearest[len(nearest) // 2] if nearest else 0.0


def _normalised(found: dict[str, Point], scale: float) -> dict[str, Point]:
    """Scaled to pixels, y flipped (Graphviz's grows upwards), the top-left at (0, 0), rounded to 0.1 px."""
    if not found:
        return {}
    left = min(x for x, _ in found.values())
    top = max(y for _, y in found.values())
    return {key: (round((x - left) * scale, 1), round((top - y) * scale, 1)) for key, (x, y) in found.items()}


def grid_positions(plan: HostPlan) -> tuple[dict[str, Point], dict[str, Point]]:
    """(nodes, hubs) on a square grid: each LAN's hub followed by its members not placed yet, then the other
    nodes, in plan order (members of a LAN end up near their hub)."""
    order: list[tuple[bool, str]] = []           # (is a hub, name)
    placed: set[str] = set()
    for name, members in _lans(plan):
        order.append((True, name))
        for member in members:
            if member not in placed:
                placed.add(member)
                order.append((False, member))
    order += [(False, node.name) for node in plan.every_node() if node.name not in placed]
    columns = max(1, math.ceil(math.sqrt(len(order))))
    nodes: dict[str, Point] = {}
    hubs: dict[str, Point] = {}
    for i, (is_hub, name) in enumerate(order):
        (hubs if is_hub else nodes)[name] = ((i % columns) * CELL, (i // columns) * CELL)
    return nodes, hubs


# --- ptopo ---------------------------------------------------------------------------------------------------

def host_of(plan: HostPlan, node: NodePlan) -> str:
    return node.host or plan.host


def hosts_of(plan: HostPlan) -> list[str]:
    """The hosts the ptopo shows, as describe lists them: where nodes run, this host first; this host alone when
    there is no node. A cluster's controller that runs no node is not drawn."""
    seen = dict.fromkeys(host_of(plan, node) for node in plan.every_node())
    if plan.host in seen or not seen:
        return [plan.host, *(host for host in seen if host != plan.host)]
    return list(seen)


def is_own_vm(node: NodePlan, vm_kinds: dict[str, str]) -> bool:
    """A qemu node: the VM is the node (describe._vms' rule for a VM the plan does not list)."""
    return node.vm == node.name and vm_kinds.get(node.name, "qemu") == "qemu"


@dataclass
class _Item:
    """What a host box holds: a VM (a box of leaves) or a leaf (a namespace node; a qemu node, also its VM)."""
    name: str
    leaves: list[str]
    kind: str                                    # "vm" | "node" | "qemu"

    def size(self) -> Point:
        if self.kind != "vm":
            return CELL, CELL
        columns, rows = _grid_shape(len(self.leaves))
        return columns * CELL + 2 * PAD, rows * CELL + 2 * PAD


def _grid_shape(count: int) -> tuple[int, int]:
    columns = max(1, math.ceil(math.sqrt(count)))
    return columns, max(1, math.ceil(count / columns))


def _tree(plan: HostPlan) -> dict[str, list[_Item]]:
    """host → what it holds, in experiment order (hosts as hosts_of lists them)."""
    vm_kinds = {vm.name: vm.kind for vm in plan.vms}
    hosts: dict[str, list[_Item]] = {host: [] for host in hosts_of(plan)}
    vms: dict[str, _Item] = {}
    for node in plan.every_node():
        items = hosts[host_of(plan, node)]
        if node.vm is None:
            items.append(_Item(node.name, [node.name], "node"))
        elif is_own_vm(node, vm_kinds):
            vms[node.vm] = _Item(node.name, [node.name], "qemu")
            items.append(vms[node.vm])
        elif node.vm in vms:
            vms[node.vm].leaves.append(node.name)
        else:
            vms[node.vm] = _Item(node.vm, [node.name], "vm")
            items.append(vms[node.vm])
    for vm in plan.vms:                          # a VM no node names (none today): an empty box
        if vm.name not in vms:
            vms[vm.name] = _Item(vm.name, [], "vm")
            hosts.setdefault(plan.host, []).append(vms[vm.name])
    return hosts


def ptopo(plan: HostPlan) -> tuple[dict[str, Point], dict[str, Box], dict[str, Box]]:
    """(leaves, vm_boxes, host_boxes). Pure, O(N)."""
    leaves: dict[str, Point] = {}
    vm_boxes: dict[str, Box] = {}
    host_boxes: dict[str, Box] = {}
    left = 0.0
    for host, items in _tree(plan).items():
        offsets, width, height = _shelves([item.size() for item in items])
        for item, (dx, dy) in zip(items, offsets):
            x0, y0 = left + PAD + dx, PAD + dy
            w, h = item.size()
            if item.kind != "node":
                vm_boxes[item.name] = (x0, y0, x0 + w, y0 + h)
            if item.kind != "vm":
                leaves[item.name] = (x0 + w / 2, y0 + h / 2)
                continue
            columns, _ = _grid_shape(len(item.leaves))
            for i, name in enumerate(item.leaves):
                leaves[name] = (x0 + PAD + (i % columns + 0.5) * CELL, y0 + PAD + (i // columns + 0.5) * CELL)
        host_boxes[host] = (left, 0.0, left + width + 2 * PAD, height + 2 * PAD)
        left += width + 2 * PAD + HOST_GAP
    return leaves, vm_boxes, host_boxes


def _shelves(sizes: list[Point]) -> tuple[list[Point], float, float]:
    """Offsets of boxes of these sizes packed in rows no wider than a square of their total area would be
    (the widest box at least), and the (width, height) they take: O(n), in order. Nothing: one empty cell."""
    if not sizes:
        return [], CELL, CELL
    limit = max(max(w for w, _ in sizes), math.sqrt(sum(w * h for w, h in sizes)))
    offsets: list[Point] = []
    x = y = row_height = width = 0.0
    for w, h in sizes:
        if x > 0 and x + w > limit + 1e-9:
            y += row_height
            x = row_height = 0.0
        offsets.append((x, y))
        x += w
        row_height = max(row_height, h)
        width = max(width, x)
    return offsets, width, y + row_height


# --- cache ---------------------------------------------------------------------------------------------------

def key(plan: HostPlan) -> str:
    """A hash of what the positions depend on: nodes with their VM and host, VMs' kinds, segments and members."""
    shape = {"version": VERSION, "host": plan.host,
             "nodes": [[node.name, node.vm, host_of(plan, node)] for node in plan.every_node()],
             "vms": [[vm.name, vm.kind] for vm in plan.vms],
             "segments": [[seg.name, seg.kind, [member for member, _, _ in seg.members]] for seg in plan.segments]}
    return hashlib.sha256(json.dumps(shape, separators=(",", ":")).encode()).hexdigest()


def cached(state: ExperimentState, plan: HostPlan, command: list[str] | None = None) -> Layout:
    """The layout of `plan`: the vtopo from <experiment>/web-layout.json when it was made for this topology (sfdp
    not run), else computed and saved there; a file that cannot be read or used is recomputed. The ptopo is
    recomputed each time (pure, a few ms at 10k nodes)."""
    path = state.directory / CACHE_FILE
    wanted = key(plan)
    try:
        found = _from_json(path.read_text(), wanted, plan)
    except (OSError, ValueError):            # missing, unreadable, not UTF-8 or not JSON
        found = None
    if found is not None:
        engine, nodes, hubs = found
        return Layout(engine, nodes, hubs, *ptopo(plan))
    made = compute(plan, command)
    try:
        save(state, made, wanted)
    except OSError:                          # e.g. the directory went with `down`: the positions still serve
        pass
    return made


def save(state: ExperimentState, made: Layout, made_for: str) -> None:
    """web-layout.json through a temporary, both journaled before the first write (teardown removes them)."""
    path = state.directory / CACHE_FILE
    tmp = path.with_name(CACHE_FILE + ".tmp")
    journal = state.journal
    if not path.exists() and not any(e.get("t") == "file" and e.get("path") == str(path) for e in journal.entries()):
        journal.record([{"t": "file", "path": str(path)}, {"t": "file", "path": str(tmp)}])
    data = {"key": made_for, "engine": made.engine, "nodes": made.nodes, "hubs": made.hubs}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def _from_json(text: str, wanted: str, plan: HostPlan) -> tuple[str, dict[str, Point], dict[str, Point]] | None:
    """(engine, nodes, hubs) if the file was made for this key and places exactly this plan's nodes and hubs."""
    data: Any = json.loads(text)
    if not isinstance(data, dict) or data.get("key") != wanted or data.get("engine") not in ("sfdp", "grid"):
        return None
    nodes = _points(data.get("nodes"), [node.name for node in plan.every_node()])
    hubs = _points(data.get("hubs"), [name for name, _ in _lans(plan)])
    return None if nodes is None or hubs is None else (data["engine"], nodes, hubs)


def _points(found: Any, names: list[str]) -> dict[str, Point] | None:
    if not isinstance(found, dict) or len(found) != len(names):
        return None
    points: dict[str, Point] = {}
    for name in names:
        point = found.get(name)
        if not (isinstance(point, list) and len(point) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)):
            return None
        points[name] = (float(point[0]), float(point[1]))
    return points
