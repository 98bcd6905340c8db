"""What a runtime link change may say: `key=value` assignments of shaping, each value checked with the model's
unit parsers, and the segment's shaping they merge into (realize/links.py applies it).

The guest agent imports this module (through realize/linkmember.py) at request time: keep its imports light.
"""
from __future__ import annotations

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import ShapingPlan

KEYS = ("bandwidth", "delay", "jitter", "loss", "queue")
CLEAR = ("none", "off", "")          # a value that removes a key from the shaping


def parse_assignments(words: list[str]) -> dict[str, str]:
    """`bandwidth=5Mbit loss=1%` → {"bandwidth": "5Mbit", "loss": "1%"}; bad keys or words: one line."""
    if not words:
        raise ExperimentError(f"set needs at least one key=value, e.g. bandwidth=5Mbit loss=1% "
                              f"(keys: {', '.join(KEYS)})")
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ExperimentError(f"{word!r} is not key=value; write e.g. bandwidth=5Mbit (keys: {', '.join(KEYS)})")
        check_key(key)
        if key in values:
            raise ExperimentError(f"{key} is given twice")
        values[key] = value.strip()
    return values


def check_values(values: dict[str, Any]) -> None:
    """Each value on its own, with the model's unit parsers (combinations are checked against the segment's
    current shaping by `change`); one line for the first bad one."""
    from nestbed.model import units
    parsers: dict[str, Any] = {"bandwidth": units.parse_bandwidth, "delay": units.parse_time,
               "jitter": lambda v: units.parse_time(v, "jitter"), "loss": units.parse_loss, "queue": units.parse_queue}
    for key, value in values.items():
        check_key(key)
        if value is None or (isinstance(value, str) and value.strip().lower() in CLEAR):
            continue
        try:
            parsers[key](value)
        except ValueError as error:
            raise ExperimentError(str(error)) from None


def check_key(key: str) -> None:
    if key not in KEYS:
        import difflib
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ExperimentError(f"unknown shaping key {key!r}{hint} (keys: {', '.join(KEYS)})")


def merged_shaping(current: ShapingPlan | None, changes: dict[str, Any], where: str = "set") -> ShapingPlan | None:
    """The segment's shaping with `changes` applied (a value of none/off/"" removes a key), checked by the
    model's parsers (units, jitter needs delay …). None when nothing is left."""
    from nestbed.errors import TopologyError
    from nestbed.model.topology import Shaping
    raw: dict[str, object] = {}
    if current is not None:
        for key in KEYS:
            value = getattr(current, key)
            if value:
                raw[key] = f"{value!r}s" if key in ("delay", "jitter") else value
    for key, value in changes.items():
        check_key(key)
        if value is None or (isinstance(value, str) and value.strip().lower() in CLEAR):
            raw.pop(key, None)
        else:
            raw[key] = value
    try:
        parsed = Shaping.parse(where, **raw)
    except TopologyError as error:
        raise ExperimentError(str(error)) from None
    plan = ShapingPlan(bandwidth=parsed.bandwidth, delay=parsed.delay or None, jitter=parsed.jitter or None,
                       loss=parsed.loss or None, queue=parsed.queue)
    return None if plan == ShapingPlan() else plan


def shaping_from(data: dict[str, Any] | None) -> ShapingPlan | None:
    """A ShapingPlan from its JSON form (links.json, the guest agent's "link" op); None for none."""
    return ShapingPlan(**{k: data.get(k) for k in KEYS}) if data else None
