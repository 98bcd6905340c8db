"""Traffic over time as PNGs, as SEER's displays showed it: per link/LAN, attack (DSCP-marked flood) stacked
on legitimate traffic, with the scenario's events as labelled vertical lines and mailbox events as small
markers on the same time axis.

    overview.png            the whole experiment's traffic (every link and LAN member's tx)
    segment-NAME.png        one per link/LAN when there are at most GRID_MAX of them
    segments.png            otherwise: small multiples of the GRID_MAX busiest
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestbed.cli.embed_view import human_rate
from nestbed.control.traffic import Series, Traffic

GRID_MAX = 12             # links/LANs drawn one by one at most; beyond, small multiples of the busiest
GRID_COLUMNS = 3
LEGIT = "#3b75af"
ATTACK = "#d62728"
GAP = "#bbbbbb"
EVENT_COLOURS = {"stream": "#2ca02c", "trigger": "#ff7f0e", "event": "#6a3d9a", "end": "#111111"}
MAILBOX = "#555555"
LABEL_ROWS = 4            # rows of event labels at the top of a plot
LABEL_ROW_HEIGHT = 0.055  # of the axes' height
HEADROOM = 1.32           # the y range over the peak: room for the event labels above the traffic
LABEL_CHARS = 30


@dataclass(frozen=True)
class Event:
    at: float             # seconds since the origin
    kind: str             # stream | trigger | event | mailbox
    label: str


@dataclass
class Written:
    paths: list[Path] = field(default_factory=list)
    segments_total: int = 0
    segments_drawn: int = 0
    share_drawn: float = 1.0          # of all bytes, what the drawn segments carried


def events_from_rows(rows: list[tuple[float, str, str, str | None]], origin: float) -> list[Event]:
    """The events to draw: the scenario engine's stream starts, events sent, triggers fired and its end (data
    {"kind": …}; stream ends, satisfied waits and warnings are left out), and every mailbox event."""
    result = []
    for created, source, name, data in rows:
        try:
            details = json.loads(data) if data else None
        except ValueError:
            details = None
        if not isinstance(details, dict):
            details = {}
        if source == "mailbox":
            result.append(Event(created - origin, "mailbox", _short(name)))
            continue
        kind = SCENARIO_KINDS.get(str(details.get("kind")), None) if "kind" in details else _guess_kind(name)
        if kind is not None:
            result.append(Event(created - origin, kind, _label(kind, name, details)))
    return result


SCENARIO_KINDS = {"stream-start": "stream", "event": "event", "trigger": "trigger", "end": "end"}


def _guess_kind(name: str) -> str:
    """Scenario events without the engine's "kind" (older stores, other writers): by their name."""
    lowered = name.lower()
    if "trigger" in lowered:
        return "trigger"
    if "stream" in lowered:
        return "stream"
    return "event"


def _label(kind: str, name: str, data: dict[str, Any]) -> str:
    if kind == "stream" and isinstance(data.get("stream"), str):
        return _short(f"stream {data['stream']}")
    if kind == "trigger" and "kind" in data:
        return _short(f"trigger {name}")
    if kind == "end":
        return _short(f"end ({data['reason']})" if isinstance(data.get("reason"), str) else "end")
    parts = [str(data[k]) for k in ("stream", "trigger", "agent", "method")
             if isinstance(data.get(k), (str, int, float)) and str(data[k]) not in name]
    return _short(name + (f" ({', '.join(parts[:2])})" if parts and "kind" not in data else ""))


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def write_plots(traffic: Traffic, events: list[Event], origin: float, directory: Path, title: str,
                per_interface: bool = False) -> Written:
    import matplotlib
    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    written = Written(segments_total=len(traffic.segments))
    span = (min([traffic.first - origin] + [e.at for e in events]),
            max([traffic.end - origin] + [e.at for e in events]))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(origin))
    xlabel = f"seconds since {when}"

    overview = traffic.overall
    share = _attack_share(overview)
    _single(directory / "overview.png", overview, events, span, xlabel,
            f"{title}: all traffic — {_bytes(overview.bytes_total)} sent, peak {human_rate(overview.peak)}"
            + (f", {share:.0%} attack" if share else ""), origin, ylabel="rate (tx into every link and LAN)")
    written.paths.append(directory / "overview.png")

    what = "interfaces" if per_interface else "links/LANs"
    if len(traffic.segments) <= GRID_MAX:
        for series in traffic.segments:
            path = directory / f"{'iface' if per_interface else series.kind}-{_safe(series.name)}.png"
            _single(path, series, events, span, xlabel, f"{title}: {_describe(series)}", origin)
            written.paths.append(path)
        written.segments_drawn = len(traffic.segments)
    else:
        drawn = traffic.busiest(GRID_MAX)
        carried = sum(s.bytes_total for s in drawn)
        everything = sum(s.bytes_total for s in traffic.segments)
        written.segments_drawn = len(drawn)
        written.share_drawn = carried / everything if everything else 1.0
        path = directory / "segments.png"
        _grid(path, drawn, events, span, xlabel, origin,
              f"{title}: the {len(drawn)} busiest of {len(traffic.segments)} {what} "
              f"(they carried {written.share_drawn:.0%} of the traffic)")
        written.paths.append(path)
    return written


