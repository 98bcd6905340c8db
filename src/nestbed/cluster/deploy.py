"""An experiment on a cluster, from the controller: up, down, status and its control, over one transport per host.

    up(exp, cluster)          embed, compile a plan per host (plan/multihost.py), bring up the emulated hosts
                              (cluster/emulated.py) or reach the real ones (cluster/real.py), connect
                              (cluster/ssh.py), apply every host's plan at once; when one host fails, every host
                              is rolled back and nothing is left
    down(name)                every host removes its part (at once), then the emulated hosts go
    control(name)             a ClusterControl (cluster/fanout.py) over the hosts' own

The controller's directory of the experiment (realize/state.py) holds its bookkeeping: the whole plan (plan.json,
with every node's host) and status.json, whose "cluster" says where each node runs, which hosts hold it and,
for real hosts, how to reach them (written before any host is asked to make anything); its journal lists those
files, so teardown finds them. Real hosts are compiled for twice: once before anything is made (bad input fails
there), again once their agents said their object prefix and underlay interface and the path MTUs are measured.

A real host that cannot be reached at `down` keeps its part: the controller's directory stays (state "down",
cluster "pending" naming those hosts) and `nestbed cleanup` asks them again later. An emulated host's part is
removed from its journals on this machine instead.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nestbed import paths
from nestbed.cluster import emulated, hostcopies, real
from nestbed.cluster.control import ExperimentControl
from nestbed.cluster.fanout import ClusterControl
from nestbed.cluster.hostcopies import emulated_site
from nestbed.cluster.hostcopies import real_hosts as _real_hosts
from nestbed.cluster.hostcopies import write_whole_plan as _write_whole_plan
from nestbed.cluster.ssh import SshHost, connect_all
from nestbed.errors import ExperimentError
from nestbed.model.cluster import Cluster
from nestbed.model.topology import Experiment
from nestbed.plan.multihost import ClusterPlan, HostSite, compile_plans
from nestbed.realize.state import ExperimentState, experiment
from nestbed.realize.teardown import TeardownReport

if TYPE_CHECKING:
    from nestbed.realize.apply import Progress

BOOKKEEPING = ("journal.jsonl", "plan.json", "status.json", "status.json.tmp", "lock",
               "control.sqlite", "control.sqlite-wal", "control.sqlite-shm")   # the last: `nestbed run`'s store


def is_cluster(state: ExperimentState) -> bool:
    return bool(state.status().get("cluster"))


def is_running(name: str) -> bool:
    """Up on a cluster: `up` of it again is a modify."""
    state = experiment(name)
    return state.directory.is_dir() and is_cluster(state) and state.status().get("state") == "up"


def plan_for(exp: Experiment, cluster: Cluster) -> ClusterPlan:
    """The plans, before anything is made (bad input fails here, with nothing created)."""
    return _planned(exp, cluster)[0]


def _planned(exp: Experiment, cluster: Cluster) -> tuple[ClusterPlan, Any, dict[str, HostSite]]:
    """The plans, the embedding and the sites; a real host's site is provisional here (its prefix and underlay
    interface come with its agent's hello: `up` compiles again then)."""
    from nestbed.embed import embed
    if real.is_real(cluster):
        sites = {h.name: HostSite(prefix=h.prefix or paths.DEFAULT_PREFIX, address=h.address, underlay="")
                 for h in real.hosts_of(cluster)}
    else:
        sites = {host.name: emulated_site(host, cluster) for host in emulated.planned_hosts(exp.name, cluster.emulate)}
    embedding = embed(exp, cluster)
    return compile_plans(exp, embedding, sites), embedding, sites


def check_keep_going(cluster: Cluster) -> None:
    if not cluster.etcd:
        raise ExperimentError("--keep-going needs the etcd engine (engine: {etcd: [URL]} in the cluster file), "
                              "which tells a lost host by its lease; over SSH a failed host rolls back")


class ClusterProgress(Protocol):
    """What `up` shows while it works: its own stages, and each host's apply (phases and advances)."""
    def stage(self, description: str) -> None: ...
    def on_host(self, host: str) -> Progress | None: ...


