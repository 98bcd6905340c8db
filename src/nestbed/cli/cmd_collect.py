"""`nestbed collect NAME PATH… [--node N]… [-o DIR]`: files from nodes into DIR/NODE/PATH."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer, out: Any, err: Any) -> None:
    @app.command()
    def collect(name: str = typer.Argument(..., help="experiment"),
                paths: list[str] = typer.Argument(..., help="files or directories, as the nodes see them"),
                node: list[str] = typer.Option(None, "--node", "-n", help="only this node (repeat for more)"),
                output: str | None = typer.Option(None, "--output", "-o", help="where to put them "
                                                  "(default ./NAME-files); each node gets a directory")) -> None:
        """Copy files from nodes (process nodes and VMs alike) to DIR/NODE/PATH on this machine."""
        from rich.table import Table

        from nestbed.cli.cmd_link import load_up
        from nestbed.cluster.deploy import control_for
        from nestbed.control import collect as collecting
        from nestbed.errors import ExperimentError
        collecting.check_paths(paths)                       # before anything is made
        _, plan = load_up(name)
        known = [n.name for n in plan.nodes]
        wanted = list(node or known)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ExperimentError(f"experiment {name} has no node {unknown[0]!r}; see 'nestbed status {name}'")
        directory = Path(output or f"{name}-files")
        client = control_for(name)
        try:
            results = collecting.collect(lambda n, argv, o, e: client.exec(n, argv, o, e), wanted, paths, directory)
        except OSError as error:
            raise ExperimentError(f"cannot write into {directory}: {error.strerror or error}; "
                                  f"give a directory you can write with -o") from None
        finally:
            client.close()
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("node", "files", "bytes", "note"):
            table.add_column(column)
        for result in results:
            notes = [f"missing: {', '.join(result.missing)}"] if result.missing else []
            notes += [f"skipped (unsafe to unpack): {', '.join(result.skipped)}"] if result.skipped else []
            note = result.error or "; ".join(notes)
            table.add_row(result.node, str(result.files), str(result.bytes), note)
        out.print(table)
        files = sum(r.files for r in results)
        if files:
            out.print(f"{files} files from {sum(1 for r in results if r.files)} of {len(results)} nodes in "
                      f"{directory}/NODE/…", highlight=False)
        else:
            out.print("nothing collected: no node has those paths (as it sees them)", highlight=False)
        if any(r.error for r in results) or not files:
            raise typer.Exit(1)
