"""The web view in a real browser (Playwright driving Debian's chromium), on a running experiment: the token guards
page and API; every node is in the list and both panes; traffic colours a link within 2 s; flooder traffic shows
as attack; a scenario's events reach the log; Down and Up on the page stop and restore pings; hovering a node in
one pane lights it in the other. Each test keeps a screenshot of both panes (test-output/web/, or
$NESTBED_TEST_OUTPUT/web/), and no test may see a page error, a console error, or a request to anything but
127.0.0.1."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from webserve import Served, launch_chromium, open_ready, ping_passes, start_web, stop_web

from conftest import NESTBED, nestbed, our_namespaces, state_dir

pytestmark = pytest.mark.needs("chromium")

REPO = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("NESTBED_TEST_OUTPUT", REPO / "test-output")) / "web"
IDLE = "#b8bec6"            # app.js: the colour of a link with no traffic
TOPOLOGY = """
nodes: {a: {}, r: {}, b: {}, c: {}}
links:
  - {ends: [a, r], bandwidth: 10Mbit}
lans:
  lan0: {members: [r, b, c], bandwidth: 20Mbit}
"""


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One experiment and its `nestbed web` for the module (each test opens its own page)."""
    name = f"web{uuid.uuid4().hex[:6]}"
    path = Path(os.environ["NESTBED_STATE_DIR"]).parent / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: {name}\n{TOPOLOGY}")
    nestbed("up", str(path))
    served = start_web(name)
    try:
        yield served
    finally:
        try:
            stop_web(served)
        finally:
            nestbed("down", name, check=False)
            path.unlink(missing_ok=True)
        assert our_namespaces(name) == [] and not state_dir(name).exists()


@dataclass
class Watched:
    """What a page did that a test must not see: page errors, console errors, requests elsewhere."""
    errors: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)           # console messages a test provoked on purpose


@pytest.fixture
def page(served: Served, request: pytest.FixtureRequest) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright
    watched = Watched()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            tab = browser.new_page(viewport={"width": 1600, "height": 900})
            tab.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))
            tab.on("console", lambda m: watched.errors.append(f"console {m.type}: {m.text}")
                   if m.type in ("error", "warning") else None)
            tab.on("request", lambda r: None if r.url.startswith(f"http://127.0.0.1:{served.port}/")
                   or r.url.startswith("data:") else watched.elsewhere.append(r.url))
            tab.watched = watched
            yield tab
            _keep_screenshots(tab, request.node.name)
        finally:
            browser.close()
    errors = [error for error in watched.errors if error not in watched.expected]
    assert errors == [] and watched.elsewhere == [], (errors, watched.elsewhere)


