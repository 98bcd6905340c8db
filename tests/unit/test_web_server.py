"""The web view's server (web/server.py) on a compiled plan written into a temporary state directory (no root):
its routes behind the token, the page, Ctrl-C with streams open, and `nestbed web` as a command."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import webcases
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, ShapingPlan
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState
from nestbed.web import assets, describe, layout, planwatch, server
from nestbed.web.auth import new_token

TOKEN = new_token()
LAB = """\
name: lab
nodes:
  a: {}
  b: {}
  r: {}
  vm1: {kind: qemu, memory: 256M}
links:
  - {ends: [a, r], bandwidth: 10Mbit}
lans:
  lan0: {members: [r, b, vm1]}
"""
URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{43,})$")
ENTRY = "from nestbed.cli.main import command; command()"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ExperimentState, HostPlan]:
    """An experiment `lab` as `up` leaves its plan: <state>/lab/plan.json."""
    return webcases.running(tmp_path, monkeypatch, LAB)


def with_client(state: ExperimentState, check: Any, app: web.Application | None = None) -> None:
    async def main() -> None:
        async with TestClient(TestServer(app or server.build_app(state, TOKEN), host="127.0.0.1")) as client:
            await check(client)
    asyncio.run(main())


def test_topology_route_is_the_plans_description_behind_the_token(lab):
    state, plan = lab

    async def check(client: TestClient[Any, Any]) -> None:
        assert (await client.get("/api/topology")).status == 401
        response = await client.get(f"/api/topology?token={TOKEN}")
        assert response.status == 200 and response.content_type == "application/json"
        data = await response.json()
        assert data == json.loads(json.dumps({**describe.topology(plan, linkstate.current(state, plan),
                                                                  layout.cached(state, plan)),
                                              "plan": planwatch.plan_version(state), "linkstate": "0"}))
        assert [n["name"] for n in data["nodes"]] == ["a", "b", "r", "vm1"]
        assert [{k: vm[k] for k in ("name", "kind", "host")} for vm in data["vms"]] == [
            {"name": "vm1", "kind": "qemu", "host": plan.host}]
        linkstate.save(state, "lan0", "down", ShapingPlan(bandwidth=1_000_000))    # `nestbed link` meanwhile
        data = await (await client.get("/api/topology")).json()                    # the cookie, no token
        lan = next(link for link in data["links"] if link["name"] == "lan0")
        assert (lan["state"], lan["bandwidth"], lan["members"]) == ("down", 1_000_000, ["r", "b", "vm1"])
    with_client(state, check)


def test_the_page_loads_only_its_own_files_and_each_is_served(lab):
    state, _ = lab

    async def check(client: TestClient[Any, Any]) -> None:
        assert (await client.get("/")).status == 401
        response = await client.get(f"/?token={TOKEN}")
        assert response.status == 200 and response.content_type == "text/html"
        text = await response.text()
        assert '<link rel="icon" href="data:,">' in text          # no favicon request, no 404 in the console
        assert "<title>nestbed: lab</title>" in text
        urls = re.findall(r'(?:src|href)="([^"]+)"', text)
        assert urls == ["data:,", *assets.stylesheets(), "/static/app.css", *assets.scripts(), "/static/app.js"]
        scripts = re.findall(r'<script src="([^"]+)"', text)
        assert scripts == [*assets.scripts(), "/static/app.js"]   # fcose after the bases it needs; the app last
        for url in [u for u in urls if u != "data:,"]:             # all same-origin, all there, the right type
            served = await client.get(url)
            body = await served.read()
            assert served.status == 200 and len(body) > 500, url
            assert served.headers["Content-Type"] == (assets.CSS if url.endswith(".css") else assets.JAVASCRIPT)
        for testid in ("node-list", "search", "vtopo-pane", "ptopo-pane", "panel", "event-log"):
            assert f'data-testid="{testid}"' in text
    with_client(state, check)


def test_files_outside_the_allowlists_are_not_served(lab):
    state, _ = lab

    async def check(client: TestClient[Any, Any]) -> None:
        await client.get(f"/?token={TOKEN}")                       # the cookie from here on
        for url in ("/vendor/cytoscape.cjs.js", "/vendor/..%2Fpackage.json", "/static/..%2F__init__.py",
                    "/static/index.html", "/static/page.py"):
            response = await client.get(url)
            body = await response.text()
            assert response.status == 404 and body.count("\n") == 1, (url, response.status, body)
        assert (await client.get("/vendor/")).status == 404
    with_client(state, check)


def test_the_page_says_in_one_line_when_the_libraries_are_missing(lab, monkeypatch):
    state, _ = lab
    monkeypatch.setattr(assets, "web_dir", lambda: Path("/nonexistent-web"))

    async def check(client: TestClient[Any, Any]) -> None:
        for url in (f"/?token={TOKEN}", "/vendor/cytoscape.min.js"):
            response = await client.get(url)
            body = await response.text()
            assert response.status == 503 and body.count("\n") == 1 and "npm ci" in body, (url, body)
    with_client(state, check)


def test_a_missing_plan_is_one_line(lab):
    state, _ = lab
    state.plan_path.unlink()

    async def check(client: TestClient[Any, Any]) -> None:
        for path in ("/", "/api/topology"):
            response = await client.get(f"{path}?token={TOKEN}")
            body = await response.text()
            assert response.status == 503 and body.count("\n") == 1 and "has no plan" in body, path
    with_client(state, check)
    with pytest.raises(ExperimentError, match="has no plan"):
        server.serve("lab")


def test_serve_refuses_an_unknown_experiment_in_one_line(lab):
    with pytest.raises(ExperimentError, match=r"no experiment named 'nope' on this host \(running: lab\)"):
        server.serve("nope")


def test_sigint_stops_the_server_and_ends_every_stream(lab):
    """A stream waiting on STOP ends at once; one that ignores it is closed after SHUTDOWN_SECONDS. (How soon is
    a benchmark's figure, not a test's: the timeouts here only keep a hang from blocking the suite.)"""
    state, _ = lab
    said: list[str] = []
    app = server.build_app(state, TOKEN)
    streams_open = asyncio.Event()
    opened: list[int] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": open\n\n")
        opened.append(1)
        if len(opened) == 2:
            streams_open.set()
        if request.query.get("polite"):
            await request.app[server.STOP].wait()
        else:
            await asyncio.sleep(3600)
        return response

    app.router.add_get("/stream", stream)

    async def client_side() -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        while not said:
            await asyncio.sleep(0.01)
        port = int(URL.match(said[0]).group(1))         # type: ignore[union-attr]
        readers = []
        for polite in ("1", ""):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /stream?token={TOKEN}&polite={polite} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                         .encode())
            readers.append((reader, writer))
        await asyncio.wait_for(streams_open.wait(), 30)
        os.kill(os.getpid(), signal.SIGINT)
        return readers

    async def main() -> list[bytes]:
        helper = asyncio.create_task(client_side())
        await asyncio.wait_for(server.run(app, 0, said.append, TOKEN), 60)
        # both connections end: the polite stream by itself, the other one closed by the server
        return [await asyncio.wait_for(reader.read(), 30) for reader, _ in await helper]

    ended = asyncio.run(main())
    assert len(ended) == 2 and all(b": open" in data for data in ended)
    assert len(said) == 1 and URL.match(said[0]) and URL.match(said[0]).group(2) == TOKEN    # type: ignore[union-attr]


def test_a_port_in_use_is_one_line(lab):
    state, _ = lab
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(ExperimentError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: "):
            asyncio.run(server.run(server.build_app(state, TOKEN), port, print, TOKEN))


def run_nestbed(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, env=env, timeout=60)


def test_nestbed_web_on_an_unknown_experiment_is_one_line_exit_1(tmp_path):
    env = {**os.environ, "NESTBED_STATE_DIR": str(tmp_path / "state")}
    done = run_nestbed("web", "nope", env=env)
    assert done.returncode == 1 and done.stdout == "", done
    assert done.stderr.strip().count("\n") == 0 and "no experiment named 'nope'" in done.stderr, done
    done = run_nestbed("web", "nope", "--port", "70000", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_nestbed_web_prints_its_url_serves_on_loopback_and_stops_on_a_signal(lab, tmp_path, stop_with):
    env = {**os.environ, "NESTBED_STATE_DIR": os.environ["NESTBED_STATE_DIR"]}
    process = subprocess.Popen([sys.executable, "-c", ENTRY, "web", "lab"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline().strip()           # type: ignore[union-attr]
        found = URL.match(line)
        assert found, (line, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        port, token = int(found.group(1)), found.group(2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/topology?token={token}", timeout=10) as answer:
            assert [n["name"] for n in json.loads(answer.read())["nodes"]] == ["a", "b", "r", "vm1"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/topology", timeout=10)
        assert refused.value.code == 401
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert [row.split()[3] for row in listening.splitlines()] == [f"127.0.0.1:{port}"]
        process.send_signal(stop_with)
        assert process.wait(timeout=60) == 0          # a hang guard, not a figure
        assert "Traceback" not in process.stderr.read()    # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_nestbed_web_without_aiohttp_says_what_to_install(lab):
    entry = "import sys; sys.modules['aiohttp'] = None; " + ENTRY      # as if it were not installed
    done = subprocess.run([sys.executable, "-c", entry, "web", "lab"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == "nestbed: nestbed web needs aiohttp: pip install aiohttp"
