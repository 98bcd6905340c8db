"""The `nestbed` command: each verb binds its arguments and calls one function; errors are one line."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from nestbed.errors import ExperimentError, NestbedError
from nestbed.model import with_exact_lines
from nestbed.plan import compile_plan
from nestbed.plan.hostplan import HostPlan

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="nestbed: network experiments of processes, qemu VMs and physical machines.")
out = Console()
err = Console(stderr=True)
PROGRESS_THRESHOLD = 50       # nodes; smaller experiments come up too fast for a bar to help


def _fail(message: str, code: int = 1) -> None:
    _say_error(message)
    raise typer.Exit(code)


def _say_error(message: object) -> None:
    """`nestbed: MESSAGE` on stderr; the message is text, never markup (it may hold `[a, b]`)."""
    from rich.markup import escape
    err.print(f"[bold red]nestbed:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def _load_plan(topology: str, for_this_host: bool = False) -> HostPlan:
    """for_this_host: the plan `up` realizes now, whose control subnet avoids those in use here; for an
    experiment of that name running here, with its numbering (plan/pins.py), so only what changed differs."""
    if not for_this_host:
        return with_exact_lines(topology, compile_plan)
    from nestbed.plan.pins import pins_of
    from nestbed.realize.control import busy_control_subnets
    from nestbed.realize.state import experiment
    busy = busy_control_subnets()

    def compiled(exp: Any) -> HostPlan:
        state = experiment(exp.name)
        running = state.load_plan() if state.directory.is_dir() else None
        return compile_plan(exp, pins=pins_of(running), busy_control_subnets=busy)
    return with_exact_lines(topology, compiled)


@app.command()
def validate(topology: str = typer.Argument(..., help="topology file (YAML, or an NS file: .ns, .tcl)")) -> None:
    """Check a topology file; touches nothing on the machine. For an NS file, also what nestbed reads differently
    from Emulab and which lines it ignores."""
    from nestbed.model.loader import NS_SUFFIXES
    plan = _load_plan(topology)
    links = sum(1 for s in plan.segments if s.kind == "link")
    out.print(f"{topology}: ok — experiment {plan.experiment}: {len(plan.nodes)} nodes, {links} links, "
              f"{len(plan.segments) - links} LANs", soft_wrap=True)
    if topology.endswith(NS_SUFFIXES):
        from nestbed.model.nsfile import read
        imported = read(topology)
        for line in imported.notes:
            out.print(f"  note: {line}", soft_wrap=True, markup=False, highlight=False)
        for line in imported.ignored:
            out.print(f"  ignored: {line}", soft_wrap=True, markup=False, highlight=False)


@app.command()
def convert(topology: str = typer.Argument(..., help="an NS file (Emulab's or DETER's Tcl)"),
            output: str | None = typer.Option(None, "-o", "--output", metavar="FILE.yaml",
                                              help="write here (default: print)")) -> None:
    """The nestbed topology an NS file means, as YAML; what was ignored becomes comments at its top. With -o, a
    file with events also gets its scenario next to the YAML (FILE.aal, for `nestbed run`)."""
    from nestbed.model.loader import NS_SUFFIXES, load_topology
    from nestbed.model.nsfile.convert import converted
    if not topology.endswith(NS_SUFFIXES):
        _fail(f"{topology}: convert reads NS files ({', '.join(NS_SUFFIXES)}); a YAML topology needs no converting")
    load_topology(topology)                       # every check a topology gets, at the NS file's lines
    text, scenario = converted(topology)
    if output is None:
        print(text, end="")
        return
    written = [output]
    try:
        Path(output).write_text(text)
        if scenario is not None:
            written.append(str(Path(output).with_suffix(".aal")))
            Path(written[-1]).write_text(scenario)
    except OSError as error:
        _fail(f"cannot write {written[-1]}: {error.strerror}")
    out.print(f"{topology} → {' + '.join(written)}", highlight=False)


@app.command()
def plan(topology: str = typer.Argument(..., help="topology file (YAML)"),
         as_json: bool = typer.Option(False, "--json", help="print the plan (or the embedding) as JSON"),
         cluster: str | None = typer.Option(None, "--cluster", metavar="CLUSTER.yaml",
                                            help="embed on these hosts: show host → vhost VM → nodes"),
         seed: int | None = typer.Option(None, "--seed", help="embedding seed (with --cluster; default 0)"),
         png: str | None = typer.Option(None, "--png", metavar="FILE",
                                        help="also draw the vtopo with a box per host into FILE")) -> None:
    """Show what `up` would create on this host (addresses, routes, bridges), without creating it.

    With --cluster: where each node would run (host, vhost VM), the segments crossing hosts, and how good it is."""
    if cluster is None and png is None:
        if seed is not None:
            _fail("--seed chooses among embeddings on a cluster; give --cluster CLUSTER.yaml too", 2)
        host_plan = _load_plan(topology)
        if as_json:
            print(host_plan.to_json())
            return
        from nestbed.cli.views import print_plan
        print_plan(out, host_plan)
        return
    _plan_embedding(topology, cluster, seed or 0, as_json, png)


def _plan_embedding(topology: str, cluster_file: str | None, seed: int, as_json: bool, png: str | None) -> None:
    """`plan --cluster` (or --png alone, on this machine): embed, then print the tree or JSON, draw the PNG."""
    import time

    from nestbed.cli import embed_view
    from nestbed.embed import Embedding, embed
    from nestbed.model import Experiment
    from nestbed.model.cluster import load_cluster, local_cluster
    started = time.perf_counter()
    cluster = local_cluster() if cluster_file is None else load_cluster(cluster_file)
    loaded = started

    def place(exp: Experiment) -> tuple[Experiment, Embedding]:
        nonlocal loaded
        loaded = time.perf_counter()
        return exp, embed(exp, cluster, seed=seed)

    exp, embedding = with_exact_lines(topology, place)
    done = time.perf_counter()
    timing = embed_view.Timing(load=loaded - started, embed=done - loaded, total=done - started)
    drawing = None
    if png is not None:       # before any output: a PNG that cannot be written fails the command cleanly
        from nestbed.cli.partition_png import draw_partitions
        try:
            drawing = draw_partitions(exp, embedding, png, seed=seed)
        except OSError as error:
            raise ExperimentError(f"cannot write {png}: {error.strerror or error}") from None
    if cluster_file is None:         # --png alone: today's plan, and the picture of it on this machine
        host_plan = compile_plan(exp)
        if as_json:
            print(host_plan.to_json())
        else:
            from nestbed.cli.views import print_plan
            print_plan(out, host_plan)
    elif as_json:
        print(json.dumps(embed_view.embedding_json(embedding, timing)))
    else:
        embed_view.print_embedding(out, embedding, exp, cluster, timing)
    if drawing is not None:
        note = f" ({drawing.drawn} of {drawing.total} nodes drawn)" if drawing.sampled else ""
        (err if as_json else out).print(f"wrote {drawing.path}{note}", highlight=False, soft_wrap=True)


class _BarProgress:
    """Adapts rich's progress bar to the realizer's Progress protocol: one bar per phase."""

    def __init__(self, progress: Any):
        self.progress = progress
        self.task: Any = None

    def phase(self, description: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.task = self.progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        self.progress.advance(self.task, amount)


class _ClusterBars:
    """deploy.up's ClusterProgress on rich bars: a line for the controller's stage, a bar per host (its phase)."""

    def __init__(self, progress: Any):
        self.progress = progress
        self.stage_task = progress.add_task("", total=None)

    def stage(self, description: str) -> None:
        self.progress.update(self.stage_task, description=description)

    def on_host(self, host: str) -> _HostBar:
        return _HostBar(self.progress, host)


class _HostBar:
    """One host's apply as one bar: each phase restarts it under the phase's name."""

    def __init__(self, progress: Any, host: str):
        self.progress, self.host = progress, host
        self.task = progress.add_task(f"  {host}", total=None)

    def phase(self, description: str, total: int) -> None:
        self.progress.update(self.task, description=f"  {self.host}: {description}", total=total, completed=0)

    def advance(self, amount: int = 1) -> None:
        self.progress.advance(self.task, amount)


@app.command()
def up(topology: str = typer.Argument(..., help="topology file (YAML)"),
       cluster: str | None = typer.Option(None, "--cluster", metavar="CLUSTER.yaml",
                                          help="realize on these hosts (emulate: N for emulated hosts)"),
       dry_run: bool = typer.Option(False, "--dry-run",
                                    help="with the experiment running: show what would change, change nothing"),
       keep_going: bool = typer.Option(False, "--keep-going",
                                       help="etcd engine: move a lost host's nodes to the other hosts instead of "
                                            "rolling the experiment back")
       ) -> None:
    """Realize a topology on this machine (or a cluster); returns when every node is up. With the experiment
    running already: shows what the edited file changes and applies only that (running nodes keep their
    processes)."""
    if cluster is not None:
        _up_on_cluster(topology, cluster, dry_run, keep_going)
        return
    if keep_going:
        _fail("--keep-going moves nodes between a cluster's hosts: use it with --cluster CLUSTER.yaml")
    from nestbed.cluster.local import LocalHost
    from nestbed.realize.state import experiment
    host_plan = _load_plan(topology, for_this_host=True)
    if experiment(host_plan.experiment).directory.is_dir():
        _modify(host_plan, dry_run)
        return
    if dry_run:
        out.print(f"{host_plan.experiment} is not running here: up would create {len(host_plan.nodes)} nodes")
        return
    if len(host_plan.nodes) >= PROGRESS_THRESHOLD and err.is_terminal:      # rich.progress only then: 10 ms
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
        columns = (TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            seconds = LocalHost().apply(host_plan, _BarProgress(bar))
    else:
        seconds = LocalHost().apply(host_plan)
    links = sum(1 for s in host_plan.segments if s.kind == "link")
    out.print(f"[green]{host_plan.experiment} is up[/]: {len(host_plan.nodes)} nodes, {links} links, "
              f"{len(host_plan.segments) - links} LANs in {seconds:.2f} s")
    if host_plan.nodes:
        first = host_plan.nodes[0].name
        out.print(f"  try: nestbed exec {host_plan.experiment} {first} -- ip addr · nestbed shell "
                  f"{host_plan.experiment} {first} · nestbed down {host_plan.experiment}", highlight=False)


def _modify_on_cluster(exp: Any, cluster: Any, dry_run: bool, keep_going: bool = False) -> None:
    """`up --cluster` of an experiment that runs there: each host's diff, then only the hosts that changed."""
    from nestbed.cluster import modify
    from nestbed.realize.state import experiment
    done = modify.modify(exp, cluster, experiment(exp.name), dry_run,
                         lambda line: out.print(f"  {line}", highlight=False), keep_going)
    if done.empty:
        out.print(f"{exp.name}: nothing to change")
    elif dry_run:
        out.print(f"{exp.name}: --dry-run, nothing changed")
    else:
        unchanged = [h for h in done.changes if h not in done.applied]
        out.print(f"[green]{exp.name} changed in place[/] on {', '.join(done.applied)} in {done.seconds:.2f} s"
                  + (f" ({', '.join(unchanged)}: no change)" if unchanged else ""), highlight=False)


