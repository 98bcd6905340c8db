"""`nestbed run NAME SCENARIO.aal`: run a MAGI AAL scenario on an experiment, with live progress and a summary.
SCENARIO may be an NS file (.ns, .tcl): its events, as `nestbed convert` writes them (model/nsfile/aal.py).

Exit 0 when the scenario reached an exit target; 1 when it failed, ended or got stuck without reaching exit, or
timed out (--timeout); 130 when interrupted.
"""
from __future__ import annotations

from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

STATE_STYLE = {"pending": "dim", "running": "cyan", "waiting": "yellow", "done": "green"}


def _table(status: Any) -> Group:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("stream", "state", "item", "doing / waiting on"):
        table.add_column(column)
    for stream in status.streams.values():
        item = f"{stream.item}/{stream.total}" if stream.item else f"–/{stream.total}"
        table.add_row(stream.name, Text(stream.state, style=STATE_STYLE.get(stream.state, "")), item,
                      Text(stream.doing, overflow="ellipsis", no_wrap=True))
    counts = Text(f"events {status.events} (node calls {status.calls}) · triggers fired {status.fired} · "
                  f"waits satisfied {status.satisfied}", style="dim")
    return Group(table, counts, *(Text(line, style="dim", overflow="ellipsis", no_wrap=True)
                                  for line in list(status.log)[-5:]))


def _scenario_of(path: str) -> Any:
    """An AAL file, or an NS file's events (the scenario `nestbed convert` writes): loaded and checked."""
    from nestbed.model.loader import NS_SUFFIXES
    from nestbed.scenario import ScenarioError, load_scenario, load_scenario_text
    if not path.endswith(NS_SUFFIXES):
        return load_scenario(path)
    from nestbed.model.nsfile.convert import converted
    _, text = converted(path)
    if text is None:
        raise ScenarioError(f"{path} has no events nestbed plays ($ns at with Programs, links or UDP CBR traffic)",
                            hint=f"see what was ignored: nestbed convert {path}")
    return load_scenario_text(text, path)


def run_scenario(name: str, scenario_file: str, timeout: float | None, keep: bool, check: bool,
                 out: Console, err: Console) -> int:
    from nestbed.agent.store import Store
    from nestbed.errors import ExperimentError
    from nestbed.realize.state import require
    from nestbed.scenario import Engine
    scenario = _scenario_of(scenario_file)                 # a bad file fails here, before touching anything
    for warning in scenario.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    state = require(name)
    if state.status().get("state") != "up":
        raise ExperimentError(f"experiment {name!r} is not up (state: {state.status().get('state')}); "
                              f"see 'nestbed status {name}'")
    plan = state.load_plan()
    if plan is not None:
        scenario.resolve_nodes([n.name for n in plan.nodes])
    if check:
        nodes = len({n for g in scenario.groups.values() for n in g})
        out.print(f"{scenario_file}: ok — {len(scenario.streams)} streams, {len(scenario.agents)} agents on "
                  f"{nodes} nodes of {name}")
        return 0
    from nestbed.cluster.deploy import control_for
    runner = control_for(name)                  # this host's agent, or every host's (a cluster)
    store = Store(state.directory / "control.sqlite")
    subscribe = getattr(runner, "subscribe", None)
    live: Live | None = None

    def progress(status: Any, line: str | None) -> None:
        if live is None and line:
            out.print(line, highlight=False, soft_wrap=True)

    engine = Engine(scenario, runner, store=store, events=subscribe() if subscribe else None, progress=progress,
                    keep_running=keep)
    try:
        if out.is_terminal:
            with Live(get_renderable=lambda: _table(engine.status), console=out, refresh_per_second=8,
                      transient=False) as live_view:
                live = live_view
                outcome = engine.run(timeout)
            live = None
        else:
            outcome = engine.run(timeout)
    finally:
        store.close()
        close = getattr(runner, "close", None)
        if callable(close):
            close()
    summary = (f"{outcome.events} events ({outcome.calls} node calls), {outcome.fired} triggers fired, "
               f"{outcome.satisfied} waits satisfied in {outcome.seconds:.2f} s")
    if outcome.reached_exit:
        out.print(f"[green]scenario reached exit[/]: {outcome.message}", highlight=False, soft_wrap=True)
        out.print(f"  {summary}", highlight=False)
        return 0
    err.print(f"[bold red]nestbed:[/] scenario did not reach exit ({outcome.reason}): {escape(outcome.message)}",
              highlight=False, soft_wrap=True)
    err.print(f"  {summary}", highlight=False)
    return 130 if outcome.reason == "interrupted" else 1


def register(app: typer.Typer, out: Console, err: Console) -> None:
    @app.command()
    def run(name: str = typer.Argument(..., help="experiment"),
            scenario: str = typer.Argument(..., metavar="SCENARIO.aal",
                                           help="MAGI AAL scenario file, or an NS file (its events)"),
            timeout: float | None = typer.Option(None, "--timeout", metavar="SECONDS",
                                                 help="give up (exit 1) when no exit is reached by then"),
            keep: bool = typer.Option(False, "--keep", help="leave the programs agents started running"),
            check: bool = typer.Option(False, "--check", help="only check the scenario against the experiment")
            ) -> None:
        """Run a MAGI AAL scenario: live progress of its streams, a summary, exit 0 when it reached exit."""
        raise typer.Exit(run_scenario(name, scenario, timeout, keep, check, out, err))
