"""An NS file's events (nsfile/events.py) as a MAGI AAL scenario (the mapping, and its text) for `nestbed run`.

One stream per moment of the file: it waits until that time after the scenario starts, then calls its events in
file order, then fires `done_<stream>`. A lane (events.py: a sequence, or a top-level Program `run`, which
waits for its end) is a stream of its own at that moment (`at_1s_seq0`), so it never holds up the moment's other
events; a sequence's lines play one after the other in it. A last stream waits for every
`done_…` and ends the scenario (exit). Each stream's time counts from the start, so a slow event never delays
another moment's. The marker is setConfiguration with no arguments, which every built-in agent has (true).
"""
from __future__ import annotations

from typing import Any

from nestbed.model.nsfile.events import Events


def _stream_name(at: float, lane: str = "") -> str:
    return "at_" + f"{at:.6f}".rstrip("0").rstrip(".").replace(".", "_") + "s" + (f"_{lane}" if lane else "")


def scenario_mapping(events: Events) -> dict[str, Any] | None:
    """The AAL mapping (groups, agents, streamstarts, eventstreams); None when there is nothing to play."""
    if not events.actions:
        return None
    groups = {name: [spec.node] for name, spec in events.agents.items()}
    agents = {name: {"group": name, "path": spec.path, **({"execargs": spec.execargs} if spec.execargs else {})}
              for name, spec in events.agents.items()}
    streams: dict[str, list[dict[str, Any]]] = {}
    for action in events.actions:
        items = streams.setdefault(_stream_name(action.time, action.lane), [
            {"type": "trigger", "triggers": [{"timeout": round(action.time * 1000, 3)}]}])
        item: dict[str, Any] = {"type": "event", "agent": action.agent, "method": action.method}
        if action.args:
            item["args"] = action.args
        item["description"] = f"line {action.line}: {action.text}"
        items.append(item)
    for name, items in streams.items():
        items.append({"type": "event", "agent": items[-1]["agent"], "method": "setConfiguration",
                      "trigger": f"done_{name}"})
    done = [{"event": f"done_{name}"} for name in streams]
    streams["ns_end"] = [{"type": "trigger", "triggers": [{"type": "AND", "triggers": done, "target": "exit"}]}]
    return {"groups": groups, "agents": agents, "streamstarts": list(streams), "eventstreams": streams}


def scenario_text(mapping: dict[str, Any], source: str, ignored: list[str]) -> str:
    import yaml
    head = [f"# the events of {source}, converted by nestbed (play: nestbed run NAME {source})",
            "# programs still running at the end are stopped (nestbed run --keep leaves them)"]
    head += [f"# ignored: {line}" for line in ignored]
    return "\n".join(head) + "\n" + yaml.safe_dump(mapping, sort_keys=False, default_flow_style=None, width=110)