def up(exp: Experiment, cluster: Cluster, progress: ClusterProgress | None = None, keep_going: bool = False
       ) -> tuple[ClusterPlan, float]:
    """`keep_going`: a host lost on the way (etcd engine) has its nodes moved to the others (cluster/relocate.py)
    instead of the experiment rolled back."""
    started = time.monotonic()
    if keep_going:
        check_keep_going(cluster)
    if is_running(exp.name):          # a modify in place (cluster/modify.py): only the difference, per host
        from nestbed.cluster import modify
        done = modify.modify(exp, cluster, experiment(exp.name), keep_going=keep_going)
        return done.planned, done.seconds
    stage = progress.stage if progress is not None else (lambda _: None)
    planned, embedding, sites = _planned(exp, cluster)
    reals = real.hosts_of(cluster) if real.is_real(cluster) else []
    if cluster.etcd:                  # an etcd that does not answer is one line before anything is made
        from nestbed.cluster.etcd import engine
        engine.reachable(cluster.etcd)
    phases: dict[str, Any] = {"plan": time.monotonic() - started}      # where the time went (status.json)
    state = experiment(exp.name)
    resuming = state.directory.exists() and _resumable(state, cluster)
    if state.directory.exists() and not resuming:
        raise ExperimentError(f"experiment {exp.name!r} exists; run 'nestbed down {exp.name}' first or pick "
                              f"another name")
    if not resuming:
        state.create()
    lock = state.lock(blocking=not resuming)
    if lock is None:
        raise ExperimentError(f"experiment {exp.name!r} is being created or removed; wait for it")
    try:
        if not resuming:     # a rerun of an etcd engine's `up` after its controller died has its bookkeeping
            _bookkeeping(state, cluster, planned, reals)
        phases["bookkeeping"] = time.monotonic() - started - phases["plan"]
        transports: dict[str, SshHost] = {}
        try:
            mark = time.monotonic()
            if reals:
                transports = {h.name: h.transport() for h in reals}
            else:
                stage(f"bringing up {cluster.emulate} emulated hosts")
                hosts = _emulated_hosts(exp.name, cluster, resuming)
                transports = {t.name: t for t in hosts.transports()}
                if cluster.etcd:
                    from nestbed.cluster.etcd import engine
                    engine.start_agents(hosts, cluster.etcd)       # what a real host's systemd unit runs
            phases["hosts"], mark = time.monotonic() - mark, time.monotonic()
            stage(f"connecting to {len(transports)} hosts" + (" (bringing nestbed where it is missing)"
                                                              if reals else ""))
            connect_all(list(transports.values()))
            phases["connect"], mark = time.monotonic() - mark, time.monotonic()
            if reals:
                stage("measuring the underlay's path MTU between the hosts")
                hellos = {name: t.hello or {} for name, t in transports.items()}
                real.underlay_links(reals, hellos)          # a wrong address fails before any probe goes out
                mtus = real.underlay_mtus(transports, reals)
                sites = real.sites(reals, hellos, mtus)
                planned = compile_plans(exp, embedding, sites)
                state.set_status("creating", cluster={**state.status()["cluster"], "notes": planned.notes})
                phases["measure"], mark = time.monotonic() - mark, time.monotonic()
            _write_whole_plan(state, planned)
            if cluster.etcd:
                stage(f"publishing {len(planned.plans)} plans to etcd, waiting for every host's agent")
                phases["etcd"], planned = _through_etcd(exp, cluster, state, planned, sites, bool(reals),
                                                        keep_going, stage)
            else:
                stage(f"realizing on {len(transports)} hosts at once")
                phases["apply_on"] = _apply_everywhere(transports, planned, progress)
            phases["apply"] = time.monotonic() - mark
            for host, plan in planned.plans.items():      # what each host holds: a later modify diffs from it
                hostcopies.write_host_copy(state, host, plan)
        except BaseException:
            _remove_everything(exp.name, state)
            raise
        finally:
            for transport in transports.values():    # whoever drives it next (control()) connects anew: one
                transport.close()                     # connection per host at a time
        seconds = time.monotonic() - started
        state.set_status("up", seconds=round(seconds, 3), phases=_rounded(phases))
        return planned, seconds
    finally:
        os.close(lock)


