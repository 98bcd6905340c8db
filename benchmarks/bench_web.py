#!/usr/bin/env python3
"""The web view's figures (issue 16), each against a same-run peer, printed with the ratio:

1. **Page load, 1,000 nodes** (goal ≤ 5 s): a real experiment (`nestbed up`, root; bench_up_down's shape: LANs
   of process nodes, a router each, the routers on a core LAN) served by `nestbed web`; headless Chromium, from
   `goto` to every node in the list and drawn in both panes. Peer: a bare page with the same Cytoscape file and
   the same preset positions drawing the vtopo alone, no app code (the floor of what drawing costs).
2. **One counters frame for 10,000 links** (goals ≤ ~150 KB, ≤ 100 ms to the browser): a plan of 10,000 links
   and a store holding two samples of its 20,000 interfaces, served by nestbed's own app in this process; the
   time from a new sample being in the store to the browser's EventSource handler having it (read, rate
   computation, encoding, sending, parsing: everything but the feed's poll wait, which is ≤ feed.INTERVAL).
   Peer: the same bytes pushed by a stdlib ThreadingHTTPServer SSE endpoint (the transport's floor).

    sudo .venv/bin/python benchmarks/bench_web.py                   # both parts
    sudo .venv/bin/python benchmarks/bench_web.py --skip-page        # the frame part only (no root needed)
    sudo .venv/bin/python benchmarks/bench_web.py --lans 4 --per-lan 9 --links 500 --repeat 2   # a quick try

Nothing is asserted: the figures are printed. Everything it makes is under its own temporary state directory
(prefix "bw"), and the experiment is taken down at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_up_down import topology_yaml  # the same 1,000-node shape

PAGE_GOAL = 5.0               # s: a 1,000-node page shows every node
FRAME_BYTES_GOAL = 150_000
FRAME_LATENCY_GOAL = 0.100    # s
CHROMIUM = os.environ.get("NESTBED_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--disable-background-networking", "--disable-component-update", "--no-first-run"]
URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/\?token=(\S+)$")
NESTBED = [sys.executable, "-m", "nestbed.cli.main"]
EXPERIMENT = "bench-web"

ALL_DRAWN = """n => document.querySelectorAll('[data-testid=node-item]').length === n
  && window.nestbed && window.nestbed.ready
  && window.nestbed.vtopo.nodes().filter(e => !e.id().startsWith('lan:')).length === n
  && (window.nestbed.topology.collapsed
      ? [...window.nestbed.members.keys()].every(id => window.nestbed.ptopo.getElementById(id).length === 1)
      : window.nestbed.ptopo.nodes().filter(e => e.isChildless() && !e.hasClass('group')
          && e.data('kind') !== 'host' && e.data('kind') !== 'vm').length === n)"""
# above 2,000 nodes the ptopo is folded: every node's box is drawn instead
PAINTED = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))"

BARE_PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>
<body style="margin:0"><div id="cy" style="width:800px;height:800px"></div>
<script src="/cytoscape.min.js"></script><script>
fetch('/topology.json').then(r => r.json()).then(t => {
  const els = t.nodes.map(n => ({group: 'nodes', data: {id: n.name}, position: {x: n.x, y: n.y}}));
  t.links.forEach((l, i) => {
    if (l.kind === 'lan' || l.members.length !== 2) {
      els.push({group: 'nodes', data: {id: 'lan:' + l.name}, position: {x: l.x, y: l.y}});
      l.members.forEach((m, k) => els.push({group: 'edges',
        data: {id: 'e' + i + ':' + k, source: 'lan:' + l.name, target: m}}));
    } else els.push({group: 'edges', data: {id: 'e' + i, source: l.members[0], target: l.members[1]}});
  });
  window.cy = cytoscape({container: document.getElementById('cy'), elements: els, layout: {name: 'preset'},
    style: [{selector: 'node', style: {label: 'data(id)', width: 14, height: 14}}]});
  window.drawn = t.nodes.length;
});
</script></body></html>"""


