"""`nestbed up big.yaml --cluster lab.yaml` again while it runs: the edited topology applied in place, per host.

Placement and numbering stay: every node still in the topology is pinned to the host it runs on (embed's `placed`, a
group's members each to its own; cluster/relocate.py, which with --keep-going also moves the nodes of hosts lost
since to the others), and compile_plans takes the running whole plan's pins (plan/pins.py), so every untouched
object keeps its names, MACs, ifindexes, addresses and VNIs. Each host's new plan is diffed (plan/diff.py) against
the one it holds (the controller keeps a copy of each, `hostplans/<host>.json`, written when the host confirmed it);
the summary is shown per host, and only hosts whose plan changed on their kernel or in their files are asked (SSH:
the agent's `apply`, which reconciles; etcd: a new generation, whose unchanged hosts the agents find unchanged). A
host that fails keeps what it had (its additions undone); the others keep the new plan: nothing is torn down, and
the error says which host is in which state.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nestbed.cluster import hostcopies
from nestbed.errors import ExperimentError
from nestbed.model.cluster import Cluster
from nestbed.model.topology import Experiment
from nestbed.plan.diff import PlanDiff, diff
from nestbed.plan.multihost import ClusterPlan
from nestbed.realize.state import ExperimentState

if TYPE_CHECKING:
    from nestbed.cluster.ssh import SshHost


@dataclass
class Modified:
    planned: ClusterPlan
    changes: dict[str, PlanDiff]                 # host → its diff
    applied: list[str] = field(default_factory=list)    # hosts asked
    seconds: float = 0.0
    moved: dict[str, str] = field(default_factory=dict)     # node → the host it moved to off a lost host

    @property
    def empty(self) -> bool:
        return not self.moved and all(d.empty for d in self.changes.values())

    def summary(self) -> list[str]:
        """"host: line" per change, hosts in cluster order (the nodes moved off lost hosts first)."""
        moves = [f"{node}: moved to {host} (its host is lost)" for node, host in sorted(self.moved.items())]
        return moves + [f"{host}: {line}" for host, d in self.changes.items() for line in d.summary()]


def lost_now(name: str, cluster: Cluster, hosts: list[str], real_hosts: bool) -> list[str]:
    """The experiment's hosts whose agent's lease ran out (the etcd engine; none over SSH)."""
    if not cluster.etcd:
        return []
    from nestbed.cluster.etcd import engine
    ids = {engine.host_id(name, h, not real_hosts): h for h in hosts}
    return sorted(ids[i] for i in engine.summary(cluster.etcd, name).get("lost") or {} if i in ids)


def modify(exp: Experiment, cluster: Cluster, state: ExperimentState, dry_run: bool = False,
           show: Any = None, keep_going: bool = False) -> Modified:
    """The running experiment `state` changed to `exp` in place (see the module's doc). `show(line)` gets the
    summary before anything is applied. `keep_going`: the nodes of hosts lost since (etcd engine) move to the
    others (cluster/relocate.py); without it, a lost host is one line."""
    from nestbed.cluster import emulated, real, relocate
    from nestbed.cluster.ssh import connect_all
    started = time.monotonic()
    status = state.status()
    cluster_status = status.get("cluster") or {}
    whole = state.load_plan()
    if whole is None or status.get("state") != "up":
        raise ExperimentError(f"experiment {exp.name!r} is not up on its cluster ({status.get('state')}); "
                              f"see 'nestbed status {exp.name}'")
    hosts = list(cluster_status.get("hosts") or [])
    lost = list(cluster_status.get("lost") or [])          # moved off already (an earlier --keep-going)
    if not all((hostcopies.hosts_dir(state) / f"{h}.json").exists() for h in hosts):
        raise ExperimentError(f"experiment {exp.name!r} was made before in-place modify across hosts; run "
                              f"'nestbed down {exp.name}' and up again")
    lock = state.lock()
    if lock is None:
        raise ExperimentError(f"experiment {exp.name!r} is being changed, created or removed; wait for it")
    transports: dict[str, SshHost] = {}
    try:
        reals = hostcopies.real_hosts(state)
        newly_lost = lost_now(exp.name, cluster, hosts, bool(reals))
        if newly_lost and not keep_going:
            raise ExperimentError(f"host{'s' if len(newly_lost) > 1 else ''} {', '.join(newly_lost)} of "
                                  f"{exp.name} {'are' if len(newly_lost) > 1 else 'is'} lost (its agent's lease "
                                  f"ran out): run 'nestbed up' again with --keep-going to move its nodes to the "
                                  f"other hosts, or 'nestbed down {exp.name}'")
        lost += newly_lost
        hosts = [h for h in hosts if h not in newly_lost]
        if reals:
            transports = {h.name: h.transport() for h in reals}
            connect_all(list(transports.values()))
            hellos = {name: t.hello or {} for name, t in transports.items()}
            sites = real.sites(reals, hellos, real.underlay_mtus(transports, reals))
        else:
            sites = {h.name: hostcopies.emulated_site(h, cluster) for h in emulated.planned_hosts(exp.name,
                                                                                               cluster.emulate)}
        if sorted(sites) != sorted(hosts + lost):
            raise ExperimentError(f"experiment {exp.name!r} runs on {', '.join(hosts + lost)}; the cluster file "
                                  f"names {', '.join(sites)}: run 'nestbed down {exp.name}' first to move it")
        placed = relocate.relocate(exp, cluster, sites, whole, dict(cluster_status.get("host_of") or {}), set(lost))
        planned = placed.planned
        planned.notes.extend(placed.notes)
        held = {h: hostcopies.held(state, h) for h in hosts}
        changes = {h: diff(held[h], planned.plans[h]) for h in hosts}
        refused = [f"{h}: {d.refused[0]}" for h, d in changes.items() if d.refused]
        if refused:
            raise ExperimentError(f"{exp.name}: {refused[0]}")
        done = Modified(planned, changes, moved=placed.moved)
        if show is not None:
            for line in done.summary():
                show(line)
        changed = [h for h, d in changes.items() if not d.empty]
        if dry_run or not (changed or newly_lost):     # a lost host's empty plan goes out even if nothing moved
            done.seconds = time.monotonic() - started
            return done
        state.set_status("modifying")
        failures = _apply(exp.name, cluster, transports, planned, changed, reals, lost)
        for host in changed:
            if host not in failures:
                hostcopies.write_host_copy(state, host, planned.plans[host])
        done.applied = changed
        hostcopies.write_whole_plan(state, planned)       # its pins: a rerun keeps the numbers the others hold now
        host_of = {n.name: h for h, plan in planned.plans.items() for n in plan.nodes}
        state.set_status("up", cluster={**cluster_status, "hosts": hosts, "host_of": host_of, "notes": planned.notes,
                                        **({"lost": lost} if lost else {})})
        if failures:
            ok = [h for h in changed if h not in failures]
            raise ExperimentError("; ".join(f"host {h}: {e}" for h, e in failures.items())
                                  + f" — {', '.join(failures)} kept the running plan"
                                  + (f", {', '.join(ok)} changed" if ok else "")
                                  + "; the experiment is still up: fix and run 'nestbed up' again, or down")
        done.seconds = time.monotonic() - started
        return done
    finally:
        if state.status().get("state") == "modifying":
            state.set_status("up")
        for transport in transports.values():
            transport.close()
        os.close(lock)


def _apply(name: str, cluster: Cluster, transports: dict[str, SshHost], planned: ClusterPlan, changed: list[str],
           reals: list[Any], lost: list[str]) -> dict[str, str]:
    """The changed hosts' plans applied (the lost hosts', etcd only, empty); host → one line for each that
    failed."""
    from nestbed.cluster import emulated
    from nestbed.cluster.ssh import connect_all
    if cluster.etcd:
        from nestbed.cluster.etcd import engine
        try:
            engine.apply(cluster.etcd, name, {engine.host_id(name, h, not reals): p
                                              for h, p in planned.plans.items()}, rollback=False,
                         lost=frozenset(engine.host_id(name, h, not reals) for h in lost))
        except ExperimentError as error:
            return {h: str(error) for h in changed}
        return {}
    if not transports:
        hosts = emulated.load(name)
        if hosts is None:
            raise ExperimentError(f"experiment {name!r} has lost its emulated hosts; run 'nestbed down {name}'")
        transports.update({t.name: t for t in hosts.transports() if t.name in changed})
        connect_all(list(transports.values()))
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(len(changed)) as pool:
        futures = {h: pool.submit(transports[h].reconcile, planned.plans[h]) for h in changed}
        for host, future in futures.items():
            try:
                future.result()
            except Exception as error:
                failures[host] = str(error).splitlines()[0] if str(error) else type(error).__name__
    return failures
