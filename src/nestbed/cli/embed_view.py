"""How an embedding looks in a terminal (a tree: host → vhost VM → nodes, the cross-host segments, the quality
figures) and as JSON. Read-only; sized so 1000 hosts × 100 nodes prints at once: long lists are abbreviated."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from nestbed.embed import Embedding
from nestbed.embed.demands import (
    DEFAULT_BANDWIDTH,
    VHOST_CPUS,
    VHOST_MEMORY,
    node_demand,
)
from nestbed.kinds import registry
from nestbed.model.cluster import Cluster
from nestbed.model.topology import Experiment, Node

MAX_HOSTS = 50          # hosts shown in the tree; the rest are summed up in one line
MAX_VHOSTS = 8          # vhost VMs shown per host
MAX_NAMES = 5           # node names shown per line before "… N more"
MAX_SEGMENTS = 20       # cross-host segments shown, costliest first


@dataclass(frozen=True)
class Timing:
    load: float         # reading the topology and cluster files
    embed: float        # embed() alone
    total: float        # load + embed (what a user waits for before output starts)


def human_rate(bps: float) -> str:
    """3200000000 → '3.2 Gbit/s' (three significant digits)."""
    for scale, unit in ((1e12, "Tbit/s"), (1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"


def human_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def human_bytes(count: float) -> str:
    for scale, unit in ((2**40, "T"), (2**30, "G"), (2**20, "M"), (2**10, "K")):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return f"{count:g}"


def abbreviate(names: Sequence[str], limit: int = MAX_NAMES) -> str:
    """'a, b, c, … 97 more' — the first `limit` names, then how many are left out."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … {len(names) - limit} more"


def segment_bandwidth(exp: Experiment, segment: str) -> int:
    """What the embedder weighs a segment by (unshaped segments count as DEFAULT_BANDWIDTH)."""
    return exp.segments[segment].shaping.bandwidth or DEFAULT_BANDWIDTH


# -- per-host use ----------------------------------------------------------------------------------------------

@dataclass
class HostUse:
    containers: int = 0             # processes and qemu nodes, nested or not (what per_host counts)
    vms: int = 0                    # qemu nodes and vhost VMs (what max_vms counts)
    cpus: float = 0.0
    memory: int = 0
    physical: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.containers or self.vms or self.physical)


def host_use(embedding: Embedding, nodes: dict[str, Node]) -> dict[str, HostUse]:
    use = {host: HostUse() for host in embedding.host_names}
    for host in embedding.vhosts.values():
        entry = use.setdefault(host, HostUse())
        entry.vms += 1
        entry.cpus += VHOST_CPUS
        entry.memory += VHOST_MEMORY
    for name, place in embedding.placement.items():
        node = nodes[name]
        entry = use.setdefault(place.host, HostUse())
        if registry.get(node.kind).whole_host:
            entry.physical.append(name)
            continue
        demand = node_demand(node)
        entry.containers += demand.containers
        entry.vms += demand.qemu
        entry.cpus += demand.cpus
        entry.memory += demand.memory
    return use


def _of(count: int, limit: float | None) -> str:
    return str(count) if limit is None else f"{count}/{limit:g}"


def host_label(host: str, use: HostUse, cluster: Cluster, exp: Experiment) -> Text:
    spec = cluster.hosts.get(host)
    label = Text(host, style="bold")
    if use.physical:
        label.append(f"  physical node {', '.join(use.physical)}", style="magenta")
        return label
    if use.empty:
        label.append("  idle", style="dim")
        return label
    spec_vms = spec is not None and spec.max_vms is not None
    container_cap: float | None = exp.embed.per_host
    if spec is not None and spec.max_containers is not None:
        container_cap = min(exp.embed.per_host, spec.max_containers)
    parts = [f"{_of(use.containers, container_cap)} containers",
             f"{_of(use.vms, spec.max_vms if spec else None)} vm{'' if use.vms == 1 and not spec_vms else 's'}"]
    if spec is not None and spec.cpus is not None:
        parts.append(f"cpus {use.cpus:g}/{spec.cpus:g}")
    if spec is not None and spec.memory is not None:
        parts.append(f"memory {human_bytes(use.memory)}/{human_bytes(spec.memory)}")
    label.append("  " + " · ".join(parts))
    return label


# -- the tree ---------------------------------------------------------------------------------------------------

def _names(nodes_here: list[str], nodes: dict[str, Node]) -> str:
    """Node names, each shown one as its kind labels it (tagged with the kind unless it is a plain process)."""
    tagged = [registry.get(nodes[n].kind).label(n) for n in nodes_here[:MAX_NAMES]]
    return abbreviate(tagged + nodes_here[MAX_NAMES:])


