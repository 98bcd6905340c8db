"""The CATCH report's PNGs (matplotlib, Agg), in the style of `nestbed plot` (cli/traffic_png.py), with the
scenario's triggers as labelled vertical lines on every time plot; time 0 is the scenario's start.

    joined.png           bots joined over time, one line per IRC server and all together, a line at N
    target_traffic.png   traffic into the target on the bottleneck, attack stacked on legitimate, the capacity
                         line; below it, the traffic back out (the web server's answers)
    legit.png            legitimate transfer times (scatter) and goodput per 2 s, with each phase's mean
    propagation.png      CDF of the botmaster's round trips halved, per IRC server (ping) and per command (!ok)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nestbed.cli import traffic_png
from nestbed.cli.traffic_png import EVENT_COLOURS, HEADROOM, LEGIT, Event
from nestbed.control import catchreport
from nestbed.control.catchrun import Run
from nestbed.control.traffic import Segment, Series, traffic

SERVER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
OTHER_STYLES = ("--", ":", "-.")
CAPACITY = "#111111"
FAILED = "#d62728"
NAMES = ("joined.png", "target_traffic.png", "legit.png", "propagation.png")


def write_pngs(run: Run, summary: catchreport.Summary, directory: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    events = trigger_events(run)
    span = (min([0.0] + [e.at for e in events]), max([run.end - run.origin] + [e.at for e in events]))
    drawings = (_joined, _target, _legit, _propagation)
    paths = [directory / name for name in NAMES]
    for draw, path in zip(drawings, paths):
        draw(path, run, summary, events, span)
    return paths


def trigger_events(run: Run) -> list[Event]:
    """The contract's triggers that fired, and the scenario's end, at seconds since its start."""
    events = [Event(at - run.origin, "trigger", name) for name, at in sorted(run.triggers.items(), key=lambda x: x[1])]
    if run.reached_exit is not None:
        events.append(Event(run.end - run.origin, "end", "exit" if run.reached_exit else "end"))
    return events


def _figure(rows: int = 1, height: float = 4.8) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(rows, 1, figsize=(11, height), sharex=True, squeeze=False)
    return figure, [a for a in axes.flat]


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt
    try:
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)


def _time_axes(axes: Any, events: list[Event], span: tuple[float, float], labels: bool = True) -> None:
    traffic_png._draw_events(axes, events, span, labels=labels)
    axes.set_xlim(*traffic_png._padded(span))


def _nothing(axes: Any, what: str) -> None:
    axes.text(0.5, 0.5, what, transform=axes.transAxes, ha="center", va="center", color="#777777")


def _event_handles(events: list[Event]) -> list[Any]:
    from matplotlib.lines import Line2D
    kinds = {e.kind for e in events}
    names = {"trigger": "trigger fired", "end": "scenario end"}
    return [Line2D([], [], color=EVENT_COLOURS[k], linestyle="--", label=names[k]) for k in names if k in kinds]


def _legend(axes: Any, handles: list[Any]) -> None:
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)


# -- joined.png ---------------------------------------------------------------------------------------------
def _joined(path: Path, run: Run, summary: catchreport.Summary, events: list[Event],
            span: tuple[float, float]) -> None:
    figure, (axes,) = _figure()
    start = (run.trigger("botsStarted") or run.origin) - run.origin
    servers = list(dict.fromkeys(run.servers + sorted({j.server for j in run.joined.values()})))
    handles: list[Any] = []
    for index, server in enumerate(servers):
        times = sorted(j.at - run.origin for j in run.joined.values() if j.server == server)
        line, = axes.step([start] + times, list(range(len(times) + 1)), where="post", linewidth=1.6,
                          color=SERVER_COLOURS[index % len(SERVER_COLOURS)], label=f"on {server} ({len(times)})")
        handles.append(line)
    every = sorted(j.at - run.origin for j in run.joined.values())
    line, = axes.step([start] + every, list(range(len(every) + 1)), where="post", color="#444444", linewidth=1.0,
                      linestyle="-.", label=f"all ({len(every)})")
    handles.append(line)
    handles.append(axes.axhline(summary.bots, color=CAPACITY, linestyle=":", linewidth=1.2,
                                label=f"N = {summary.bots} bots"))
    if not run.joined:
        _nothing(axes, "no bot recorded joining")
    axes.set_ylim(bottom=0, top=max(summary.bots, 1) * HEADROOM)
    _time_axes(axes, events, span)
    axes.set_xlabel("seconds since the scenario's start")
    axes.set_ylabel("bots in #catch")
    axes.grid(True, axis="y", alpha=0.3)
    joined = f" in {summary.join_seconds:.1f} s" if summary.join_seconds is not None else ""
    axes.set_title(f"bots joined: {summary.bots_joined}/{summary.bots}{joined}", fontsize=11, loc="left")
    _legend(axes, handles + _event_handles(events))
    _save(figure, path)


# -- target_traffic.png -------------------------------------------------------------------------------------
def target_series(run: Run) -> tuple[Series | None, Series | None]:
    """Rates into and out of the target, on the counters' own sampling grid."""
    def series(samples: list[Any], name: str) -> Series | None:
        if len(samples) < 2:
            return None
        found = traffic({(name, ""): samples}, [Segment(name, "link", ((name, ""),))])
        return found.segments[0] if found else None
    return series(run.counters.into_target, "into"), series(run.counters.out_of_target, "out")


