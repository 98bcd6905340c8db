"""`--keep-going`: the nodes of lost hosts embedded again on the hosts left, with every other node where it runs.

A host is lost when its agent's lease runs out (the etcd engine). Without --keep-going the experiment is rolled
back everywhere; with it, only the lost hosts' nodes move: every node on a live host is pinned there (a group's
members each to its own host), the numbering (names, MACs, addresses, VNIs) is the running plan's (plan/pins.py),
and a node the topology pinned to a lost host is placed afresh, with a note. The live hosts then apply the
difference (new nodes, tunnels to where the moved ones now run); a lost host is given the empty plan, so that if
its agent comes back it removes what it still holds.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from nestbed.embed.embedding import EmbeddingError
from nestbed.embed.problem import VHOST_NAME
from nestbed.errors import ExperimentError
from nestbed.model.cluster import Cluster
from nestbed.model.topology import Experiment
from nestbed.plan.hostplan import HostPlan
from nestbed.plan.multihost import ClusterPlan, HostSite
from nestbed.plan.pins import pins_of


@dataclass
class Relocated:
    planned: ClusterPlan                               # a plan per live host
    moved: dict[str, str] = field(default_factory=dict)    # node → the live host it moved to
    notes: list[str] = field(default_factory=list)


def without(cluster: Cluster, lost: set[str]) -> Cluster:
    """The cluster less its lost hosts (the embedder places nothing there)."""
    return replace(cluster, hosts={n: h for n, h in cluster.hosts.items() if n not in lost})


def pinned_host(pin: str | None) -> str | None:
    """The host a `host:` pin names (a vhost vh-<host>-<k> names its host)."""
    if pin is None:
        return None
    match = VHOST_NAME.fullmatch(pin)
    return match.group("host") if match else pin


def unpinned_from(exp: Experiment, lost: set[str]) -> tuple[Experiment, list[str]]:
    """A copy of `exp` whose nodes pinned to a lost host are free, and the notes saying so."""
    freed = [name for name, node in exp.nodes.items() if pinned_host(node.host) in lost]
    if not freed:
        return exp, []
    changed = copy.copy(exp)
    changed.nodes = {name: (replace(node, host=None) if name in freed else node) for name, node in exp.nodes.items()}
    return changed, [f"node {name} was pinned to {exp.nodes[name].host}, which is lost: placed afresh"
                     for name in freed]


def relocate(exp: Experiment, cluster: Cluster, sites: dict[str, HostSite], whole: HostPlan,
             host_of: dict[str, str], lost: set[str]) -> Relocated:
    """Every node of `exp` on the hosts of `sites` not in `lost`: those on a live host (`host_of`) stay there,
    the rest are embedded anew; compiled with `whole`'s numbering. One line when they do not fit."""
    from nestbed.embed import embed
    from nestbed.plan.multihost import compile_plans
    live = {h: s for h, s in sites.items() if h not in lost}
    if not live:
        raise ExperimentError(f"every host is lost ({', '.join(sorted(lost))}): nothing to move the nodes to")
    free_exp, notes = unpinned_from(exp, lost)
    staying = {node: host for node, host in host_of.items() if host in live}
    try:
        embedding = embed(free_exp, without(cluster, lost), placed=staying)
    except EmbeddingError as error:
        raise ExperimentError(f"the nodes of lost host(s) {', '.join(sorted(lost))} do not fit on the others: "
                              f"{error.message}") from None
    planned = compile_plans(free_exp, embedding, live, pins_of(whole))
    moved = {name: place.host for name, place in embedding.placement.items() if host_of.get(name) in lost}
    return Relocated(planned, moved, notes)