def _attack_share(series: Series) -> float:
    return series.bytes_attack / series.bytes_total if series.bytes_total else 0.0


def _describe(series: Series) -> str:
    kind = {"link": "link", "lan": "LAN", "interface": "interface"}.get(series.kind, series.kind)
    share = _attack_share(series)
    text = (f"{kind} {series.name} — {_bytes(series.bytes_total)} sent, peak {human_rate(series.peak)}")
    return text + (f", {share:.0%} attack" if share else "")


def _bytes(count: float) -> str:
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f} B"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _single(path: Path, series: Series, events: list[Event], span: tuple[float, float], xlabel: str,
            title: str, origin: float, ylabel: str = "rate (tx into the segment)") -> None:
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(11, 4.8))
    try:
        _draw_series(axes, series, origin)
        _draw_events(axes, events, span, labels=True)
        axes.set_xlim(*_padded(span))
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(title, fontsize=11, loc="left")
        axes.legend(handles=_legend_handles(series, events), loc="upper left", bbox_to_anchor=(1.005, 1.0),
                    fontsize=8, frameon=False)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)


def _grid(path: Path, drawn: list[Series], events: list[Event], span: tuple[float, float], xlabel: str,
          origin: float, title: str) -> None:
    import matplotlib.pyplot as plt
    rows = -(-len(drawn) // GRID_COLUMNS)
    figure, grid = plt.subplots(rows, GRID_COLUMNS, figsize=(5.2 * GRID_COLUMNS, 2.6 * rows + 0.4),
                                sharex=True, squeeze=False)
    try:
        for index, axes in enumerate(grid.flat):
            if index >= len(drawn):
                axes.set_visible(False)
                continue
            series = drawn[index]
            _draw_series(axes, series, origin)
            _draw_events(axes, events, span, labels=index < GRID_COLUMNS, fontsize=6)
            axes.set_xlim(*_padded(span))
            axes.set_title(_describe(series), fontsize=8.5, loc="left")
            axes.tick_params(labelsize=7.5)
            if index >= len(drawn) - GRID_COLUMNS:
                axes.set_xlabel(xlabel, fontsize=8)
        attacked = max(drawn, key=lambda s: s.bytes_attack)
        handles = _legend_handles(attacked, events)
        figure.suptitle(title, fontsize=11, x=0.01, y=0.995, ha="left", va="top")
        figure.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=8, frameon=False,
                      bbox_to_anchor=(0.995, 1.0))
        figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / figure.get_figheight()))
        figure.savefig(path, dpi=90)
    finally:
        plt.close(figure)


def _padded(span: tuple[float, float]) -> tuple[float, float]:
    low, high = span
    pad = max((high - low) * 0.01, 0.5)
    return low - pad, high + pad