def _target(path: Path, run: Run, summary: catchreport.Summary, events: list[Event],
            span: tuple[float, float]) -> None:
    from matplotlib.lines import Line2D
    into, out = target_series(run)
    figure, (top, bottom) = _figure(rows=2, height=7.2)
    capacity = run.capacity or 0
    for axes, series, what in ((top, into, "into the target"), (bottom, out, "out of the target")):
        if series is None:
            _nothing(axes, f"no counter samples {what}")
        else:
            traffic_png._draw_series(axes, series, run.origin)
            axes.set_ylim(bottom=0, top=max(series.peak, capacity, 1.0) * HEADROOM)
        if capacity:
            axes.axhline(capacity, color=CAPACITY, linestyle=":", linewidth=1.2)
        _time_axes(axes, events, span, labels=axes is top)
        axes.set_ylabel(f"rate {what}")
    attack = summary.attack_mbps_at_target
    during = f"{attack['during']:.2f} Mbit/s" if attack["during"] is not None else "none"
    top.set_title(f"bottleneck into the target ({summary.counters}): attack during the flood {during}"
                  + (f", capacity {summary.capacity_mbps:g} Mbit/s" if summary.capacity_mbps else ""),
                  fontsize=11, loc="left")
    bottom.set_xlabel("seconds since the scenario's start")
    shown = into or out
    handles = traffic_png._legend_handles(shown, []) if shown is not None else []
    if capacity:
        handles.append(Line2D([], [], color=CAPACITY, linestyle=":", label="capacity"))
    _legend(top, handles + _event_handles(events))
    _save(figure, path)