def _keep_screenshots(tab: Any, test: str) -> None:
    if not tab.evaluate("Boolean(window.nestbed && window.nestbed.ready)"):
        return
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for pane in ("vtopo", "ptopo"):
        tab.locator(f'[data-testid="{pane}-pane"]').screenshot(path=str(OUTPUT / f"{test}-{pane}.png"))
    tab.screenshot(path=str(OUTPUT / f"{test}-page.png"))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return answer.status, answer.read(2000).decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _traffic(name: str, node: str, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(NESTBED + ["exec", name, node, "--", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_without_the_token_neither_page_nor_api_answers(served: Served, page: Any) -> None:
    base = f"http://127.0.0.1:{served.port}"
    for path in ("/", "/api/topology", "/api/stream", "/api/node/a", "/static/app.js", "/vendor/cytoscape.min.js"):
        status, text = _get(base + path)
        assert status == 401 and text.count("\n") == 1 and "token" in text, (path, status, text)
        status, _ = _get(base + path + "?token=" + "x" * 43)
        assert status == 401, path
    status, _ = _get(f"{base}/?token={served.token}", {"Host": "evil.example"})
    assert status == 403                                      # a rebound DNS name is not this machine
    # The refused load is the one expected error; Chromium may log it (and its favicon's) after goto returns.
    page.watched.expected.add("console error: Failed to load resource: the server responded with a status of 401"
                              " (Unauthorized)")
    answer = page.goto(base + "/")
    assert answer is not None and answer.status == 401
    assert "a token is needed" in page.text_content("body")


def test_every_node_is_in_the_list_and_in_both_panes(served: Served, page: Any) -> None:
    open_ready(page, served.url)
    names = ["a", "r", "b", "c"]
    assert page.locator('[data-testid="node-item"]').evaluate_all("items => items.map(i => i.dataset.node)") == names
    for pane in ("vtopo", "ptopo"):
        drawn = page.evaluate(f"names => names.filter(n => window.nestbed.{pane}.getElementById(n).length === 1 "
                              f"&& window.nestbed.{pane}.getElementById(n).visible())", names)
        assert drawn == names, pane
    assert page.evaluate("window.nestbed.ptopo.getElementById('a').parent().id()") == "host:" + page.evaluate(
        "window.nestbed.topology.hosts[0]")
    assert page.evaluate("window.nestbed.vtopo.getElementById('lan:lan0').degree()") == 3      # the LAN's hub
    page.fill('[data-testid="search"]', "c")
    assert page.locator('[data-testid="node-item"]:visible').evaluate_all(
        "items => items.map(i => i.dataset.node)") == ["c"]
    page.press('[data-testid="search"]', "Enter")             # Enter selects the first match in both panes
    page.wait_for_function("window.nestbed.vtopo.getElementById('c').selected()"
                           " && window.nestbed.ptopo.getElementById('c').selected()")


def test_hovering_a_node_in_one_pane_lights_it_in_the_other(served: Served, page: Any) -> None:
    open_ready(page, served.url)
    for here, there in (("vtopo", "ptopo"), ("ptopo", "vtopo")):
        box = page.locator(f'[data-testid="{here}-pane"]').bounding_box()
        x, y = page.evaluate(f"() => {{ const p = window.nestbed.{here}.getElementById('b').renderedPosition();"
                             " return [p.x, p.y]; }")
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.wait_for_function(f"window.nestbed.{there}.getElementById('b').hasClass('lit')", timeout=3000)
        page.mouse.move(box["x"] + 2, box["y"] + 2)
        page.wait_for_function(f"!window.nestbed.{there}.getElementById('b').hasClass('lit')", timeout=3000)


def test_traffic_changes_a_links_colour_and_counters_within_two_seconds(served: Served, page: Any) -> None:
    open_ready(page, served.url)
    page.wait_for_function("window.nestbed.frames >= 2", timeout=10_000)
    assert page.evaluate("window.nestbed.linkStyle('link0').color") == IDLE
    ping = _traffic(served.name, "a", "ping", "-i", "0.1", "-s", "1000", "b")
    try:
        assert ping.stdout is not None
        ping.stdout.readline()                                 # PING b (...): the traffic has started
        started = time.monotonic()
        page.wait_for_function(f"window.nestbed.linkStyle('link0').rate > 0"
                               f" && window.nestbed.linkStyle('link0').color !== '{IDLE}'", timeout=2000)
        took = time.monotonic() - started
        style = page.evaluate("window.nestbed.linkStyle('link0')")
        assert style["attack"] == 0 and style["color"] == "rgb(43,108,176)", style       # legitimate: blue
        page.evaluate("window.nestbed.selectLink('link0')")
        page.wait_for_function("document.querySelector('[data-testid=link-rate]').textContent.includes('bit/s')")
        assert "(0 %)" in page.text_content('[data-testid="link-attack"]')
        page.click('[data-testid="node-item"][data-node="a"]')          # a's own plot: its tx, polled live
        page.wait_for_function("window.nestbed.panelPlot && window.nestbed.panelPlot.data[1].some(v => v > 0)",
                               timeout=5000)
        files = page.locator('[data-testid="identity-file"]').evaluate_all("d => d.map(e => e.dataset.file)")
        assert {"nickname", "ifmap", "topomap", "hosts"} <= set(files), files
        page.click('[data-testid="identity-file"][data-file="nickname"] summary')
        assert served.name in page.text_content('[data-testid="identity-file"][data-file="nickname"] pre')
    finally:
        _stop(ping)
    print(f"link coloured {took:.2f} s after the traffic started")


def test_flooder_traffic_shows_as_attack(served: Served, page: Any) -> None:
    open_ready(page, served.url)
    target = page.evaluate("window.nestbed.topology.nodes.find(n => n.name === 'c').interfaces[0].address")
    flood = _traffic(served.name, "a", sys.executable, "-m", "nestbed.apps.flooder", "--dst", target.split("/")[0],
                     "--subnets", "10.0.0.0/8", "--proto", "udp", "--length", "500", "--rate", "300",
                     "--duration", "20")
    try:
        page.wait_for_function("(window.nestbed.linkStyle('link0').attack || 0) >= 90"
                               " && (window.nestbed.linkStyle('lan0').attack || 0) >= 90", timeout=10_000)
        style = page.evaluate("window.nestbed.linkStyle('link0')")
        assert style["color"] == _attack_colour(style["attack"]), style     # the share drawn is the share measured
        assert style["color"] in ("rgb(214,40,40)", "rgb(197,47,54)"), style  # ≥ 90 % attack: red, not blue
        page.evaluate("window.nestbed.selectLink('link0')")
        page.wait_for_function("!document.querySelector('[data-testid=link-attack]').textContent.startsWith('0 ')"
                               " && document.querySelector('[data-testid=link-attack]').textContent.includes('%')")
        assert re.search(r"\((9\d|100) %\)", page.text_content('[data-testid="link-attack"]'))
    finally:
        _stop(flood)


def _attack_colour(attack_percent: int) -> str:
    """The page's colour for a link's attack share: blue (43,108,176) to red (214,40,40) in 11 steps."""
    def js_round(x: float) -> int:                            # Math.round: halves go up, not to even
        return math.floor(x + 0.5)
    share = js_round(attack_percent / 10) / 10
    blue, red = (43, 108, 176), (214, 40, 40)
    return "rgb({},{},{})".format(*(js_round(b + (r - b) * share) for b, r in zip(blue, red)))


def test_a_scenario_event_appears_in_the_log(served: Served, page: Any, tmp_path: Path) -> None:
    open_ready(page, served.url)
    scenario = tmp_path / "note.aal"
    scenario.write_text("""
streamstarts: [s]
groups: {g: [a]}
agents: {sh: {group: g, path: runshell}}
eventstreams:
  s:
    - {type: event, agent: sh, method: runCommand, args: {cmd: "true"}}
    - type: trigger
      triggers: [{timeout: 200, target: exit}]
""")
    nestbed("run", served.name, str(scenario), "--timeout", "60", timeout=90)
    page.wait_for_function("[...document.querySelectorAll('[data-testid=event]')]"
                           ".some(li => li.dataset.source === 'scenario')", timeout=5000)
    page.wait_for_function("window.nestbed.events.some(e => e.name.startsWith('scenario '))", timeout=5000)
    names = page.evaluate("window.nestbed.events.filter(e => e.source === 'scenario').map(e => e.name)")
    assert names[:2] == ["stream s started", "sh.runCommand"] and names[-1].startswith("scenario "), names
    logged = page.locator('[data-testid="event"] .event-name').all_text_contents()
    assert logged[-len(names):] == names
    page.evaluate("window.nestbed.selectLink('link0')")          # its plot marks the events in its time range
    page.wait_for_function("window.nestbed.panelPlot && window.nestbed.panelPlot.markers >= 3")


def test_down_and_up_on_the_page_stop_and_restore_pings(served: Served, page: Any) -> None:
    open_ready(page, served.url)
    assert ping_passes(served.name, "a", "r")
    page.click('[data-testid="node-item"][data-node="a"]')              # a's panel: its interface on link0
    page.click('[data-testid="interfaces"] a:text("link0")')
    page.click('[data-testid="link-down"]')
    page.wait_for_function("['ok', 'error'].some(c => document.querySelector('[data-testid=link-message]')"
                           ".classList.contains(c))")                 # the POST answered
    assert page.get_attribute('[data-testid="link-message"]', "class") == "message ok"
    assert page.text_content('[data-testid="link-state"]') == "down"
    assert not ping_passes(served.name, "a", "r")
    page.wait_for_function("window.nestbed.linkStyle('link0').state === 'down'"
                           " && window.nestbed.vtopo.getElementById('e:0').hasClass('down')")
    links = json.loads(nestbed("status", served.name, "--json").stdout)["links"]
    assert {s["name"]: s["state"] for s in links}["link0"] == "down"
    page.click('[data-testid="link-up"]')
    page.wait_for_function("document.querySelector('[data-testid=link-state]').textContent === 'up'"
                           " && document.querySelector('[data-testid=link-message]').classList.contains('ok')")
    assert ping_passes(served.name, "a", "r")
    page.fill('[data-testid="link-bandwidth"]', "5Mbiz")                  # a typo: one line, nothing changed
    page.click('[data-testid="link-set"]')
    page.wait_for_function("document.querySelector('[data-testid=link-message]').className.includes('error')")
    assert "5Mbiz" in page.text_content('[data-testid="link-message"]')
    page.watched.errors[:] = [e for e in page.watched.errors if "400" not in e]   # the refused POST, expected
    page.fill('[data-testid="link-bandwidth"]', "5Mbit")
    page.click('[data-testid="link-set"]')
    page.wait_for_function("document.querySelector('[data-testid=link-configured]').textContent === '5 Mbit/s'")
