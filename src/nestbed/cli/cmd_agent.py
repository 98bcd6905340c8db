"""`nestbed agent --etcd URL[,URL...] --host NAME`: this host's agent of the etcd engine, until SIGTERM.

A sub-app, so that `nestbed agent install` / `uninstall` (cli/agent_deploy.py: the agent as a systemd service on
a cluster's real hosts) sit beside it. The work is cluster/etcd/agent.py's; this binds the flags."""
from __future__ import annotations

from typing import Any

import typer


def register(app: typer.Typer, out: Any, err: Any) -> None:
    agent_app = typer.Typer(help="The host agent of the etcd engine (one per host, every experiment of it).")
    app.add_typer(agent_app, name="agent")

    @agent_app.callback(invoke_without_command=True)
    def agent(ctx: typer.Context,
              etcd: str | None = typer.Option(None, "--etcd", metavar="URL[,URL...]",
                                              help="etcd endpoints: http://HOST:PORT, or unix:///PATH"),
              host: str | None = typer.Option(None, "--host", metavar="NAME",
                                              help="this host's name in the cluster file")) -> None:
        """Serve this host: reconcile every experiment placed on it toward its plan in etcd, report status."""
        if ctx.invoked_subcommand is not None:
            return
        from nestbed.errors import ExperimentError
        if not etcd or not host:
            raise ExperimentError("nestbed agent needs --etcd URL[,URL...] and --host NAME")
        from nestbed.cluster.etcd import agent as etcd_agent
        from nestbed.cluster.etcd.client import parse_urls
        from nestbed.cluster.etcd.keys import host as host_key
        try:
            host_key(host)
        except ValueError:
            raise ExperimentError(f"--host {host!r} is not a host name") from None
        raise typer.Exit(etcd_agent.main(parse_urls(etcd), host))

    from nestbed.cli import agent_deploy
    agent_deploy.register(agent_app, out, err)