def _modify(host_plan: HostPlan, dry_run: bool) -> None:
    """`up` of an experiment that runs: the diff, then only it (lifecycle.reconcile)."""
    from nestbed.cluster.local import LocalHost
    from nestbed.plan.diff import diff
    from nestbed.realize.state import experiment
    state = experiment(host_plan.experiment)
    running = state.load_plan()
    if state.status().get("state") != "up" or running is None:
        LocalHost().reconcile(host_plan)          # refuses in one line (half-made, busy)
        return
    changes = diff(running, host_plan)
    if changes.refused:
        _fail(f"{host_plan.experiment}: {changes.refused[0]}")
    if changes.empty:
        out.print(f"{host_plan.experiment}: nothing to change")
        if not dry_run and running.to_json() != host_plan.to_json():
            LocalHost().reconcile(host_plan)      # bookkeeping only (the plan file), no kernel call
        return
    for line in changes.summary():
        out.print(f"  {line}", highlight=False)
    if dry_run:
        out.print(f"{host_plan.experiment}: --dry-run, nothing changed")
        return
    done = LocalHost().reconcile(host_plan)
    out.print(f"[green]{host_plan.experiment} changed in place[/] in {done.seconds:.2f} s"
              + (" (host agent reloaded with the new node set)" if done.agent_reloaded else "")
              + (" (host agent restarted for the new node set)" if done.agent_restarted else ""))


