"""`nestbed agent install --cluster C --etcd URL[,URL...]` and `nestbed agent uninstall --cluster C`: the etcd
agent as a systemd service on every real host of the cluster file, one line per host (exit 1 when any host
refused or failed). The work is cluster/agentunit.py's; this binds the flags and prints."""
from __future__ import annotations

from typing import Any

import typer

ROOT_HELP = ("write the unit (and nestbed's bundle) under this directory on each host instead of its own / — an "
             "image's root, as systemctl --root: enabled, nothing started; {host} in it: each host's name")


def register(agent_app: typer.Typer, out: Any, err: Any) -> None:
    @agent_app.command()
    def install(cluster: str = typer.Option(..., "--cluster", metavar="CLUSTER.yaml", help="cluster file"),
                etcd: str = typer.Option(..., "--etcd", metavar="URL[,URL...]", help="etcd endpoints the agents use"),
                root: str | None = typer.Option(None, "--root", metavar="DIR", help=ROOT_HELP)) -> None:
        """Install nestbed-agent.service on every real host over SSH (nestbed brought there, as up brings it):
        enabled and started, Restart=always; a unit of that name not written by nestbed is left alone."""
        from nestbed.cluster import agentunit
        from nestbed.model.cluster import load_cluster
        urls = agentunit.parse_etcd(etcd)
        _print(out, agentunit.install(load_cluster(cluster), urls, root))

    @agent_app.command()
    def uninstall(cluster: str = typer.Option(..., "--cluster", metavar="CLUSTER.yaml", help="cluster file"),
                  root: str | None = typer.Option(None, "--root", metavar="DIR", help=ROOT_HELP)) -> None:
        """Stop, disable and remove nestbed-agent.service on every real host: only a unit nestbed wrote."""
        from nestbed.cluster import agentunit
        from nestbed.model.cluster import load_cluster
        _print(out, agentunit.uninstall(load_cluster(cluster), root))


def _print(out: Any, results: list[Any]) -> None:
    for result in results:
        out.print(result.line, highlight=False, soft_wrap=True, markup=False)
    if not all(result.ok for result in results):
        raise typer.Exit(1)