# -- legit.png ----------------------------------------------------------------------------------------------
def _legit(path: Path, run: Run, summary: catchreport.Summary, events: list[Event],
           span: tuple[float, float]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter
    figure, (top, bottom) = _figure(rows=2, height=7.2)
    done = [t for t in run.transfers if t.ok]
    failed = [t for t in run.transfers if not t.ok]
    top.scatter([t.at - run.origin for t in done], [t.seconds for t in done], s=7, color=LEGIT, alpha=0.7,
                linewidths=0, label=f"transfer ({len(done)})")
    if failed:
        top.scatter([t.at - run.origin for t in failed], [t.seconds for t in failed], s=16, color=FAILED,
                    marker="x", label=f"failed ({len(failed)})")
    if not run.transfers:
        _nothing(top, "no legitimate transfer recorded")
    top.set_ylabel("transfer time (s), at completion")
    top.set_ylim(bottom=0, top=max([t.seconds for t in run.transfers] + [0.1]) * HEADROOM)
    top.grid(True, axis="y", alpha=0.3)
    _time_axes(top, events, span)
    top.set_title(f"legitimate transfers: goodput before {_mbit(summary.legit_mbps['before'])}, during "
                  f"{_mbit(summary.legit_mbps['during'])}, after {_mbit(summary.legit_mbps['after'])}",
                  fontsize=11, loc="left")
    _legend(top, top.get_legend_handles_labels()[0] + _event_handles(events))

    bins = catchreport.goodput_bins(run.transfers, run.origin, run.end)
    if bins:
        edges = [b[0] - run.origin for b in bins] + [bins[-1][0] - run.origin + catchreport.RECOVERY_WINDOW]
        rates = [b[1] for b in bins]
        bottom.step(edges, rates + rates[-1:], where="post", color=LEGIT, linewidth=1.2)
        bottom.fill_between(edges, 0, rates + rates[-1:], step="post", color=LEGIT, alpha=0.25, linewidth=0)
    windows = catchreport.phases(run)
    for phase in catchreport.PHASES:
        window, value = windows[phase], summary.legit_mbps[phase]
        if window is not None and value is not None:
            bottom.hlines(value * catchreport.MBIT, window[0] - run.origin, window[1] - run.origin, color="#111111",
                          linewidth=1.6, zorder=4)
    peak = max([b[1] for b in bins] + [1.0])
    bottom.set_ylim(bottom=0, top=peak * HEADROOM)
    bottom.yaxis.set_major_formatter(EngFormatter(unit="bit/s"))
    bottom.grid(True, axis="y", alpha=0.3)
    bottom.set_ylabel(f"goodput per {catchreport.RECOVERY_WINDOW:g} s")
    bottom.set_xlabel("seconds since the scenario's start")
    _time_axes(bottom, events, span, labels=False)
    _legend(bottom, [Line2D([], [], color=LEGIT, label="goodput"),
                     Line2D([], [], color="#111111", linewidth=1.6, label="phase mean")])
    _save(figure, path)


def _mbit(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} Mbit/s"


# -- propagation.png ----------------------------------------------------------------------------------------
def _propagation(path: Path, run: Run, summary: catchreport.Summary, events: list[Event],
                 span: tuple[float, float]) -> None:
    figure, (axes,) = _figure()
    servers = {j.nick: j.server for j in run.joined.values()}
    pings = [r for r in run.rounds if r.cmd == "ping"]
    drawn = 0
    if pings:
        by_server: dict[str, list[float]] = {}
        for reply in pings[-1].replies:
            by_server.setdefault(servers.get(reply.nick, "?"), []).append(reply.rtt_ms / 2)
        order = list(dict.fromkeys(run.servers + sorted(by_server)))
        for index, server in enumerate(s for s in order if s in by_server):
            _cdf(axes, by_server[server], f"!ping via {server} ({len(by_server[server])})",
                 SERVER_COLOURS[index % len(SERVER_COLOURS)], "-")
            drawn += 1
    others = [r for r in run.rounds if r.cmd != "ping"]
    for index, round_ in enumerate(others):
        halves = [r.rtt_ms / 2 for r in round_.replies if r.text.startswith("!ok")]
        if halves:
            _cdf(axes, halves, f"!{round_.cmd} {round_.seq}: !ok ({len(halves)})", "#555555",
                 OTHER_STYLES[index % len(OTHER_STYLES)])
            drawn += 1
    if not drawn:
        _nothing(axes, "no command round trips recorded")
    axes.set_ylim(0, 1.02)
    axes.set_xlim(left=0)
    axes.set_xlabel("round trip / 2 (ms): botmaster → bot, as the botmaster measured it")
    axes.set_ylabel("share of the bots")
    axes.grid(True, alpha=0.3)
    rtt = summary.command_rtt_ms
    p50 = "-" if rtt["p50"] is None else f"{rtt['p50']:.1f} ms"
    peak = "-" if rtt["max"] is None else f"{rtt['max']:.1f} ms"
    axes.set_title(f"command propagation: round trip p50 {p50}, max {peak} ({summary.ping_answered}/{summary.bots}"
                   " answered the ping)", fontsize=11, loc="left")
    if drawn:
        axes.legend(loc="lower right", fontsize=8, frameon=False)
    _save(figure, path)


def _cdf(axes: Any, values: list[float], label: str, colour: str, style: str) -> None:
    ordered = sorted(values)
    shares = [(i + 1) / len(ordered) for i in range(len(ordered))]
    axes.step([0.0] + ordered, [0.0] + shares, where="post", color=colour, linestyle=style, linewidth=1.5,
              label=label)
