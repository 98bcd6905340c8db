"""The web view of an experiment on 2 emulated hosts: while a ping crosses the link between them, the feed's
counters frames show the link's rate (each host's agent samples its own node into its own store) and
`/api/node/<b>` gives b's series from its host; down leaves no namespace, state directory or server behind."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from webserve import Served, launch_chromium, open_ready, ping_passes, start_web, stop_web, watched_page

from conftest import NESTBED, nestbed, state_dir

pytestmark = pytest.mark.needs("root", "sshd", "chromium")
REPO = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("NESTBED_TEST_OUTPUT", REPO / "test-output")) / "web"

TOPOLOGY = "name: webspan\nnodes: {a: {host: emu0}, b: {host: emu1}}\nlinks: [{ends: [a, b], bandwidth: 10Mbit}]\n"
WAIT = 30.0          # s: only a guard against a hang


def _frames(port: int, token: str, until: float) -> Any:
    """The stream's counters frames, as they come."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stream?token={token}", timeout=WAIT) as stream:
        kind = None
        while time.monotonic() < until:
            line = stream.readline().decode()
            if not line:
                return
            if line.startswith("event: "):
                kind = line[7:].strip()
            elif line.startswith("data: ") and kind == "counters":
                yield json.loads(line[6:])


def _in_the_browser(name: str, url: str) -> None:
    """The ptopo shows each host as its own box with its node inside; Down and Up on the page act on both hosts."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page, errors = watched_page(browser)
            open_ready(page, url)
            parents = page.evaluate("['a', 'b'].map(n => window.nestbed.ptopo.getElementById(n).parent().id())")
            assert parents == ["host:emu0", "host:emu1"], parents
            page.wait_for_function("(window.nestbed.linkStyle('link0').rate || 0) > 0", timeout=10_000)
            page.evaluate("window.nestbed.selectLink('link0')")
            page.click('[data-testid="link-down"]')
            page.wait_for_function("document.querySelector('[data-testid=link-state]').textContent === 'down'")
            assert not ping_passes(name, "a", "b")
            page.click('[data-testid="link-up"]')
            page.wait_for_function("document.querySelector('[data-testid=link-state]').textContent === 'up'")
            assert ping_passes(name, "a", "b")
            OUTPUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUTPUT / "two-hosts-page.png"))
        finally:
            browser.close()
    assert errors == []


def test_a_cross_host_links_rate_reaches_the_feed_and_the_node_panel(tmp_path: Path):
    name = "webspan"
    topology, cluster = tmp_path / f"{name}.yaml", tmp_path / "two.yaml"
    topology.write_text(TOPOLOGY)
    cluster.write_text("emulate: 2\n")
    served: Served | None = None
    ping: subprocess.Popen[bytes] | None = None
    try:
        nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
        served = start_web(name)
        port, token = served.port, served.token
        ping = subprocess.Popen(NESTBED + ["exec", name, "a", "--", "ping", "-i", "0.2", "-s", "1000", "-c", "150",
                                           "b"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen: list[Any] = []
        for frame in _frames(port, token, time.monotonic() + WAIT):    # ~2 × 5 × 1028 B/s ≈ 80 kbit/s, both ways
            seen.append(frame["rate"])
            if (frame["rate"][0] or 0) >= 40:
                break
        else:
            raise AssertionError(f"no frame showed the link's rate: {seen}")
        assert frame["down"] == [] and frame["t"] > 0
        deadline = time.monotonic() + WAIT            # the link's rate may come from a's samples before b has two
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/node/b?token={token}", timeout=WAIT) as answer:
                node = json.loads(answer.read())
            if len(node["series"]["t"]) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert node["host"] == "emu1" and [i["name"] for i in node["interfaces"]] == ["eth0"]
        assert len(node["series"]["t"]) >= 2 and max(node["series"]["tx"]) > 0      # b's replies, from emu1
        _in_the_browser(name, served.url)
    finally:
        if ping is not None and ping.poll() is None:
            ping.terminate()
            ping.wait(timeout=10)
        try:
            if served is not None:
                stop_web(served)
        finally:
            nestbed("down", name, check=False, timeout=180)
    assert not state_dir(name).exists(), f"left {state_dir(name)}"
    left = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert [n for n in left if f"-{name}." in n] == [], "namespaces left"
