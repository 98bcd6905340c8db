"""The CATCH demo's report directory from an experiment's store: summary.json, summary.txt and the PNGs.

    summary = write_report(state.directory / "control.sqlite", plan, Path("catch-report"), seconds_total=…)
    if not summary.ok: …                       # summary.checks: the issue's "It worked when", each with its figure

The figures and checks: control/catchreport.py (from the store only); the drawings: cli/catch_png.py.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from nestbed.control import catchreport, catchrun
from nestbed.control.catchreport import Summary
from nestbed.control.catchrun import Names
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan


def write_report(store_path: Path | str, plan: HostPlan | Path | str, out_dir: Path | str = "catch-report",
                 names: Names = Names(), seconds_total: float | None = None,
                 exit_code: int | None = None) -> Summary:
    """Read the run from the store, write DIR/summary.json, summary.txt, joined.png, target_traffic.png,
    legit.png and propagation.png, and return the summary. `plan`: the experiment's HostPlan (or its plan.json);
    `seconds_total`: the whole demo's wall time, `exit_code`: `nestbed run`'s, when the caller has them.
    A missing or unreadable store or plan is one ExperimentError."""
    store_path, out_dir = Path(store_path), Path(out_dir)
    if not isinstance(plan, HostPlan):
        plan = _read_plan(Path(plan))
    try:
        store = catchrun.open_store(store_path)
        try:
            run = catchrun.load(store, plan, names)
        finally:
            store.close()
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    except sqlite3.Error as error:
        raise ExperimentError(f"cannot read the store {store_path}: {error}") from None
    summary = catchreport.summarize(run, names, seconds_total, exit_code)
    save_summary(summary, out_dir)
    from nestbed.cli import catch_png
    catch_png.write_pngs(run, summary, out_dir)
    return summary


def save_summary(summary: Summary, out_dir: Path) -> None:
    """DIR/summary.json and summary.txt (again, when the demo adds the checks only `down` can answer)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        (out_dir / "summary.txt").write_text(catchreport.text(summary))
    except OSError as error:
        raise ExperimentError(f"cannot write the report into {out_dir}: {error.strerror}") from None


def _read_plan(path: Path) -> HostPlan:
    try:
        return HostPlan.from_json(path.read_text())
    except OSError as error:
        raise ExperimentError(f"cannot read the plan {path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ExperimentError(f"{path} is not an experiment's plan.json ({type(error).__name__}: {error})") from None