def say(line: str) -> None:
    print(line, flush=True)


def tree_yaml(name: str, links: int) -> str:
    """links + 1 nodes, node i joined to node (i - 1) // 2: one point-to-point link per node but the root."""
    nodes = "".join(f"  n{i}: {{}}\n" for i in range(links + 1))
    edges = "".join(f"  - {{ends: [n{i}, n{(i - 1) // 2}]}}\n" for i in range(1, links + 1))
    return f"name: {name}\nrouting: none\nnodes:\n{nodes}links:\n{edges}"


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)


# -- 1. the page ----------------------------------------------------------------------------------------------------
class Files(BaseHTTPRequestHandler):
    """The bare peer page's three files, from memory."""
    files: dict[str, tuple[str, bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        found = self.files.get(self.path)
        if found is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", found[0])
        self.send_header("Content-Length", str(len(found[1])))
        self.end_headers()
        self.wfile.write(found[1])

    def log_message(self, *args: Any) -> None:
        pass


def page_part(lans: int, per_lan: int, repeat: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from nestbed.web import assets
    nodes = lans * (per_lan + 1)
    path = Path(os.environ["NESTBED_STATE_DIR"]).parent / f"{EXPERIMENT}.yaml"
    path.write_text(topology_yaml(EXPERIMENT, lans, per_lan))
    started = time.perf_counter()
    subprocess.run(NESTBED + ["up", str(path)], check=True, capture_output=True, text=True)
    say(f"page: {nodes} nodes up in {time.perf_counter() - started:.1f} s")
    server = subprocess.Popen(NESTBED + ["web", EXPERIMENT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    peer: ThreadingHTTPServer | None = None
    try:
        started = time.perf_counter()
        found = URL.match((server.stdout.readline() if server.stdout else "").strip())
        if not found:
            raise SystemExit(f"bench_web: nestbed web printed no URL: {server.stderr.read() if server.stderr else ''}")
        serve_s = time.perf_counter() - started
        port, token = int(found.group(1)), found.group(2)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            ours, bare = [], []
            errors: list[str] = []
            for _ in range(repeat):
                context = browser.new_context(viewport={"width": 1600, "height": 900})
                tab = context.new_page()
                tab.on("pageerror", lambda error: errors.append(str(error)))
                started = time.perf_counter()
                tab.goto(f"http://127.0.0.1:{port}/?token={token}")
                tab.wait_for_function(ALL_DRAWN, arg=nodes, timeout=60_000, polling=20)
                tab.evaluate(PAINTED)
                ours.append(time.perf_counter() - started)
                topology = tab.evaluate("JSON.stringify(window.nestbed.topology)")
                context.close()
            library = assets.vendor_file("cytoscape.min.js").read_bytes()
            Files.files = {"/bare.html": ("text/html", BARE_PAGE.encode()),
                           "/cytoscape.min.js": (assets.JAVASCRIPT, library),
                           "/topology.json": ("application/json", topology.encode())}
            peer = ThreadingHTTPServer(("127.0.0.1", 0), Files)
            threading.Thread(target=peer.serve_forever, daemon=True).start()
            for _ in range(repeat):
                context = browser.new_context(viewport={"width": 1600, "height": 900})
                tab = context.new_page()
                started = time.perf_counter()
                tab.goto(f"http://127.0.0.1:{peer.server_address[1]}/bare.html")
                tab.wait_for_function("n => window.drawn === n", arg=nodes, timeout=60_000, polling=20)
                tab.evaluate(PAINTED)
                bare.append(time.perf_counter() - started)
                context.close()
            browser.close()
        return {"nodes": nodes, "serve_s": serve_s, "ours": ours, "bare": bare, "errors": errors}
    finally:
        if peer is not None:
            peer.shutdown()
        server.send_signal(2)
        server.wait(timeout=30)
        subprocess.run(NESTBED + ["down", EXPERIMENT], capture_output=True, text=True)
        path.unlink(missing_ok=True)


# -- 2. one counters frame -------------------------------------------------------------------------------------------
def fill_store(state: Any, plan: Any) -> tuple[Any, list[Any]]:
    """A store with one sample (all zero) of every member interface; returns the store and those rows."""
    from nestbed import paths
    from nestbed.agent.store import CounterRow, Store
    store = Store(paths.store(state.directory))
    rows = [CounterRow(node, iface, 0, 0, 0, 0) for seg in plan.segments for node, iface, _ in seg.members]
    store.add_counters(time.time(), rows)
    return store, rows


def next_rows(rows: list[Any], busy: float, gigabit: bool) -> list[Any]:
    """Each interface's counters one second on: a `busy` share of them sending (≥ 1 Gbit/s when gigabit), 30 %
    of those with a third of it marked attack."""
    from dataclasses import replace
    out = []
    for row in rows:
        sent = 0
        if random.random() < busy:
            sent = random.randint(125_000_000, 1_250_000_000) if gigabit else random.randint(1_000, 12_500_000)
        attack = sent // 3 if random.random() < 0.3 else 0
        out.append(replace(row, tx_bytes=row.tx_bytes + sent, tx_packets=row.tx_packets + sent // 1000,
                           attack_tx_bytes=row.attack_tx_bytes + attack))
    return out


class Push(BaseHTTPRequestHandler):
    """The peer: one SSE stream; writes `message` each time `ready` is set."""
    message = b""
    ready = threading.Event()
    stop = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        for key, value in (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                           ("Access-Control-Allow-Origin", "*")):
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()
        while not self.stop.is_set():
            if self.ready.wait(0.2):
                self.ready.clear()
                self.wfile.write(self.message)
                self.wfile.flush()

    def log_message(self, *args: Any) -> None:
        pass


LISTEN_JS = """url => new Promise(done => { window.got = []; const s = new EventSource(url);
  s.addEventListener('counters', m => { const f = JSON.parse(m.data);
    window.got.push({at: Date.now(), seq: f.seq, bytes: m.data.length, links: f.rate.length}); });
  s.addEventListener('open', () => done(true)); window.feed = s; })"""


async def frame_part(name: str, links: int, repeat: int, busy: float, gigabit: bool) -> dict[str, Any]:
    from aiohttp import web as aioweb
    from playwright.async_api import async_playwright

    from nestbed.model import load_topology_text
    from nestbed.plan import compile_plan
    from nestbed.realize.state import experiment
    from nestbed.web import feed, server
    from nestbed.web.auth import new_token
    plan = compile_plan(load_topology_text(tree_yaml(name, links), "bench.yaml"))
    state = experiment(plan.experiment)
    state.create()
    state.plan_path.write_text(plan.to_json())
    state.set_status("up")
    random.seed(1)
    store, rows = fill_store(state, plan)
    token = new_token()
    app = server.build_app(state, token)
    app[feed.FEED].interval = 3600.0        # the bench ticks the feed itself, so no poll wait is measured
    runner = aioweb.AppRunner(app, access_log=None)
    await runner.setup()
    site = aioweb.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    Push.stop.clear()
    Push.ready.clear()
    peer = ThreadingHTTPServer(("127.0.0.1", 0), Push)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    ours: list[float] = []
    theirs: list[float] = []
    sizes: list[int] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            tab = await browser.new_page()
            await tab.goto(f"http://127.0.0.1:{port}/static/app.css?token={token}")   # the cookie, a light page
            await tab.evaluate(LISTEN_JS, "/api/stream")
            await tab.wait_for_function("window.got.length >= 1", polling=5)   # the feed's own first tick
            for _ in range(repeat):
                rows = next_rows(rows, busy, gigabit)
                await asyncio.get_running_loop().run_in_executor(None, store.add_counters, time.time(), rows)
                before = await tab.evaluate("window.got.length")
                sent = time.time()
                await app[feed.FEED].tick()
                await tab.wait_for_function(f"window.got.length > {before}", polling=1)
                got = (await tab.evaluate("window.got"))[-1]
                if got["links"] != len(plan.segments):
                    raise SystemExit(f"bench_web: a frame of {got['links']} links, not {len(plan.segments)}")
                ours.append(got["at"] / 1000 - sent)
                sizes.append(len(app[feed.FEED].frame or b""))         # the whole SSE message, as sent
            Push.message = app[feed.FEED].frame or b""
            await tab.evaluate("window.feed.close()")
            await tab.evaluate(LISTEN_JS, f"http://127.0.0.1:{peer.server_address[1]}/sse")
            for _ in range(repeat):
                before = await tab.evaluate("window.got.length")
                sent = time.time()
                Push.ready.set()
                await tab.wait_for_function(f"window.got.length > {before}", polling=1)
                theirs.append((await tab.evaluate("window.got"))[-1]["at"] / 1000 - sent)
            await browser.close()
    finally:
        Push.stop.set()
        peer.shutdown()
        app[server.STOP].set()
        await runner.cleanup()
        store.close()
    return {"links": len(plan.segments), "ours": ours, "theirs": theirs, "bytes": max(sizes)}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lans", type=int, default=20)
    parser.add_argument("--per-lan", type=int, default=49, help="process nodes per LAN (plus its router)")
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-page", action="store_true", help="only the frame part (no root, no experiment)")
    args = parser.parse_args()
    if not args.skip_page and os.geteuid() != 0:
        raise SystemExit("bench_web: the page part brings an experiment up: run as root (or --skip-page)")
    with tempfile.TemporaryDirectory(prefix="bench-web-") as root:
        os.environ["NESTBED_STATE_DIR"] = str(Path(root) / "state")
        os.environ["NESTBED_PREFIX"] = "bw"
        if not args.skip_page:
            page = page_part(args.lans, args.per_lan, args.repeat)
            ours, bare = median(page["ours"]), median(page["bare"])
            say(f"page: `nestbed web` printed its URL {page['serve_s']:.2f} s after it started (layout made)")
            verdict = (f"goal ≤ {PAGE_GOAL:.0f} s: {'met' if ours <= PAGE_GOAL else 'NOT met'}"
                       if page["nodes"] <= 1000 else "the goal is for 1,000 nodes")
            say(f"page: {page['nodes']} nodes, every node listed and drawn in both panes: median {ours:.2f} s "
                f"(runs {', '.join(f'{s:.2f}' for s in page['ours'])}; {verdict})")
            say(f"page: peer, a bare Cytoscape page drawing the vtopo alone: median {bare:.2f} s; "
                f"nestbed/bare {ours / bare:.1f}×; page errors: {len(page['errors'])}")
        cases = (("a quarter of links busy", 0.25, False), ("every link ≥ 1 Gbit/s", 1.0, True))
        for index, (label, busy, gigabit) in enumerate(cases):
            frame = asyncio.run(frame_part(f"bench-frame{index}", args.links, args.repeat, busy, gigabit))
            ours, theirs = median(frame["ours"]), median(frame["theirs"])
            say(f"frame ({label}): {frame['links']} links, {frame['bytes'] / 1000:.1f} kB (goal ≤ "
                f"{FRAME_BYTES_GOAL / 1000:.0f} kB: {'met' if frame['bytes'] <= FRAME_BYTES_GOAL else 'NOT met'}); "
                f"sample in the store → browser handler: median {ours * 1000:.1f} ms (goal ≤ "
                f"{FRAME_LATENCY_GOAL * 1000:.0f} ms: {'met' if ours <= FRAME_LATENCY_GOAL else 'NOT met'})")
            say(f"frame ({label}): peer, the same bytes from a stdlib SSE server: median {theirs * 1000:.1f} ms; "
                f"nestbed/peer {ours / theirs:.1f}×")


if __name__ == "__main__":
    main()
