"""`GET /api/node/<name>[?since=<unix s>]`: one node for the page's node panel, as JSON:

    {"name", "kind", "host", "vm", "interfaces": [{"name", "address", "mac", "segment"}],
     "identity": {filename: content},
     "series": {"t": [unix s], "tx": [kbit/s], "rx": [kbit/s], "attack_tx": [kbit/s], "attack_rx": [kbit/s]}}

`series` sums the node's experiment interfaces (the plan's; never its control interface), one point per sample
of its host's agent: the rate since the interface's previous sample, with control/traffic.py's rule (a counter that
went down was reset: its new value is the interval's bytes; attack never more than the total). The last
`SERIES_SECONDS` up to the newest sample; or, with `since`, `{"name", "series"}` with only the points after it
(the page polls once a second while a panel is open and appends). No sample yet: empty lists. The node's name
is looked up in the plan, never put in a path; the samples come from its host (web/hostcounters.py). Everything
is read in the executor.
"""
from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from typing import Any

from aiohttp import web

from nestbed.agent.store import CounterRow
from nestbed.control.traffic import _delta
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.plan.identity import IdentityBuilder
from nestbed.web.feed import FEED, STORE_ERRORS
from nestbed.web.hostcounters import HostCounters, Window
from nestbed.web.lines import line

SERIES_SECONDS = 300.0
LOOKBACK = 10.0         # s read before `since` too: the samples the first new points are diffed against
SERIES = ("tx", "rx", "attack_tx", "attack_rx")
_identities: tuple[HostPlan, IdentityBuilder] | None = None     # the plan's shared files are built once


def series(samples: Window, since: float | None = None) -> dict[str, list[float]]:
    """Summed kbit/s of the sampled interfaces at each sample time after `since` (None: the last
    SERIES_SECONDS up to the newest sample). Samples oldest first, as Store.counter_window gives them."""
    previous: dict[str, tuple[float, CounterRow]] = {}
    summed: dict[float, list[float]] = defaultdict(lambda: [0.0] * len(SERIES))
    for created, row in samples:
        before = previous.get(row.iface)
        if before is not None and created <= before[0]:
            continue
        previous[row.iface] = (created, row)
        if before is None:
            continue
        seconds = created - before[0]
        old = before[1]
        tx, rx = _delta(old.tx_bytes, row.tx_bytes), _delta(old.rx_bytes, row.rx_bytes)
        parts = (tx, rx, min(_delta(old.attack_tx_bytes, row.attack_tx_bytes), tx),
                 min(_delta(old.attack_rx_bytes, row.attack_rx_bytes), rx))
        point = summed[created]
        for k, sent in enumerate(parts):
            point[k] += sent * 8 / seconds / 1000
    times = sorted(summed)
    cutoff = since if since is not None else (times[-1] - SERIES_SECONDS if times else -math.inf)
    shown = [t for t in times if t > cutoff]
    result: dict[str, list[float]] = {"t": shown}
    for k, name in enumerate(SERIES):
        result[name] = [round(summed[t][k], 3) for t in shown]
    return result


def identity_of(plan: HostPlan, node: str) -> dict[str, str]:
    """The node's /var/emulab/boot files as `up` wrote them: built again from the plan, by the same builder with
    the same control-network rule (a VM's own copy is inside its guest)."""
    global _identities
    if _identities is None or _identities[0] is not plan:
        from nestbed.realize.apply import control_info
        _identities = (plan, IdentityBuilder(plan, control=control_info(plan)))
    return _identities[1].files(node)


def node_info(plan: HostPlan, node: NodePlan, counters: HostCounters, since: float | None) -> dict[str, Any]:
    """The node's JSON. With `since` (the page polling an open panel) only the new points of its series: the
    rest does not change, and the shared identity files list every node."""
    host = node.host or plan.host
    ifaces = [i.name for i in node.interfaces]
    after = None if since is None else since - LOOKBACK
    samples = counters.window(node.name, host, ifaces, after, SERIES_SECONDS + LOOKBACK)
    if since is not None:
        return {"name": node.name, "series": series(samples, since)}
    return {"name": node.name, "kind": node.kind, "host": host, "vm": node.vm,
            "interfaces": [{"name": i.name, "address": i.address, "mac": i.mac, "segment": i.segment}
                           for i in node.interfaces],
            "identity": identity_of(plan, node.name),
            "series": series(samples, since)}


def _since(request: web.Request) -> float | None:
    text = request.query.get("since")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"since={text[:40]!r} is not a time in Unix seconds")
    return value



async def node_route(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    try:
        since = _since(request)
    except ValueError as error:
        return line(400, str(error))
    source = request.app[FEED]               # the server's feed holds the plan and where the samples are

    def read() -> dict[str, Any] | None:
        plan = source.plan()
        if plan is None:
            raise ExperimentError(f"experiment {source.state.name!r} has no plan (is it up?)")
        node = source.plans.node(name)          # an index: the panel polls once a second
        return None if node is None else node_info(plan, node, source.counters, since)
    try:
        found = await asyncio.get_running_loop().run_in_executor(None, read)
    except STORE_ERRORS as error:            # no plan, a broken store, a real host not answering
        return line(503, str(error))
    if found is None:
        return line(404, f"experiment {source.state.name!r} has no node {name[:80]!r}")
    return web.json_response(found)
