"""`nestbed records NAME [--agent A] [--json]`: what agents recorded (transfers, counters, command results).

Each record names its agent as the scenario does (`client_agent`) and its kind, the module it runs
(`http_client`); --agent matches either."""
from __future__ import annotations

import datetime
import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


def load_records(name: str, agent: str | None) -> list[dict[str, Any]]:
    from nestbed.cli.storefile import reading
    from nestbed.realize.state import require
    state = require(name)
    path = state.directory / "control.sqlite"
    found: list[dict[str, Any]] = []
    if path.exists():
        with reading(path) as store:
            found = store.records(agent)
    if state.status().get("cluster"):           # the programs' records are in each host's store
        from nestbed.cluster import deploy
        control = deploy.control(name)
        try:
            found = sorted(found + control.records(agent), key=lambda r: r.get("created") or 0.0)
        finally:
            control.close()
    return found


def print_records(out: Console, records: list[dict[str, Any]], name: str, agent: str | None) -> None:
    if not records:
        out.print(f"no records{f' of agent {agent!r}' if agent else ''} in {name}")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("created", "agent", "kind", "host", "node", "data"):
        table.add_column(column, overflow="fold" if column == "data" else "ellipsis")
    for record in records:
        created = datetime.datetime.fromtimestamp(record["created"]).strftime("%H:%M:%S.%f")[:-3]
        table.add_row(created, record["agent"], record.get("kind") or "", record["host"], record["node"] or "",
                      json.dumps(record["data"], separators=(",", ":")))
    out.print(table)
    out.print(f"{len(records)} records", style="dim")


def register(app: typer.Typer, out: Console, err: Console) -> None:
    @app.command()
    def records(name: str = typer.Argument(..., help="experiment"),
                agent: str | None = typer.Option(None, "--agent",
                                                 help="only this agent's records (its scenario name or its kind)"),
                as_json: bool = typer.Option(False, "--json",
                                             help="a JSON list of {agent, kind, host, created, node, data}")
                ) -> None:
        """What agents recorded (each with agent, kind, host, created, node, data)."""
        found = load_records(name, agent)
        if as_json:
            print(json.dumps(found))
        else:
            print_records(out, found, name, agent)
