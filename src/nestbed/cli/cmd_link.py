"""`nestbed link NAME SEGMENT down|up` and `nestbed link NAME SEGMENT set bandwidth=5Mbit loss=1% …`."""
from __future__ import annotations

from typing import Any

import typer


def load_up(name: str) -> tuple[Any, Any]:
    """The experiment's state and plan, which must be up (cmd_collect and cmd_linktest use it too)."""
    from nestbed.cluster.linkchange import load_up as up
    return up(name)


def register(app: typer.Typer, out: Any, err: Any) -> None:
    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def link(ctx: typer.Context, name: str = typer.Argument(..., help="experiment"),
             segment: str = typer.Argument(..., help="link or LAN (e.g. link0, lan0)"),
             action: str = typer.Argument(..., help="down | up | set"),
             values: list[str] = typer.Argument(None, help="with set: key=value … (bandwidth, delay, jitter, "
                                                           "loss, queue; none removes a key)")) -> None:
        """Change a link or LAN at run time: down/up on every member, or set its shaping (e.g. set
        bandwidth=5Mbit loss=1%); takes effect at once."""
        from nestbed.errors import ExperimentError
        from nestbed.realize import links, linkvalues
        words = list(values or []) + list(ctx.args)
        if action not in links.ACTIONS:
            raise ExperimentError(f"unknown action {action!r}; use: nestbed link {name} {segment} down|up|set "
                                  f"key=value …")
        shaping = linkvalues.parse_assignments(words) if action == "set" else {}
        linkvalues.check_values(shaping)
        if action != "set" and words:
            raise ExperimentError(f"{action} takes no values (got {' '.join(words)}); to change shaping use set")
        from nestbed.cluster.linkchange import change_link
        done = change_link(name, segment, action, shaping)
        from nestbed.cli.views import shaping_text
        from nestbed.plan.hostplan import ShapingPlan
        what = (f"shaping {shaping_text(ShapingPlan(**done['shaping'])) if done['shaping'] else 'none'}"
                if action == "set" else done["state"])
        where = f" on {', '.join(done['hosts'])}" if done["cluster"] else ""
        out.print(f"{name} {done['segment']}: {what} on {len(done['members'])} members{where} "
                  f"({done['seconds'] * 1000:.1f} ms)", highlight=False)
