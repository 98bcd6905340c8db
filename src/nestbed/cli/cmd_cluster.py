"""`nestbed cluster check --cluster C [--json]`: per host reachable, nestbed version, kernel features, the underlay's
path MTU to every peer and the clock offset; then the findings and a verdict (exit 1 when unusable).
The work is cluster/check.py's; this binds the flags and prints."""
from __future__ import annotations

import json
from typing import Any

import typer

MARKS = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}
SHORT = {"nftables": "nft"}
WIDE = 160
LEVEL_STYLE = {"unusable": "bold red", "warning": "yellow", "note": "dim"}


def register(app: typer.Typer, out: Any, err: Any) -> None:
    cluster_app = typer.Typer(no_args_is_help=True, help="The hosts of a cluster file, as experiments will use them.")
    app.add_typer(cluster_app, name="cluster")

    @cluster_app.command()
    def check(cluster: str = typer.Option(..., "--cluster", metavar="CLUSTER.yaml", help="cluster file"),
              as_json: bool = typer.Option(False, "--json", help="the report as JSON")) -> None:
        """Can these hosts run experiments? Per host: reachable, nestbed version, kernel features (netem, htb,
        vxlan, nftables, kvm), the underlay's path MTU to every peer, the clock offset; then a verdict.

        Emulated hosts (emulate: N) are brought up for the check and taken down afterwards."""
        from nestbed.cluster import check as checking
        from nestbed.model.cluster import load_cluster
        spec = load_cluster(cluster)
        shown = err.is_terminal and not as_json

        def progress(text: str) -> None:
            if shown:
                err.print(f"[dim]{text} …[/]", highlight=False)
        report = checking.run(spec, progress)
        if as_json:
            print(json.dumps(report.to_json(), indent=1))
        else:
            print_report(out, report)
        raise typer.Exit(report.exit_code)


def print_report(out: Any, report: Any) -> None:
    from rich import box
    from rich.table import Table
    emulated = sum(1 for h in report.hosts if h.emulated)
    title = f"cluster check (controller: nestbed {report.version}" + (
        f"; {emulated} emulated hosts, up for the check only)" if emulated else ")")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("host", "reached at", "nestbed", "python", "kernel", "features", "clock", "path MTU to peers"):
        table.add_column(column, overflow="fold", no_wrap=column in ("host", "nestbed", "python", "features", "clock"))
    for host in report.hosts:
        if not host.reached:
            table.add_row(host.name, host.where, "[red]no[/]", "", "", "", "", "")
            continue
        answer = host.answer
        features = answer.get("features") or {}
        marks = " ".join(f"{SHORT.get(name, name)}{MARKS[(features.get(name) or {}).get('ok')]}"
                         for name in ("netem", "htb", "vxlan", "nftables", "kvm"))
        version = answer.get("version")
        version_text = version if version == report.version else f"[red]{version}[/]"
        clock = host.clock
        offset = clock.offset if clock is not None and abs(clock.offset) >= 0.0005 else 0.0    # no "-0.000"
        clock_text = f"{offset:+.3f}±{clock.uncertainty:.3f} s" if clock is not None else "?"
        table.add_row(host.name, host.where, version_text, str(answer.get("python")), str(answer.get("kernel")),
                      marks, clock_text, peers_text(report.peers_of(host.name)))
    if out.is_terminal:
        out.print(table)
    else:       # a pipe or a file: rich's 80 columns would fold the table to pieces
        from rich.console import Console
        Console(file=out.file, width=WIDE, no_color=True, highlight=False).print(table)
    for finding in report.findings:
        style = LEVEL_STYLE[finding.level]
        out.print(f"[{style}]{finding.level}:[/] {finding.text}", highlight=False, soft_wrap=True)
    out.print(verdict_line(report), highlight=False, soft_wrap=True)


def peers_text(peers: list[tuple[str, int | None]]) -> str:
    """`1500 to all 2` when every peer's is the same, else each peer's."""
    if not peers:
        return "-"
    values = {mtu for _, mtu in peers}
    if len(values) == 1 and None not in values and len(peers) > 1:
        return f"{values.pop()} to all {len(peers)}"
    return ", ".join(f"{peer} {mtu if mtu is not None else '[red]none[/]'}" for peer, mtu in peers)


def verdict_line(report: Any) -> str:
    counts = {level: sum(1 for f in report.findings if f.level == level) for level in ("unusable", "warning")}
    hosts = len(report.hosts)
    if report.verdict == "ok":
        return f"[bold green]verdict: ok[/] — {hosts} host{'s' * (hosts != 1)} ready for experiments"
    if report.verdict == "warnings":
        return (f"[bold yellow]verdict: warnings[/] — usable, with {counts['warning']} "
                f"warning{'s' * (counts['warning'] != 1)} above")
    return (f"[bold red]verdict: unusable[/] — {counts['unusable']} problem{'s' * (counts['unusable'] != 1)} "
            f"above")