def _up_on_cluster(topology: str, cluster_file: str, dry_run: bool = False, keep_going: bool = False) -> None:
    from nestbed.cluster import deploy
    from nestbed.model import load_topology
    from nestbed.model.cluster import load_cluster
    exp, cluster = load_topology(topology), load_cluster(cluster_file)
    if keep_going:
        deploy.check_keep_going(cluster)
    if deploy.is_running(exp.name):
        _modify_on_cluster(exp, cluster, dry_run, keep_going)
        return
    if dry_run:
        out.print(f"{exp.name} is not running: up would create it on the cluster")
        return
    if err.is_terminal:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
        columns = (TextColumn("{task.description:<44}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            planned, seconds = deploy.up(exp, cluster, _ClusterBars(bar), keep_going)
    else:
        planned, seconds = deploy.up(exp, cluster, keep_going=keep_going)
    nodes = {host: len(plan.nodes) for host, plan in planned.plans.items()}
    crossing = len({v.segment for plan in planned.plans.values() for v in plan.vxlans})
    out.print(f"[green]{exp.name} is up[/] on {len(nodes)} hosts in {seconds:.2f} s: "
              + ", ".join(f"{host} {count} nodes" for host, count in nodes.items())
              + f"; {crossing} {'segment crosses' if crossing == 1 else 'segments cross'} hosts (VXLAN)",
              highlight=False)
    for note in planned.notes:
        out.print(f"  note: {note}", highlight=False)
    first = planned.whole.nodes[0].name if planned.whole.nodes else None
    if first:
        out.print(f"  try: nestbed exec {exp.name} {first} -- ip addr · nestbed status {exp.name} · "
                  f"nestbed down {exp.name}", highlight=False)


@app.command()
def status(name: str | None = typer.Argument(None, help="experiment name (default: list all)"),
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List experiments, or show one: nodes, interfaces, addresses, links and state."""
    from nestbed.cli import views
    if name is None:
        views.print_experiments(out, as_json)
    else:
        views.print_experiment(out, name, as_json)


def _node_of(name: str, node: str) -> tuple[Any, Any]:
    from nestbed.realize.state import require
    state = require(name)
    plan = state.load_plan()
    if plan is None or state.status().get("state") != "up":
        raise ExperimentError(f"experiment {name!r} is not up (state: {state.status().get('state')}); "
                              f"see 'nestbed status {name}'")
    try:
        return state, plan.node(node)
    except KeyError:
        import difflib
        close = difflib.get_close_matches(node, [n.name for n in plan.nodes], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; nodes: {', '.join(n.name for n in plan.nodes[:10])}"
        raise ExperimentError(f"experiment {name!r} has no node {node!r}{hint}") from None


@app.command(name="exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(ctx: typer.Context, name: str = typer.Argument(..., help="experiment"),
          node: str = typer.Argument(..., help="node"),
          command: list[str] = typer.Argument(None, help="command and arguments (after --)")) -> None:
    """Run a command in a node; its output and exit code pass through."""
    argv = list(command or []) + list(ctx.args)
    if not argv:
        _fail("no command given; write e.g. nestbed exec lan3 a -- ping -c1 b", 2)
    from nestbed.agent.runners import runner_for
    state, node_plan = _node_of(name, node)
    if node_plan.host:                 # a multi-host experiment: the node's host runs it, output as it comes
        from nestbed.cluster import deploy
        control = deploy.control(name)
        try:
            raise typer.Exit(control.exec(node_plan.name, argv, on_out=_write_out, on_err=_write_err))
        finally:
            control.close()
    # a process node of this host: this process enters it and execs; a node in a VM: its guest agent runs it
    raise typer.Exit(runner_for(state, state.load_plan(), node_plan).exec(node_plan.name, argv))


def _write_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _write_err(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


@app.command()
def shell(name: str = typer.Argument(..., help="experiment"), node: str = typer.Argument(..., help="node")) -> None:
    """An interactive shell in a node (prompt: [experiment:node]); on a cluster, over SSH to the node's host."""
    from nestbed.agent.runners import runner_for
    state, node_plan = _node_of(name, node)
    if node_plan.host:                 # a multi-host experiment: that host's own `nestbed shell`, through ssh -tt
        from nestbed.cluster.shell import open_shell
        open_shell(name, node_plan.name, node_plan.host)
    raise typer.Exit(runner_for(state, state.load_plan(), node_plan).shell(node_plan.name))


@app.command()
def down(name: str = typer.Argument(..., help="experiment name")) -> None:
    """Remove an experiment and everything it created (from its journal). Safe to repeat."""
    from nestbed.cluster.local import LocalHost
    from nestbed.realize.state import experiment
    if experiment(name).status().get("cluster"):
        from nestbed.cluster import deploy
        report = deploy.down(name)
    else:
        report = LocalHost().remove(name)
    if report is None:
        out.print(f"nothing to do: no experiment named {name!r} on this host")
        return
    out.print(f"[green]{name} is down[/]: {report.namespaces} namespaces, {report.processes} processes, "
              f"{report.files} files removed in {report.seconds:.2f} s")
    for path in report.left:
        err.print(f"left {path}: it holds files nestbed did not create")
    for line in report.kept:
        err.print(line)
    for process in report.processes_left:
        err.print(f"left {process}")


@app.command()
def cleanup(everything: bool = typer.Option(False, "--all", help="also remove experiments that are up")) -> None:
    """Remove what crashed runs left behind (with --all: every experiment), from their journals."""
    from nestbed.cluster import deploy
    from nestbed.cluster.local import LocalHost
    reports = deploy.cleanup(everything) + LocalHost().cleanup(everything)   # clusters first: their hosts
    if not reports:
        out.print("nothing to clean up")
    for report in reports:
        out.print(f"removed {report.name}: {report.namespaces} namespaces, {report.processes} processes, "
                  f"{report.files} files in {report.seconds:.2f} s")
        for line in report.kept:
            err.print(line)


@app.command()
def demo(bots: int = typer.Option(20, "--bots", min=2, help="q9bots, split over the two IRC servers"),
         target: str = typer.Option("process", "--target", help="the target's kind: process | qemu | physical"),
         cluster: str | None = typer.Option(None, "--cluster", help="run it on these hosts (e.g. "
                                            "examples/catch/lab3.yaml: 3 emulated hosts)"),
         out_dir: str = typer.Option("catch-report", "-o", "--output", help="where the report goes"),
         keep: bool = typer.Option(False, "--keep", help="leave the experiment up to explore it")) -> None:
    """DETER's CATCH demo: IRC bots in processes inside qemu VMs flood a target; a report and checks."""
    from nestbed.cli.demo import run_demo
    raise typer.Exit(run_demo(out, err, bots=bots, target=target, cluster=cluster, out_dir=out_dir, keep=keep))


def _register_control_commands() -> None:
    """Experiment-control verbs live in modules of their own, each with `register(app, out, err)`."""
    from nestbed.cli import (
        cmd_agent,
        cmd_cluster,
        cmd_collect,
        cmd_counters,
        cmd_link,
        cmd_linktest,
        cmd_plot,
        cmd_records,
        cmd_run,
        cmd_web,
    )
    for module in (cmd_run, cmd_counters, cmd_records, cmd_link, cmd_linktest, cmd_plot, cmd_collect, cmd_cluster,
                   cmd_agent, cmd_web):
        module.register(app, out, err)


_register_control_commands()


def main() -> None:
    try:
        app()
    except NestbedError as error:
        _say_error(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("nestbed: interrupted")
        sys.exit(130)
    except Exception as error:
        line = environment_error(error)
        if line is None or os.environ.get("NESTBED_DEBUG"):
            raise                   # a bug: its traceback stays visible
        _say_error(line)
        sys.exit(1)


def command() -> None:
    """The `nestbed` executable: main(), then out without tearing the interpreter down. Freeing a thousand-node
    plan object by object and unloading ~300 modules takes ~30 ms that `nestbed up` would add to its wall time;
    only when the main thread is the last one (a thread left running keeps the process, as in a normal exit)."""
    import threading
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
    if threading.active_count() > 1:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass                   # a reader that went away: nothing left to say
    os._exit(code)


def environment_error(error: BaseException) -> str | None:
    """One line for what the machine refused (a file, a directory, a store) that no verb turned into a
    NestbedError of its own; None for anything else, which is a bug to show in full."""
    import sqlite3
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename is not None else ""
        also = f" -> {error.filename2}" if error.filename2 is not None else ""
        return (f"cannot use{where}{also}: {error.strerror or error}; check that it exists and that you may "
                f"read and write it (set NESTBED_DEBUG=1 for the traceback)")
    if isinstance(error, sqlite3.Error):
        return (f"the experiment's store cannot be used: {error} (sqlite3); set NESTBED_DEBUG=1 for the "
                f"traceback")
    return None


if __name__ == "__main__":
    main()
