"""What the segments are now: the plan's state and shaping overridden by runtime link changes, kept in
<state>/links.json (journaled as a file, so teardown removes it), which `status` and `linktest` read; and the
kernel features a change probed, remembered there (the kernel does not change under a running experiment).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace

TYPE_CHECKING = False     # not typing's: keep the realize modules a guest may reach light
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import HostPlan, SegmentPlan, ShapingPlan
from nestbed.realize.linkvalues import shaping_from

LINKS_FILE = "links.json"


def links_path(state: Any) -> Any:
    return state.directory / LINKS_FILE


def load(state: Any) -> dict[str, dict[str, Any]]:
    """{segment: {"state": "up"|"down", "shaping": {...}|None, "changed": unix time}} of changed segments."""
    try:
        data = json.loads(links_path(state).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data.get("segments", {}) if isinstance(data, dict) else {}


def current(state: Any, plan: HostPlan) -> dict[str, tuple[str, ShapingPlan | None]]:
    """Every segment's (state, shaping) as it is now: the plan's, overridden by runtime changes."""
    changed = load(state)
    result = {}
    for seg in plan.segments:
        entry = changed.get(seg.name)
        if entry is None:
            result[seg.name] = ("up", seg.shaping)
        else:
            result[seg.name] = (entry.get("state", "up"), shaping_from(entry["shaping"]) if "shaping" in entry
                                else seg.shaping)
    return result


def effective_segments(state: Any, plan: HostPlan) -> list[tuple[SegmentPlan, str]]:
    """The plan's segments with their current shaping, each with its state."""
    now = current(state, plan)
    return [(replace(seg, shaping=now[seg.name][1]), now[seg.name][0]) for seg in plan.segments]


def save(state: Any, segment: str, link_state: str, shaping_plan: ShapingPlan | None) -> None:
    """Record what the segment is now, after a change."""
    try:
        data = json.loads(links_path(state).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    data.setdefault("segments", {})[segment] = {"state": link_state,
                                                "shaping": shaping_plan.__dict__ if shaping_plan else None,
                                                "changed": time.time()}
    write(state, data)


def write(state: Any, data: dict[str, Any]) -> None:
    """links.json, journaled (as a file, with its temporary) before it is first written."""
    path = links_path(state)
    journal = state.journal
    if not path.exists() and not any(e.get("t") == "file" and e.get("path") == str(path)
                                     for e in journal.entries()):
        journal.record([{"t": "file", "path": str(path)}, {"t": "file", "path": str(path) + ".tmp"}])
    tmp = path.with_name(LINKS_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def probe(state: Any, feature: str) -> bool:
    """A kernel feature (preflight's probes fork a child in a scratch namespace: ~50 ms), remembered in
    links.json: the kernel does not change under a running experiment."""
    from nestbed.realize import preflight
    path = links_path(state)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    known = data.get("features", {})
    if feature in known:
        return bool(known[feature])
    value = preflight.has_iptables_statistic() if feature == "iptables_statistic" else preflight.has_qdisc(feature)
    write(state, {**data, "features": {**known, feature: value}})
    return value
