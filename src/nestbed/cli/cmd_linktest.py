"""`nestbed linktest NAME`: check every link and LAN (reachability, routes, bandwidth, delay, loss), on one host
or across the hosts of a cluster."""
from __future__ import annotations

import json
from typing import Any

import typer


def register(app: typer.Typer, out: Any, err: Any) -> None:
    @app.command()
    def linktest(name: str = typer.Argument(..., help="experiment"),
                 as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
                 no_bandwidth: bool = typer.Option(False, "--no-bandwidth",
                                                   help="skip the TCP transfers (a few seconds each)")) -> None:
        """Check every link and LAN: reachability both ways, routes end to end, bandwidth/delay/loss within
        tolerance; says what it cannot check. Exit 1 on any failure."""
        from rich.table import Table

        from nestbed.cli.cmd_link import load_up
        from nestbed.cluster import deploy
        from nestbed.control import linktest as lt
        state, plan = load_up(name)
        progress = None if as_json or not err.is_terminal else (lambda text: err.print(f"[dim]{text}…[/]"))
        control = deploy.control_for(name)       # this host's agent, or every host's over SSH (a cluster)
        try:
            report = lt.run(state, plan, control, bandwidth=not no_bandwidth, progress=progress)
        finally:
            control.close()
        if as_json:
            print(json.dumps(report.to_json(), indent=2))
        else:
            table = Table(title=f"linktest {name}", title_justify="left")
            for column in ("check", "segment", "between", "result", "detail"):
                table.add_column(column)
            for check in report.checks:
                table.add_row(check.kind, check.segment or "—", check.between,
                              "[green]ok[/]" if check.ok else "[bold red]FAIL[/]", check.detail)
            out.print(table)
            for note in report.notes:
                out.print(f"note: {note}", highlight=False, soft_wrap=True)
            failed = sum(1 for c in report.checks if not c.ok)
            verdict = "[green]all checks passed[/]" if not failed else f"[bold red]{failed} checks FAILED[/]"
            out.print(f"{verdict} ({len(report.checks)} checks in {report.seconds:.1f} s)")
        if not report.ok:
            raise typer.Exit(1)