def _through_etcd(exp: Experiment, cluster: Cluster, state: ExperimentState, planned: ClusterPlan,
                  sites: dict[str, HostSite], real_hosts: bool, keep_going: bool, stage: Any
                  ) -> tuple[dict[str, Any], ClusterPlan]:
    """The plans through etcd; with `keep_going`, each time hosts are lost their nodes move to the others and
    the live hosts apply again (the lost ones get the empty plan). Returns the engine's figures and the plans
    as applied."""
    from nestbed.cluster import relocate
    from nestbed.cluster.etcd import engine
    lost: set[str] = set()
    moved: dict[str, str] = {}
    while True:
        ids = {engine.host_id(exp.name, h, not real_hosts): h for h in sites}
        try:
            figures = engine.apply(cluster.etcd, exp.name, {i: planned.plans[h] for i, h in ids.items()
                                                             if h not in lost},
                                   lost=frozenset(i for i, h in ids.items() if h in lost), keep_going=keep_going)
            return {**figures, **({"lost": sorted(lost), "moved": len(moved)} if lost else {})}, planned
        except engine.HostsLost as failure:
            lost |= {ids[i] for i in failure.lost if i in ids}
            stage(f"host(s) {', '.join(sorted(lost))} lost: moving their nodes to the others")
            whole = state.load_plan()
            assert whole is not None                       # written before the first apply
            done = relocate.relocate(exp, cluster, sites, whole, _host_of(planned), lost)
            moved.update(done.moved)
            planned = done.planned
            planned.notes.extend(done.notes + [f"moved {len(moved)} node(s) off lost host(s) "
                                               f"{', '.join(sorted(lost))}: {', '.join(sorted(moved)[:8])}"
                                               + (" …" if len(moved) > 8 else "")])
            _write_whole_plan(state, planned)
            cluster_status = state.status()["cluster"]
            state.set_status("creating", cluster={**cluster_status, "hosts": list(planned.plans),
                                                  "lost": sorted(lost), "host_of": _host_of(planned),
                                                  "notes": planned.notes})


def _host_of(planned: ClusterPlan) -> dict[str, str]:
    return {n.name: host for host, plan in planned.plans.items() for n in plan.nodes}


def _bookkeeping(state: ExperimentState, cluster: Cluster, planned: ClusterPlan, reals: list[real.RealHost]
                 ) -> None:
    state.journal.record([{"t": "file", "path": str(state.directory / f)} for f in BOOKKEEPING]
                         + [{"t": "dir", "path": str(state.directory)}])
    if reals:                     # where the hosts' stores are copied to (host_stores), should they be
        copies = _copies_dir(state)
        state.journal.record([{"t": "dir", "path": str(copies)}]
                             + [{"t": "file", "path": str(copies / f"{h.name}.sqlite{end}")}
                                for h in reals for end in ("", ".part")])
    from nestbed.realize import credential
    credential.ensure(state)      # the experiment's own secret, here: scenario agents derive theirs from it
    hostcopies.journal_host_copies(state, list(planned.plans))
    state.set_status("creating", started=time.time(),
                     cluster={"emulate": cluster.emulate, "hosts": list(planned.plans), "host_of": _host_of(planned),
                              "notes": planned.notes, "real": {h.name: h.to_json() for h in reals},
                              **({"engine": {"etcd": cluster.etcd}} if cluster.etcd else {})})


def _resumable(state: ExperimentState, cluster: Cluster) -> bool:
    """An etcd engine's `up` whose controller died: same endpoints, never finished, nobody at work on it."""
    status = state.status()
    engine = (status.get("cluster") or {}).get("engine") or {}
    return bool(cluster.etcd) and engine.get("etcd") == cluster.etcd and status.get("state") == "creating" \
        and not state.is_busy()


def _emulated_hosts(name: str, cluster: Cluster, resuming: bool) -> emulated.EmulatedCluster:
    if not resuming:
        return emulated.up(name, cluster.emulate, underlay_mtu=cluster.underlay_mtu)
    hosts = emulated.load(name)
    if hosts is None:
        raise ExperimentError(f"experiment {name!r} was left before its emulated hosts were up; run "
                              f"'nestbed down {name}' first")
    return hosts


def _etcd_urls(state: ExperimentState) -> list[str]:
    return list(((state.status().get("cluster") or {}).get("engine") or {}).get("etcd") or [])


def engine_summary(name: str) -> dict[str, Any] | None:
    """The etcd engine's statuses of the experiment aggregated (None: not an etcd experiment)."""
    urls = _etcd_urls(experiment(name))
    if not urls:
        return None
    from nestbed.cluster.etcd import engine
    return engine.summary(urls, name)


def engine_status(name: str) -> dict[str, Any] | None:
    """engine_summary for `nestbed status --json` (its "etcd" key): an etcd that cannot tell is
    {"error": one line}, not a failure of the whole status; None for an experiment of another engine."""
    try:
        return engine_summary(name)
    except ExperimentError as error:
        return {"error": str(error)}