def _draw_series(axes: Any, series: Series, origin: float) -> None:
    from matplotlib.ticker import EngFormatter
    edges = [series.start - origin + i * series.step for i in range(len(series.total) + 1)]
    nan = float("nan")
    legit = [nan if v is None else v for v in series.legitimate]
    attack = [nan if v is None else v for v in series.attack]
    top = [nan if v is None else v for v in series.total]
    # fill_between with step="post" takes one value per edge: repeat the last bin's value at the final edge
    legit.append(legit[-1])
    top.append(top[-1])
    attack.append(attack[-1])
    axes.fill_between(edges, 0, legit, step="post", color=LEGIT, alpha=0.85, linewidth=0)
    if series.bytes_attack > 0:
        axes.fill_between(edges, legit, top, step="post", color=ATTACK, alpha=0.85, linewidth=0)
    axes.step(edges, top, where="post", color="#222222", linewidth=0.6)
    gaps = [i for i, v in enumerate(series.total) if v is None]
    for i in gaps:
        axes.axvspan(edges[i], edges[i + 1], color=GAP, alpha=0.35, linewidth=0)
    axes.yaxis.set_major_formatter(EngFormatter(unit="bit/s"))
    axes.set_ylim(bottom=0, top=max(series.peak * HEADROOM, 1.0))
    axes.grid(True, axis="y", alpha=0.3)


def _draw_events(axes: Any, events: list[Event], span: tuple[float, float], labels: bool,
                 fontsize: float = 7) -> None:
    lines = [e for e in events if e.kind != "mailbox"]
    boxes = [e for e in events if e.kind == "mailbox"]
    for event in lines:
        axes.axvline(event.at, color=EVENT_COLOURS[event.kind], linewidth=1.0, linestyle="--", alpha=0.9, zorder=3)
    if boxes:
        axes.plot([e.at for e in boxes], [0.015] * len(boxes), linestyle="none", marker="^", markersize=6,
                  color=MAILBOX, markeredgecolor="white", markeredgewidth=0.6, transform=axes.get_xaxis_transform(),
                  zorder=4, clip_on=False)
    if labels:
        _label_lines(axes, lines, span, fontsize)


def _label_lines(axes: Any, lines: list[Event], span: tuple[float, float], fontsize: float) -> None:
    """Horizontal labels right of their lines in LABEL_ROWS rows at the top (the y range leaves room for them):
    each goes into the first row where it does not run into the previous label; lines that find no room add
    '+n' to the label before them."""
    low, high = _padded(span)
    figure_width = axes.figure.get_figwidth() * axes.get_position().width
    per_char = fontsize * 0.56 / 72 / figure_width * (high - low)     # time units one character takes
    row_end = [low - 1.0] * LABEL_ROWS
    placed: list[tuple[Any, str, int]] = []       # (text artist, its label, events folded into it)
    for event in lines:
        width = (len(event.label) + 1.5) * per_char
        left = event.at + width <= high           # near the right edge: the label goes left of its line
        begin = event.at if left else event.at - width
        row = next((r for r in range(LABEL_ROWS) if begin >= row_end[r]), None)
        if row is None:
            if placed:
                artist, label, folded = placed[-1]
                placed[-1] = (artist, label, folded + 1)
                artist.set_text(f" {label} +{folded + 1} ")
            continue
        row_end[row] = begin + width
        artist = axes.text(event.at, 0.985 - row * LABEL_ROW_HEIGHT, " " + event.label + ("" if left else " "),
                           va="top", ha="left" if left else "right",
                           fontsize=fontsize, color=EVENT_COLOURS[event.kind], transform=axes.get_xaxis_transform(),
                           zorder=5, clip_on=True)
        placed.append((artist, event.label, 0))


def _legend_handles(series: Series, events: list[Event]) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles: list[Any] = [Patch(color=LEGIT, label="legitimate")]
    if series.bytes_attack > 0:
        handles.append(Patch(color=ATTACK, label="attack (DSCP-marked)"))
    if any(v is None for v in series.total):
        handles.append(Patch(color=GAP, alpha=0.35, label="no samples"))
    names = {"stream": "stream start", "trigger": "trigger fired", "event": "event sent", "end": "scenario end"}
    kinds = {e.kind for e in events}
    for kind in ("stream", "event", "trigger", "end"):
        if kind in kinds:
            handles.append(Line2D([], [], color=EVENT_COLOURS[kind], linestyle="--", label=names[kind]))
    if "mailbox" in kinds:
        handles.append(Line2D([], [], color=MAILBOX, marker="^", linestyle="none", label="mailbox event"))
    return handles
