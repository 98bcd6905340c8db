"""`nestbed demo`: DETER's CATCH demo — IRC command and control, q9bot bots in processes inside qemu VMs,
a target under flood — run from examples/catch/ (the topology and the AAL scenario, as a user would run them by
hand), then a report computed from the store and the demo's checks, then down.

    nestbed demo [--bots N] [--target process|qemu|physical] [--cluster C] [-o DIR] [--keep]

The demo is those files run: it reads examples/catch/catch.yaml, changes only what the flags say (the two bot
families' counts, the target's kind), brings it up, runs examples/catch/catch.aal through `nestbed run`'s code,
writes the report (cli/catch_png.py) and checks that `down` left nothing of it. Exit 0 when every check holds.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from nestbed.errors import NestbedError

NAME = "catch"
BOT_FAMILIES = ("bota", "botb")      # one family per IRC server: the demo splits --bots between them
TARGETS = ("process", "qemu", "physical")
SCENARIO_TIMEOUT = 360.0          # seconds: a scenario stuck past twice the demo's goal is stopped


class DemoError(NestbedError):
    """What stops the demo before it touches anything (bad flags, examples missing)."""


def catch_directory() -> Path:
    """examples/catch of the source tree nestbed runs from (the README's install is an editable checkout)."""
    import nestbed
    directory = Path(nestbed.__file__).resolve().parents[2] / "examples" / "catch"
    if not (directory / "catch.yaml").is_file() or not (directory / "catch.aal").is_file():
        raise DemoError(f"the demo's files are not in {directory} (catch.yaml, catch.aal); run the demo from a "
                        f"checkout of nestbed (./run demo)")
    return directory


def demo_topology_text(text: str, where: str, bots: int, target: str, on_cluster: bool = False) -> str:
    """catch.yaml with the flags applied: --bots split over the bot families (at least one each), the target's
    kind (physical: a host of its own, so a cluster). Pure: returns YAML text the loader validates as it would the
    file."""
    import yaml
    if bots < len(BOT_FAMILIES):
        raise DemoError(f"--bots {bots}: the demo needs at least {len(BOT_FAMILIES)} bots (one per IRC server)")
    if target not in TARGETS:
        raise DemoError(f"--target {target!r} is not one of {', '.join(TARGETS)}")
    if target == "physical" and not on_cluster:
        raise DemoError("--target physical needs a host of its own: give --cluster too (e.g. --cluster "
                        "examples/catch/lab3.yaml, three emulated hosts), or use --target process or qemu")
    raw = yaml.safe_load(text)
    nodes = raw.get("nodes") if isinstance(raw, dict) else None
    if not isinstance(nodes, dict) or "target" not in nodes or any(f not in nodes for f in BOT_FAMILIES):
        raise DemoError(f"{where}: the demo expects nodes {', '.join(BOT_FAMILIES)} (counted bots) and target; "
                        f"restore the file from git")
    base, extra = divmod(bots, len(BOT_FAMILIES))
    for index, family in enumerate(BOT_FAMILIES):
        node = dict(nodes[family] or {})
        node["count"] = base + (1 if index < extra else 0)
        nodes[family] = node
    target_node = dict(nodes["target"] or {})
    target_node["kind"] = target
    nodes["target"] = target_node
    return str(yaml.safe_dump(raw, sort_keys=False))


@dataclass
class Footprint:
    """What the experiment had, taken before `down`, to prove afterwards that nothing of it is left."""
    namespaces: list[str]
    namespace_ids: set[tuple[int, int]]
    processes: dict[int, int | None]            # journaled pid → start time
    directory: Path
    left: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, name: str) -> Footprint:
        from nestbed.realize import namespaces
        from nestbed.realize.state import experiment
        state = experiment(name)
        plan = state.load_plan()
        names = list(plan.netns_names) if plan is not None else []
        ids = {i for i in (namespaces.namespace_id(n) for n in names) if i is not None}
        pids = {int(e["pid"]): e.get("start") for e in state.journal.entries() if e.get("t") == "pid"}
        return cls(names, ids, pids, state.directory)

    def check_gone(self) -> list[str]:
        from nestbed import procs
        from nestbed.realize import namespaces
        left = [f"namespace {n}" for n in self.namespaces if namespaces.exists(n)]
        left += [f"process {pid}" for pid, start in self.processes.items() if procs.is_same(pid, start)
                 and procs.state_of(pid) not in ("Z", "")]
        left += [f"process {pid} (in one of its namespaces)" for pid in namespaces.processes_in(self.namespace_ids)]
        if self.directory.exists():
            left.append(f"directory {self.directory}")
        return left


