"""`nestbed convert exp.ns`: the nestbed topology (YAML) an NS file means, with what was ignored as comments, and
the AAL scenario of its events (nsfile/aal.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nestbed.model import units
from nestbed.model.nsfile import read


def _plain(value: Any, key: str = "") -> Any:
    """Located values as plain YAML; shaping in units people read (100Mbit, 10ms)."""
    if isinstance(value, dict):
        return {k: _plain(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if key == "bandwidth" and isinstance(value, int):
        return units.format_bandwidth(value)
    if key == "delay" and isinstance(value, str):
        return units.format_time(units.parse_time(value))
    return value


def to_yaml(path: str | Path) -> str:
    return converted(path)[0]


def converted(path: str | Path) -> tuple[str, str | None]:
    """The topology's YAML and, when the file has events nestbed plays, their AAL scenario's text."""
    import yaml

    from nestbed.model.nsfile.aal import scenario_text
    imported = read(path)
    raw = _plain(imported.raw)
    raw["nodes"] = {name: (spec or None) for name, spec in raw.get("nodes", {}).items()}
    head = [f"# converted from {path} by nestbed convert"]
    head += [f"# note: {line}" for line in imported.notes]
    head += [f"# ignored: {line}" for line in imported.ignored]
    body = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=110)
    played = [line for line in imported.ignored if _event_line(line)]
    scenario = scenario_text(imported.scenario, str(path), played) if imported.scenario else None
    return "\n".join(head) + "\n" + body, scenario


def _event_line(entry: str) -> bool:
    """An ignored line about events (the scenario's header lists those)."""
    return not entry.split(": ", 1)[1].startswith("tb-")
