"""`nestbed plot NAME [-o DIR] [--since SECONDS] [--store FILE]`: traffic per link/LAN over time as PNGs, attack
vs legitimate, with the scenario's events on the same time axis (drawing: nestbed.cli.traffic_png)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from nestbed.errors import ExperimentError

NOTHING = "no counter samples yet: is the experiment up with its host agent?"


def register(app: typer.Typer, out: Any, err: Any) -> None:
    @app.command()
    def plot(name: str | None = typer.Argument(None, metavar="NAME", help="experiment (optional with --store)"),
             output: Path | None = typer.Option(None, "-o", "--output", metavar="DIR",
                                                   help="where to write the PNGs (default: ./NAME-plots)"),
             since: float | None = typer.Option(None, "--since", metavar="SECONDS", min=0.0,
                                                   help="only the last SECONDS seconds before the newest sample"),
             store: Path | None = typer.Option(None, "--store", metavar="FILE",
                                                  help="plot this copy of an experiment's control.sqlite (its "
                                                       "links/LANs from plan.json beside it, if there)")) -> None:
        """Draw traffic per link/LAN over time (attack vs legitimate) with the scenario's events, as PNGs."""
        written = make_plots(name, output, since, store, out)
        for path in written:
            out.print(f"wrote {path}", highlight=False, soft_wrap=True)


def make_plots(name: str | None, output: Path | None, since: float | None, store: Path | None, out: Any) -> list[Path]:

    if name is None and store is None:
        raise typer.BadParameter("give the experiment's NAME, or --store FILE", param_hint="NAME")
    plan = None
    if store is None:
        from nestbed.cluster import deploy
        from nestbed.realize.state import require
        state = require(str(name))
        plan = state.load_plan()
        if deploy.is_cluster(state):        # each host's agent samples its own nodes: one store of them all
            import tempfile
            with tempfile.TemporaryDirectory(prefix="nestbed-plot.") as scratch:
                merged = deploy.merged_store(str(name), Path(scratch) / "control.sqlite")
                return _plots(name, output, since, merged, plan, out)
        store = state.directory / "control.sqlite"
        if not store.exists():
            raise ExperimentError(NOTHING)
    else:
        if not store.is_file():
            raise ExperimentError(f"no store {store}: give the path of a copied control.sqlite")
        plan = _plan_for(name, store)
    return _plots(name, output, since, store, plan, out)


def _plots(name: str | None, output: Path | None, since: float | None, store: Path, plan: Any, out: Any
           ) -> list[Path]:
    import sqlite3

    from nestbed.cli import traffic_png
    from nestbed.cli.storefile import unreadable
    from nestbed.control import traffic
    try:
        db = traffic.connect(store)
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    except sqlite3.Error as error:
        raise unreadable(store, error) from None
    try:
        per_interface, first = traffic.load_samples(db, since)
        if first is None:
            raise ExperimentError(NOTHING)
        segments = traffic.segments_of(plan) if plan is not None else None
        result = traffic.traffic(per_interface, segments, first)
        if result is None:
            window = f" in the last {since:g} s" if since is not None else ""
            raise ExperimentError(f"not enough counter samples{window} to compute a rate (need two of an interface)")
        rows = traffic.load_events(db, None if since is None else result.end - since)
    except sqlite3.Error as error:
        raise unreadable(store, error) from None
    finally:
        db.close()
    title = name or (plan.experiment if plan is not None else store.stem)
    directory = output if output is not None else Path(f"{title}-plots")
    origin = min([first] + [row[0] for row in rows])
    events = traffic_png.events_from_rows(rows, origin)
    if segments is None:
        out.print("no plan.json for this store: traffic drawn per interface", highlight=False)
    try:
        written = traffic_png.write_plots(result, events, origin, directory, title, per_interface=segments is None)
    except OSError as error:
        raise ExperimentError(f"cannot write plots into {directory}: {error.strerror or error}; "
                              f"give a directory you can write with -o") from None
    if written.segments_drawn < written.segments_total:
        what = "interfaces" if segments is None else "links/LANs"
        out.print(f"{written.segments_total} {what}: drew the {written.segments_drawn} busiest "
                  f"(they carried {written.share_drawn:.0%} of the traffic) in {directory / 'segments.png'}",
                  highlight=False, soft_wrap=True)
    return written.paths


def _plan_for(name: str | None, store: Path) -> Any:
    """The plan of a copied store: the experiment's own if it still exists here, else plan.json beside the store."""
    from nestbed.plan.hostplan import HostPlan
    from nestbed.realize.state import experiment
    if name is not None:
        plan = experiment(name).load_plan()
        if plan is not None:
            return plan
    beside = store.parent / "plan.json"
    try:
        return HostPlan.from_json(beside.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
