"""`nestbed agent --etcd URL[,URL...] --host NAME`: this host's agent of the etcd engine (cluster/etcd/agent.py,
which comes with the etcd engine); `nestbed agent install` / `uninstall` (cli/agent_deploy.py) run it as a
systemd service on a cluster's real hosts. A sub-app, so that both sit under one verb."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import typer

ENGINE_AGENT = "nestbed.cluster.etcd.agent"


def register(app: typer.Typer, out: Any, err: Any) -> None:
    agent_app = typer.Typer(help="The host agent of the etcd engine (one per host, every experiment of it), and "
                                 "its installation as a service.")
    app.add_typer(agent_app, name="agent")

    @agent_app.callback(invoke_without_command=True)
    def agent(ctx: typer.Context,
              etcd: str | None = typer.Option(None, "--etcd", metavar="URL[,URL...]",
                                              help="etcd endpoints: http://HOST:PORT"),
              host: str | None = typer.Option(None, "--host", metavar="NAME",
                                              help="this host's name in the cluster file")) -> None:
        """Serve this host: reconcile every experiment placed on it toward its plan in etcd, report status."""
        if ctx.invoked_subcommand is not None:
            return
        from nestbed.errors import ExperimentError
        if not etcd or not host:
            raise ExperimentError("nestbed agent needs --etcd URL[,URL...] and --host NAME")
        if importlib.util.find_spec("nestbed.cluster.etcd") is None or importlib.util.find_spec(ENGINE_AGENT) is None:
            raise ExperimentError("the etcd agent comes with the etcd engine, which this nestbed does not have")
        from nestbed.cluster.agentunit import parse_etcd
        engine_agent = importlib.import_module(ENGINE_AGENT)      # not imported by name: it may not be here yet
        raise typer.Exit(engine_agent.main(list(parse_etcd(etcd)), host))

    from nestbed.cli import agent_deploy
    agent_deploy.register(agent_app, out, err)