def embedding_tree(embedding: Embedding, exp: Experiment, cluster: Cluster,
                   nodes: dict[str, Node] | None = None) -> Tree:
    nodes = exp.expanded_nodes() if nodes is None else nodes
    tree_data = embedding.hosts()
    use = host_use(embedding, nodes)
    used = sum(1 for host in tree_data if not use.get(host, HostUse()).empty)
    count = len(embedding.vhosts)
    in_vms = f", {count} vhost VM{'s' if count > 1 else ''}" if count else ""
    root = Tree(Text.assemble((exp.name, "bold cyan"),
                              f": {len(embedding.placement)} nodes on {used} of {len(tree_data)} hosts{in_vms}"))
    hosts = list(tree_data)
    for host in hosts[:MAX_HOSTS]:
        branch = root.add(host_label(host, use.get(host, HostUse()), cluster, exp))
        groups = tree_data[host]
        vhosts = [v for v in groups if v is not None]
        for vhost in vhosts[:MAX_VHOSTS]:
            members = groups[vhost]
            branch.add(Text.assemble(("vhost ", "green"), (vhost, "bold green"), f" ({len(members)}): ",
                                     _names(members, nodes)))
        if len(vhosts) > MAX_VHOSTS:
            hidden = sum(len(groups[v]) for v in vhosts[MAX_VHOSTS:])
            branch.add(Text(f"… {len(vhosts) - MAX_VHOSTS} more vhost VMs ({hidden} nodes)", style="dim"))
        direct = [n for n in groups.get(None, []) if not registry.get(nodes[n].kind).whole_host]
        if direct:
            label = "on the host" if vhosts else "nodes"
            branch.add(Text.assemble((label, "yellow"), f" ({len(direct)}): ", _names(direct, nodes)))
    if len(hosts) > MAX_HOSTS:
        rest = hosts[MAX_HOSTS:]
        count = sum(len(members) for host in rest for members in tree_data[host].values())
        root.add(Text(f"… {len(rest)} more hosts ({count} nodes)", style="dim"))
    return root


def segments_table(embedding: Embedding, exp: Experiment) -> Table | Text:
    cut = embedding.cut_segments
    if not cut:
        return Text("no segment crosses hosts", style="green")
    cost = {name: segment_bandwidth(exp, name) * (len(hosts) - 1) for name, hosts in cut.items()}
    order = sorted(cut, key=lambda name: (-cost[name], name))
    table = Table(box=None, pad_edge=False)
    for column in ("segment", "kind", "bandwidth", "hosts"):
        table.add_column(column)
    for name in order[:MAX_SEGMENTS]:
        table.add_row(name, exp.segments[name].kind, human_rate(segment_bandwidth(exp, name)),
                      abbreviate(cut[name]))
    if len(order) > MAX_SEGMENTS:
        hidden = order[MAX_SEGMENTS:]
        table.add_row(f"… {len(hidden)} more", "", human_rate(sum(cost[n] for n in hidden)), "")
    return table


def figures_table(embedding: Embedding, exp: Experiment, timing: Timing) -> Table:
    m = embedding.metrics
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("inter-host bandwidth", human_rate(m.inter_host_bandwidth_bps))
    table.add_row("cut segments", f"{m.cut_segments} of {len(exp.segments)}")
    table.add_row("imbalance", f"{m.imbalance * 100:.1f}% above the fair share on the fullest host")
    table.add_row("violations", Text(str(m.violations), style="green" if m.violations == 0 else "bold red"))
    table.add_row("embedding", human_seconds(m.seconds))
    table.add_row("total", f"{human_seconds(timing.total)} (files {human_seconds(timing.load)}, "
                           f"embedding {human_seconds(timing.embed)})")
    return table


def print_embedding(console: Console, embedding: Embedding, exp: Experiment, cluster: Cluster,
                    timing: Timing) -> None:
    nodes = exp.expanded_nodes()
    console.print(embedding_tree(embedding, exp, cluster, nodes), highlight=False)
    cut = len(embedding.cut_segments)
    heading = f"cross-host segments ({cut}, costliest first)" if cut > 1 else "cross-host segments"
    console.print(Group(Text(), Text(heading, style="bold"), segments_table(embedding, exp), Text(),
                        Text("quality", style="bold"), figures_table(embedding, exp, timing)), highlight=False)


# -- JSON -------------------------------------------------------------------------------------------------------

def embedding_json(embedding: Embedding, timing: Timing) -> dict[str, Any]:
    """embedding.to_json() plus the total time and, per host, its vhosts and how many nodes it runs."""
    data = embedding.to_json()
    data["seconds_total"] = timing.total
    data["hosts"] = {host: {"vhosts": [v for v in groups if v is not None],
                            "nodes": sum(len(members) for members in groups.values())}
                     for host, groups in embedding.hosts().items()}
    return data
