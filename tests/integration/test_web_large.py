"""The web view of a large experiment in a real browser: 2,100 process nodes (above the 2,000 at which the ptopo
starts folded), in 42 vhost VMs or on the host itself (folded in chunks of 200). The server needs only the
experiment's plan, so this test writes a compiled plan into a state directory of its own (no namespace, no VM is
made) and serves it with `nestbed web`. Every node is in the list and the vtopo; the ptopo shows the host and its
folded boxes only; a click on a box unfolds its nodes inside it; a node picked in the list unfolds its box and is
selected in both panes; the search finds it."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webserve import launch_chromium, open_ready, start_web, stop_web, watched_page

pytestmark = pytest.mark.needs("chromium")

REPO = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("NESTBED_TEST_OUTPUT", REPO / "test-output")) / "web"
LANS, PER_LAN, PER_VHOST = 21, 100, 50
CHUNK = 200                  # app.js: a host's own nodes unfold this many at a time
EMBEDS = {"vhosts": f"{{processes_in: qemu, per_vhost: {PER_VHOST}, per_host: 3000}}",
          "on-the-host": "{per_host: 3000}"}


def _topology(embed: str) -> str:
    lines = ["name: bigweb", "routing: none", f"embed: {EMBEDS[embed]}", "nodes:"]
    lines += [f"  h{k}: {{count: {PER_LAN}}}" for k in range(LANS)]
    lines.append("lans:")
    lines += [f"  lan{k}: {{members: [h{k}]}}" for k in range(LANS)]
    return "\n".join(lines) + "\n"


@pytest.fixture(params=sorted(EMBEDS))
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    from nestbed.model import load_topology_text
    from nestbed.plan import compile_plan
    from nestbed.realize.state import experiment
    root = Path(tempfile.mkdtemp(prefix="nestbed-webtest."))
    monkeypatch.setenv("NESTBED_STATE_DIR", str(root / "state"))           # this test's own, nothing else in it
    plan = compile_plan(load_topology_text(_topology(request.param), "bigweb.yaml"))
    state = experiment(plan.experiment)
    state.create()
    state.plan_path.write_text(plan.to_json())
    state.set_status("up")
    served = start_web(plan.experiment)
    try:
        yield served.url, plan
    finally:
        try:
            stop_web(served)
        finally:
            shutil.rmtree(root)


def test_a_large_experiment_starts_folded_and_unfolds_on_click(served: tuple[str, Any]) -> None:
    from playwright.sync_api import sync_playwright
    url, plan = served
    nodes = [n.name for n in plan.every_node()]
    vms = [vm.name for vm in plan.vms]
    if vms:                                     # each vhost VM is a folded box
        assert len(nodes) == LANS * PER_LAN and len(vms) == len(nodes) // PER_VHOST
        groups = {f"vm:{vm}": [n.name for n in plan.every_node() if n.vm == vm] for vm in vms}
    else:                                       # the host's own nodes fold in chunks, in plan order
        groups = {f"procs:{plan.host}:{k}": nodes[k * CHUNK:(k + 1) * CHUNK] for k in range(-(-len(nodes) // CHUNK))}
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page, errors = watched_page(browser)
            open_ready(page, url, timeout_ms=30_000)
            assert page.locator('[data-testid="node-item"]').count() == len(nodes)
            assert page.evaluate("window.nestbed.vtopo.nodes().filter(n => !n.id().startsWith('lan:')).length") == \
                len(nodes)
            assert "folded" in page.text_content('[data-testid="summary"]')
            boxes = page.evaluate("window.nestbed.ptopo.nodes().map(n => n.id())")
            assert sorted(boxes) == sorted([f"host:{plan.host}", *groups])          # no node yet
            first = next(iter(groups))
            pane = page.locator('[data-testid="ptopo-pane"]').bounding_box()
            assert pane is not None
            x, y = page.evaluate(f"() => {{ const p = window.nestbed.ptopo.getElementById('{first}')"
                                 ".renderedPosition(); return [p.x, p.y]; }")
            page.mouse.click(pane["x"] + x, pane["y"] + y)
            page.wait_for_function(f"window.nestbed.ptopo.getElementById('{first}').children().length === "
                                   f"{len(groups[first])}", timeout=5000)
            assert sorted(page.evaluate(f"window.nestbed.ptopo.getElementById('{first}').children()"
                                        ".map(n => n.id())")) == sorted(groups[first])
            assert page.evaluate("window.nestbed.ptopo.nodes().length") == len(boxes) + len(groups[first])
            last = nodes[-1]                                  # in another, still folded box
            page.fill('[data-testid="search"]', last)
            assert page.locator('[data-testid="node-item"]:visible').count() == 1
            page.click(f'[data-testid="node-item"][data-node="{last}"]')
            page.wait_for_function(f"window.nestbed.ptopo.getElementById('{last}').selected()"
                                   f" && window.nestbed.vtopo.getElementById('{last}').selected()", timeout=5000)
            page.wait_for_function("document.querySelector('[data-testid=panel-title]')"
                                   f"&& document.querySelector('[data-testid=panel-title]').textContent === '{last}'")
            OUTPUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUTPUT / f"large-folded-{'vhosts' if vms else 'on-the-host'}-page.png"))
        finally:
            browser.close()
    assert errors == []