def _apply_everywhere(transports: dict[str, SshHost], planned: ClusterPlan, progress: ClusterProgress | None = None
                      ) -> dict[str, list[float]]:
    """Every host's plan at once; per host [seconds until its answer, seconds its `up` took there]."""
    failures: list[str] = []
    took: dict[str, list[float]] = {}
    started = time.monotonic()

    def apply_on(host: str, plan: Any) -> list[float]:
        there = transports[host].apply(plan, progress.on_host(host) if progress is not None else None)
        return [time.monotonic() - started, there]
    with ThreadPoolExecutor(len(planned.plans)) as pool:
        futures = {host: pool.submit(apply_on, host, plan) for host, plan in planned.plans.items()}
        for host, future in futures.items():
            try:
                took[host] = future.result()
            except Exception as error:               # one line per host; the rollback follows
                failures.append(f"host {host}: {error}")
    if failures:
        raise ExperimentError("; ".join(failures) + " (every host was rolled back)")
    return took


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _transports(name: str, state: ExperimentState) -> list[SshHost]:
    """One per host that holds part of the experiment (a lost host, whose nodes moved, is also asked at down:
    it may be back, with what it held)."""
    reals = _real_hosts(state)
    if reals:
        return [h.transport() for h in reals]
    hosts = emulated.load(name)
    return hosts.transports() if hosts is not None else []


def _live_transports(name: str, state: ExperimentState) -> list[SshHost]:
    """The hosts the experiment runs on now (not those lost)."""
    lost = set((state.status().get("cluster") or {}).get("lost") or [])
    return [t for t in _transports(name, state) if t.name not in lost]


def _remove_everything(name: str, state: ExperimentState) -> TeardownReport:
    """Every host's part, then the emulated hosts, then the controller's files. What an emulated host cannot
    remove over SSH, emulated.down's own cleanup of that host finds; a real host that cannot be asked keeps its
    part, and the controller's files stay so that `nestbed cleanup` can ask it again."""
    reals = {h.name for h in _real_hosts(state)}
    pending = set((state.status().get("cluster") or {}).get("pending") or reals)
    urls = _etcd_urls(state)
    if urls:                # the agents take it down (the empty plan); SSH and the hosts' cleanup do the rest
        from nestbed.cluster.etcd import engine
        cluster_status = state.status().get("cluster") or {}
        hosts = [engine.host_id(name, h, not reals)       # the lost ones too: their keys go
                 for h in list(cluster_status.get("hosts") or []) + list(cluster_status.get("lost") or [])]
        try:
            engine.remove(urls, name, hosts)
        except Exception:   # etcd unreachable or refusing: the SSH removal below still reaches the hosts
            pass
        if not reals:
            engine.stop_agents(emulated.cluster_dir(name))
    transports = [t for t in _transports(name, state) if not reals or t.name in pending]
    report = TeardownReport(name)
    unreached: list[str] = []
    with ThreadPoolExecutor(max(1, len(transports))) as pool:
        for transport, removed in zip(transports, pool.map(lambda t: _remove_on(t, name), transports)):
            if isinstance(removed, str):
                if transport.name in reals:
                    unreached.append(transport.name)
                    report.kept.append(f"host {transport.name}: {removed}; its part of {name} stays there: run "
                                       f"'nestbed cleanup' once it is back")
                else:
                    report.kept.append(f"host {transport.name}: {removed}; removed from its journals on this "
                                       f"machine instead")
            elif removed is not None:
                report.namespaces += removed.namespaces
                report.processes += removed.processes
                report.files += removed.files
                report.left.extend(f"host {transport.name}: {line}" for line in removed.left)
    for transport in transports:
        transport.close()
    if unreached:
        cluster = dict(state.status().get("cluster") or {})
        state.set_status("down", cluster={**cluster, "pending": sorted(unreached)})
        return report
    gone = emulated.down(name)
    if gone is not None:
        report.namespaces += gone.namespaces
        report.processes += gone.processes
        report.files += gone.files
        report.left.extend(gone.left)
    from nestbed.realize import teardown
    local = teardown.teardown(state)
    report.files += local.files
    report.left.extend(local.left)
    return report


def _remove_on(transport: SshHost, name: str) -> TeardownReport | str | None:
    """The host's teardown report, None when it holds nothing of it, or why it could not be asked (one line)."""
    try:
        return transport.remove(name)
    except Exception as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__


def down(name: str) -> TeardownReport | None:
    state = experiment(name)
    if not state.directory.is_dir():
        return None
    lock = state.lock()
    if lock is None:
        raise ExperimentError(f"experiment {name!r} is being created or removed; wait for it")
    started = time.monotonic()
    try:
        report = _remove_everything(name, state)
    finally:
        os.close(lock)
    report.seconds = time.monotonic() - started
    return report


