"""`nestbed link NAME SEGMENT down|up` and `nestbed link NAME SEGMENT set bandwidth=5Mbit loss=1% …`."""
from __future__ import annotations

from typing import Any

import typer


def load_up(name: str) -> tuple[Any, Any]:
    """The experiment's state and plan, which must be up."""
    from nestbed.errors import ExperimentError
    from nestbed.realize.state import require
    state = require(name)
    plan = state.load_plan()
    if plan is None or state.status().get("state") != "up":
        raise ExperimentError(f"experiment {name!r} is not up (state: {state.status().get('state')}); "
                              f"see 'nestbed status {name}'")
    return state, plan


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
        state, plan = load_up(name)
        if state.status().get("cluster"):
            _on_cluster(out, state, plan, segment, action, shaping)
            return
        done = links.change(state, plan, segment, action, **shaping)
        from nestbed.cli.views import shaping_text
        from nestbed.plan.hostplan import ShapingPlan
        what = (f"shaping {shaping_text(ShapingPlan(**done['shaping'])) if done['shaping'] else 'none'}"
                if action == "set" else done["state"])
        out.print(f"{name} {done['segment']}: {what} on {len(done['members'])} members "
                  f"({done['seconds'] * 1000:.1f} ms)", highlight=False)


def _on_cluster(out: Any, state: Any, plan: Any, segment: str, action: str, shaping: dict[str, Any]) -> None:
    """Every host holding a member changes its members at once; the controller keeps the segment's state."""
    import time

    from nestbed.cli.views import shaping_text
    from nestbed.cluster import deploy
    from nestbed.realize import links, linkstate, linkvalues
    seg = links.find_segment(plan, segment)
    link_state, old = linkstate.current(state, plan)[seg.name]
    new = linkvalues.merged_shaping(old, shaping, f"{seg.name} set") if action == "set" else old
    control = deploy.control(state.name)
    started = time.monotonic()
    try:
        control.link(seg.name, action, **shaping)
    finally:
        control.close()
    seconds = time.monotonic() - started
    now = {"down": "down", "up": "up", "set": link_state}[action]
    linkstate.save(state, seg.name, now, new)
    hosts = sorted({node.host for node in plan.nodes if node.name in {m[0] for m in seg.members}})
    what = f"shaping {shaping_text(new) if new else 'none'}" if action == "set" else now
    out.print(f"{state.name} {seg.name}: {what} on {len(seg.members)} members on {', '.join(hosts)} "
              f"({seconds * 1000:.1f} ms)", highlight=False)
