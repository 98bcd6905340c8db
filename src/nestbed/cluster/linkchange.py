"""A link or LAN change of a running experiment, on one host or a cluster: what `nestbed link` and the web
view's Link control both do (one function, so the page's Down is the same operation as the CLI's).

One host: realize/links.change on this machine. A cluster: every host holding a member changes its members at
once (the ClusterControl), and the controller keeps the segment's state in its links.json. Errors are one line;
`BadLinkRequest` (an ExperimentError) marks the ones the request itself caused (unknown action, segment or shaping
key, a bad value), so a caller can tell them from a refusal by the experiment (not up, per-member shaping …).
"""
from __future__ import annotations

import time
from typing import Any

from nestbed.errors import ExperimentError


class BadLinkRequest(ExperimentError):
    """The request is wrong in itself; asking again the same way cannot work."""


def load_up(name: str) -> tuple[Any, Any]:
    """The experiment's state and plan, which must be up."""
    from nestbed.realize.state import require
    state = require(name)
    plan = state.load_plan()
    if plan is None or state.status().get("state") != "up":
        raise ExperimentError(f"experiment {name!r} is not up (state: {state.status().get('state')}); "
                              f"see 'nestbed status {name}'")
    return state, plan


def check_request(action: str, assignments: dict[str, Any]) -> None:
    """The action and its shaping values, before anything is looked up."""
    from nestbed.realize import links, linkvalues
    if action not in links.ACTIONS:
        raise BadLinkRequest(f"unknown link action {action!r}; use down, up or set")
    if action != "set" and assignments:
        raise BadLinkRequest(f"{action} takes no shaping values (got {', '.join(assignments)}); to change "
                             f"shaping use set")
    if action == "set" and not assignments:
        raise BadLinkRequest(f"set needs at least one of {', '.join(linkvalues.KEYS)}, e.g. bandwidth=5Mbit")
    try:
        linkvalues.check_values(assignments)
    except ExperimentError as error:
        raise BadLinkRequest(str(error)) from None


def change_link(name: str, segment: str, action: str, assignments: dict[str, Any]) -> dict[str, Any]:
    """Down, up or set (shaping `assignments`, e.g. {"bandwidth": "5Mbit"}) on every member of `segment` of the
    running experiment `name`. Returns {segment, kind, action, state, shaping, members, seconds, hosts, cluster}."""
    from nestbed.realize import links
    check_request(action, assignments)
    state, plan = load_up(name)
    try:
        links.find_segment(plan, segment)
    except ExperimentError as error:
        raise BadLinkRequest(str(error)) from None
    if state.status().get("cluster"):
        return _on_cluster(state, plan, segment, action, assignments)
    done = links.change(state, plan, segment, action, **assignments)
    return {**done, "hosts": [plan.host], "cluster": False}


def _on_cluster(state: Any, plan: Any, segment: str, action: str, assignments: dict[str, Any]) -> dict[str, Any]:
    """Every host holding a member changes its members at once; the controller keeps the segment's state."""
    from nestbed.cluster import deploy
    from nestbed.realize import links, linkstate, linkvalues
    seg = links.find_segment(plan, segment)
    link_state, old = linkstate.current(state, plan)[seg.name]
    new = linkvalues.merged_shaping(old, assignments, f"{seg.name} set") if action == "set" else old
    control = deploy.control(state.name)
    started = time.monotonic()
    try:
        control.link(seg.name, action, **assignments)
    finally:
        control.close()
    seconds = time.monotonic() - started
    now = {"down": "down", "up": "up", "set": link_state}[action]
    linkstate.save(state, seg.name, now, new)
    hosts = sorted({node.host for node in plan.nodes if node.name in {m[0] for m in seg.members}})
    return {"segment": seg.name, "kind": seg.kind, "action": action, "state": now,
            "shaping": new.__dict__ if new else None,
            "members": [f"{node}:{iface}" for node, iface, _ in seg.members], "seconds": seconds,
            "hosts": hosts, "cluster": True}
