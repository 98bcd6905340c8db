"""The web view of a large experiment in a real browser: 2,100 process nodes in 42 vhost VMs (above the 2,000 at
which the ptopo starts folded). The server needs only the experiment's plan, so this test writes a compiled plan
into a state directory of its own (no namespace, no VM is made) and serves it with `nestbed web`. Every node is in
the list and the vtopo; the ptopo shows the host and its VM boxes only; a click on a VM box unfolds its 50 nodes
inside it; a node picked in the list unfolds its VM and is selected in both panes; the search finds it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import NESTBED

pytestmark = pytest.mark.needs("chromium")

REPO = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("NESTBED_TEST_OUTPUT", REPO / "test-output")) / "web"
URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{43,})$")
LANS, PER_LAN, PER_VHOST = 21, 100, 50


def _topology() -> str:
    lines = ["name: bigweb", "routing: none", f"embed: {{processes_in: qemu, per_vhost: {PER_VHOST}, per_host: 3000}}",
             "nodes:"]
    lines += [f"  h{k}: {{count: {PER_LAN}}}" for k in range(LANS)]
    lines.append("lans:")
    lines += [f"  lan{k}: {{members: [h{k}]}}" for k in range(LANS)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    from nestbed.model import load_topology_text
    from nestbed.plan import compile_plan
    from nestbed.realize.state import experiment
    root = Path(tempfile.mkdtemp(prefix="nestbed-webtest."))
    monkeypatch.setenv("NESTBED_STATE_DIR", str(root / "state"))           # this test's own, nothing else in it
    plan = compile_plan(load_topology_text(_topology(), "bigweb.yaml"))
    state = experiment(plan.experiment)
    state.create()
    state.plan_path.write_text(plan.to_json())
    state.set_status("up")
    server = subprocess.Popen(NESTBED + ["web", plan.experiment], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=os.environ.copy())
    try:
        found = URL.match((server.stdout.readline() if server.stdout else "").strip())
        assert found, server.stderr.read() if server.stderr and server.poll() is not None else "no URL printed"
        yield found.group(0), plan
    finally:
        server.send_signal(2)
        assert server.wait(timeout=10) == 0
        assert "Traceback" not in (server.stderr.read() if server.stderr else "")
        shutil.rmtree(root)


def test_a_large_experiment_starts_folded_and_unfolds_on_click(served: tuple[str, Any]) -> None:
    from playwright.sync_api import sync_playwright
    url, plan = served
    nodes = [n.name for n in plan.every_node()]
    vms = [vm.name for vm in plan.vms]
    assert len(nodes) == LANS * PER_LAN and len(vms) == len(nodes) // PER_VHOST
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ.get("NESTBED_CHROMIUM", "/usr/bin/chromium"),
                                             headless=True, args=["--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            page.wait_for_function("window.nestbed && window.nestbed.ready", timeout=30_000)
            assert page.locator('[data-testid="node-item"]').count() == len(nodes)
            assert page.evaluate("window.nestbed.vtopo.nodes().filter(n => !n.id().startsWith('lan:')).length") == \
                len(nodes)
            assert "folded" in page.text_content('[data-testid="summary"]')
            boxes = page.evaluate("window.nestbed.ptopo.nodes().map(n => n.id())")
            assert sorted(boxes) == sorted([f"host:{plan.host}", *(f"vm:{vm}" for vm in vms)])    # no node yet
            first = vms[0]
            pane = page.locator('[data-testid="ptopo-pane"]').bounding_box()
            assert pane is not None
            x, y = page.evaluate(f"() => {{ const p = window.nestbed.ptopo.getElementById('vm:{first}')"
                                 ".renderedPosition(); return [p.x, p.y]; }")
            page.mouse.click(pane["x"] + x, pane["y"] + y)
            page.wait_for_function(f"window.nestbed.ptopo.getElementById('vm:{first}').children().length === "
                                   f"{PER_VHOST}", timeout=5000)
            inside = [n.name for n in plan.every_node() if n.vm == first]
            assert sorted(page.evaluate(f"window.nestbed.ptopo.getElementById('vm:{first}').children()"
                                        ".map(n => n.id())")) == sorted(inside)
            last = nodes[-1]                                  # in another, still folded VM
            page.fill('[data-testid="search"]', last)
            assert page.locator('[data-testid="node-item"]:visible').count() == 1
            page.click(f'[data-testid="node-item"][data-node="{last}"]')
            page.wait_for_function(f"window.nestbed.ptopo.getElementById('{last}').selected()"
                                   f" && window.nestbed.vtopo.getElementById('{last}').selected()", timeout=5000)
            page.wait_for_function("document.querySelector('[data-testid=panel-title]')"
                                   f"&& document.querySelector('[data-testid=panel-title]').textContent === '{last}'")
            OUTPUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUTPUT / "large-folded-page.png"))
        finally:
            browser.close()
    assert errors == []