def run_demo(out: Console, err: Console, bots: int = 20, target: str = "process", cluster: str | None = None,
             out_dir: str = "catch-report", keep: bool = False) -> int:
    started = time.monotonic()
    directory = catch_directory()
    topology_file = directory / "catch.yaml"
    text = demo_topology_text(topology_file.read_text(), str(topology_file), bots, target, cluster is not None)
    report_dir = Path(out_dir)
    lab = None
    if cluster is not None:
        from nestbed.model.cluster import load_cluster
        lab = load_cluster(cluster)              # a bad cluster file is one line, before anything is made
    _check_writable(report_dir)

    from nestbed.cli.cmd_run import run_scenario
    from nestbed.cluster.local import LocalHost
    from nestbed.model import load_topology_text
    from nestbed.plan import compile_plan
    from nestbed.realize.control import busy_control_subnets
    experiment = load_topology_text(text, str(topology_file))
    from nestbed.cluster import deploy
    from nestbed.realize.state import experiment as state_of
    if state_of(NAME).directory.exists():      # maybe a user's own experiment of that name: never removed here
        raise DemoError(f"an experiment named {NAME!r} exists already; run 'nestbed down {NAME}' first")
    host = LocalHost()
    if lab is None:
        plan = compile_plan(experiment, busy_control_subnets=busy_control_subnets())
        where = ""
    else:
        planned = deploy.plan_for(experiment, lab)     # bad input fails here, with nothing made
        plan = planned.whole
        where = f" on {len(planned.plans)} hosts"
    out.print(f"[bold]CATCH demo[/]: {bots} q9bots and 2 IRC servers in processes inside {len(plan.vms)} qemu "
              f"VM(s), routers, 3 web clients, a {target} target behind a 10 Mbit/s bottleneck{where}",
              highlight=False)
    if lab is None:
        seconds = host.apply(plan)
    else:
        planned, seconds = deploy.up(experiment, lab)
        plan = state_of(NAME).load_plan() or planned.whole      # with every node's host
    out.print(f"[green]{NAME} is up[/]{where} in {seconds:.1f} s ({len(plan.nodes)} nodes)", highlight=False)
    footprint = Footprint.of(NAME)
    code = 1
    summary = None
    try:
        code = run_scenario(NAME, str(directory / "catch.aal"), timeout=SCENARIO_TIMEOUT, keep=False,
                            check=False, out=out, err=err)
        from nestbed import paths
        from nestbed.cli.catch_report import write_report
        store = paths.store(state_of(NAME).directory)
        if lab is not None:                  # the programs' records and counters are in each host's store
            store = deploy.merged_store(NAME, report_dir / "catch.sqlite")
        summary = write_report(store, plan, report_dir, exit_code=code)
        if lab is None:
            _keep_store(store, report_dir / "catch.sqlite")
    finally:
        if keep:
            out.print(f"kept: nestbed status {NAME} · nestbed records {NAME} --agent q9bot · nestbed down {NAME}",
                      highlight=False)
        else:
            report = host.remove(NAME) if lab is None else deploy.down(NAME)
            footprint.left = footprint.check_gone()
            if report is not None:
                out.print(f"{NAME} removed in {report.seconds:.1f} s", highlight=False)
    if summary is None:
        return 1
    # What only the end can tell: the whole demo's time, and that down left nothing.
    from nestbed.cli.catch_report import save_summary
    from nestbed.control.catchreport import TOTAL_LIMIT, Check
    total = time.monotonic() - started
    summary.seconds_total = round(total, 1)
    summary.checks.append(Check("total time", total <= TOTAL_LIMIT, f"{total:.0f} s", f"≤ {TOTAL_LIMIT:.0f} s"))
    if not keep:
        left = footprint.left
        summary.checks.append(Check("down leaves nothing", not left, ", ".join(left[:4]) or "nothing left",
                                    "no process, namespace, VM or file"))
    save_summary(summary, report_dir)
    return _print_checks(out, summary.checks, report_dir)


def _print_checks(out: Console, checks: list[Any], report_dir: Path) -> int:
    out.print("[bold]checks[/]")
    failed = 0
    for check in checks:
        failed += not check.ok
        mark = "[green]PASS[/]" if check.ok else "[bold red]FAIL[/]"
        out.print(f"  {mark} {check.name}: {check.figure} (goal {check.goal})", highlight=False)
    out.print(f"report: {report_dir}/summary.txt and PNGs", highlight=False)
    return 1 if failed else 0


def _keep_store(store: Path, copy: Path) -> None:
    """The store goes with the experiment at down; the report keeps a consistent copy of it
    (`nestbed plot --store DIR/catch.sqlite` redraws from it)."""
    import sqlite3
    copy.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


def _check_writable(directory: Path) -> None:
    """Refuse before anything is made when the report cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DemoError(f"cannot make the report directory {directory}: {error.strerror}; "
                        f"pick another with -o") from None
    if not os.access(directory, os.W_OK):
        raise DemoError(f"cannot write the report directory {directory}; pick another with -o")