def control(name: str) -> ClusterControl:
    state = experiment(name)
    cluster = state.status().get("cluster") or {}
    whole = state.load_plan()
    transports = {t.name: t for t in _live_transports(name, state)}
    if whole is None or not transports or state.status().get("state") != "up":
        raise ExperimentError(f"experiment {name!r} is not up on its cluster; see 'nestbed status {name}'")
    connect_all(list(transports.values()))
    return ClusterControl(name, whole, dict(cluster["host_of"]),
                          {host: t.control(name) for host, t in transports.items()})


def control_for(name: str) -> ExperimentControl:
    """The experiment's control, wherever it runs: its hosts' (a cluster) or this host's agent."""
    if is_cluster(experiment(name)):
        return control(name)
    from nestbed.cluster.local import LocalHost
    return LocalHost().control(name)


def cleanup(everything: bool = False) -> list[TeardownReport]:
    """Cluster experiments a crash left (every one with `everything`): each host's part, then the emulated hosts,
    then the controller's files; then emulated hosts whose experiment is gone."""
    from nestbed.realize.state import all_experiments
    reports = []
    for state in all_experiments():
        if not is_cluster(state) or (not everything and state.status().get("state") == "up"):
            continue
        try:
            report = down(state.name)
        except ExperimentError:
            continue                    # busy: an up or down at work
        if report is not None:
            reports.append(report)
    for gone in emulated.cleanup(everything):
        reports.append(TeardownReport(gone.experiment, namespaces=gone.namespaces, processes=gone.processes,
                                      files=gone.files, seconds=gone.seconds, left=list(gone.left)))
    return reports


def _copies_dir(state: ExperimentState) -> Path:
    return state.directory / "host-stores"


def host_stores(name: str) -> dict[str, Path]:
    """Each host's store of the experiment (its agent's events, records and counters) on this machine: an
    emulated host's where it is, a real host's copied here now (over its channel)."""
    state = experiment(name)
    lost = set((state.status().get("cluster") or {}).get("lost") or [])
    reals = [h for h in _real_hosts(state) if h.name not in lost]
    if reals:
        return _copied_stores(name, state, reals)
    hosts = emulated.load(name)
    if hosts is None:
        return {}
    found = {}
    for host in hosts.hosts:
        path = paths.store(Path(host.state_dir) / name)
        if path.exists():
            found[host.name] = path
    return found


def _copied_stores(name: str, state: ExperimentState, reals: list[real.RealHost]) -> dict[str, Path]:
    copies = _copies_dir(state)
    copies.mkdir(exist_ok=True)               # journaled at `up`
    transports = [h.transport() for h in reals]
    try:
        connect_all(transports)

        def copy(transport: SshHost) -> tuple[str, Path | None]:
            into = copies / f"{transport.name}.sqlite"
            return transport.name, into if transport.store_copy(name, into) else None
        with ThreadPoolExecutor(len(transports)) as pool:
            return {host: path for host, path in pool.map(copy, transports) if path is not None}
    finally:
        for transport in transports:
            transport.close()


def merged_store(name: str, into: Path) -> Path:
    """One store of the whole experiment at `into` (made anew): the controller's (the scenario's events), then
    every host's events, records (with their host) and counters, in time order."""
    import sqlite3

    from nestbed.agent.store import Store
    into.unlink(missing_ok=True)
    Store(into).close()                                    # the schema
    merged = sqlite3.connect(into)
    try:
        sources = [("", paths.store(experiment(name).directory))] + list(host_stores(name).items())
        for host, path in sources:
            if not path.exists():
                continue
            merged.execute("ATTACH DATABASE ? AS source", (str(path),))
            try:
                columns = {t: [r[1] for r in merged.execute(f"PRAGMA source.table_info({t})")]
                           for t in ("events", "records", "counters")}
                for table, cols in columns.items():
                    keep = [c for c in cols if c != "id"]     # ids are each store's own: the merge numbers anew
                    if host and table == "records" and "host" in keep:
                        select = ", ".join("?" if c == "host" else c for c in keep)
                        args: tuple[Any, ...] = (host,)
                    else:
                        select, args = ", ".join(keep), ()
                    merged.execute(f"INSERT INTO main.{table} ({', '.join(keep)}) SELECT {select} FROM "
                                   f"source.{table} ORDER BY created", args)
                merged.commit()
            finally:
                merged.execute("DETACH DATABASE source")
    finally:
        merged.close()
    return into
