"""The controller's bookkeeping of a cluster experiment that a modify reads back: the copy of the plan each host
holds (hostplans/<host>.json, journaled at `up` and written once the host confirmed it), the whole plan (every node
with its host, and the pins), where its hosts are.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from nestbed.cluster import real
from nestbed.model.cluster import Cluster
from nestbed.plan.hostplan import HostPlan
from nestbed.plan.multihost import ClusterPlan, HostSite
from nestbed.realize.state import ExperimentState

UNDERLAY = "ul0"                # an emulated host's underlay interface (cluster/underlay.py)


def hosts_dir(state: ExperimentState) -> Path:
    return state.directory / "hostplans"     # not "hosts": the emulated hosts' state dirs are there


def journal_host_copies(state: ExperimentState, hosts: list[str]) -> None:
    """Before `up` writes them: the copies of what each host holds."""
    where = hosts_dir(state)
    state.journal.record([{"t": "dir", "path": str(where)}]
                         + [{"t": "file", "path": str(where / f"{h}.json{end}")}
                            for h in hosts for end in ("", ".tmp")])


def write_host_copy(state: ExperimentState, host: str, plan: HostPlan) -> None:
    where = hosts_dir(state)
    where.mkdir(exist_ok=True)
    tmp = where / f"{host}.json.tmp"
    tmp.write_text(plan.to_json())
    tmp.replace(where / f"{host}.json")


def held(state: ExperimentState, host: str) -> HostPlan | None:
    path = hosts_dir(state) / f"{host}.json"
    return HostPlan.from_json(path.read_text()) if path.exists() else None


def emulated_site(host: Any, cluster: Cluster) -> HostSite:
    return HostSite(prefix=host.prefix, address=host.address, underlay=UNDERLAY, mtu=cluster.underlay_mtu,
                    netns=host.netns)


def real_hosts(state: ExperimentState) -> list[real.RealHost]:
    """The real hosts an experiment's status names (written before any of them was asked to make anything)."""
    listed = (state.status().get("cluster") or {}).get("real") or {}
    return [real.RealHost.from_json(fields) for fields in listed.values()]


def write_whole_plan(state: ExperimentState, planned: ClusterPlan) -> None:
    """The whole plan as this cluster realizes it: every node with its host and that host's namespace name
    (emulated hosts share this machine's /run/netns: `status` finds them there)."""
    placed = {n.name: replace(n, host=host) for host, plan in planned.plans.items() for n in plan.nodes}
    whole = replace(planned.whole, nodes=[placed[n.name] for n in planned.whole.nodes],
                    switch_namespaces=[ns for plan in planned.plans.values() for ns in plan.switch_namespaces],
                    bridges=[], veths=[])
    state.plan_path.write_text(whole.to_json())
