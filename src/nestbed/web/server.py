"""`nestbed web NAME`: the web view's aiohttp server, on 127.0.0.1 only, behind the run's token (web/auth.py).

Routes (a table below): `GET /` the page's shell (web/page.py), `GET /vendor/<name>` the npm libraries
(web/assets.py's allowlist), `GET /static/<name>` the page's own script and style, `GET /api/topology` the
experiment as web/describe.py gives it, `GET /api/stream` the live feed (web/feed.py), `POST /api/link/<segment>`
link control (web/actions.py). Served
with AppRunner + TCPSite rather than `web.run_app`: with our own SIGINT/SIGTERM handler setting a stop event
(which long-lived handlers such as an event stream wait on, `STOP` in the app) Ctrl-C ends the server within
about a second; `run_app` waited ~2 minutes for an open stream. Plan and link state are read in the executor:
they are files of a state directory the server reads as root.
"""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from nestbed.errors import ExperimentError
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState, require
from nestbed.web import actions, assets, describe, feed, layout, nodeinfo, page
from nestbed.web.auth import new_token, token_middleware
from nestbed.web.lines import line
from nestbed.web.planwatch import links_version, plan_version

LISTEN = "127.0.0.1"           # never another address: the page can change links
SHUTDOWN_SECONDS = 1.0         # how long a stop waits for handlers still running before it closes them
STATE = web.AppKey("state", ExperimentState)
STOP = web.AppKey("stop", asyncio.Event)


def current_topology(state: ExperimentState) -> dict[str, Any]:
    """The topology JSON, with the versions of the plan and links.json it was made from (web/planwatch.py). The
    versions are taken before the files are read: a change made meanwhile shows as a newer version later."""
    plan_now, links_now = plan_version(state), links_version(state)
    plan = state.load_plan()
    if plan is None:
        raise ExperimentError(no_plan(state))
    return {**describe.topology(plan, linkstate.current(state, plan), layout.cached(state, plan)),
            "plan": plan_now, "linkstate": links_now}


def no_plan(state: ExperimentState) -> str:
    return f"experiment {state.name!r} has no plan (is it up? `nestbed status {state.name}`)"


async def _topology_of(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        return await asyncio.get_running_loop().run_in_executor(None, current_topology, request.app[STATE])
    except ExperimentError as error:
        return line(503, str(error))


async def topology_route(request: web.Request) -> web.StreamResponse:
    found = await _topology_of(request)
    return found if isinstance(found, web.Response) else web.json_response(found)


async def page_route(request: web.Request) -> web.StreamResponse:
    """The page's shell (web/page.py); its scripts fetch the topology. One line when the libraries are missing or
    the experiment has no plan, so a broken install is said on the page, not as a blank one."""
    state = request.app[STATE]
    missing = assets.missing()
    if missing is not None:
        return line(503, missing)
    if not state.plan_path.exists():
        return line(503, no_plan(state))
    return web.Response(text=page.shell(state.name), content_type="text/html")



def _file_route(find: Callable[[str], tuple[Path, str]], cache: str) -> Handler:
    """A route serving `find(name)`'s (file, content type): 404 for a name outside its allowlist, 503 when npm ci
    has not put the file there, each one line."""
    async def route(request: web.Request) -> web.StreamResponse:
        try:
            path, content_type = find(request.match_info["name"])
        except assets.UnknownAsset as error:
            return line(404, str(error))
        except assets.AssetsMissing as error:
            return line(503, str(error))
        return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": cache})
    return route


vendor_route = _file_route(lambda name: (assets.vendor_file(name), assets.content_type(name)), "max-age=86400")
static_route = _file_route(lambda name: (page.static_file(name), page.STATIC[name]), "no-cache")


ROUTES = [("GET", "/", page_route), ("GET", assets.PREFIX + "{name}", vendor_route),
          ("GET", page.STATIC_PREFIX + "{name}", static_route), ("GET", "/api/topology", topology_route),
          ("GET", "/api/stream", feed.stream_route), ("POST", "/api/link/{segment}", actions.link_route),
          ("GET", "/api/node/{name}", nodeinfo.node_route)]


def build_app(state: ExperimentState, token: str, stop: asyncio.Event | None = None) -> web.Application:
    app = web.Application(middlewares=[token_middleware(token)])
    app[STATE] = state
    app[actions.EXPERIMENT] = state.name
    app[STOP] = stop if stop is not None else asyncio.Event()

    async def stopping(app: web.Application) -> None:
        app[STOP].set()                          # streams waiting on it end before the runner closes them

    app.on_shutdown.append(stopping)
    feed.attach(app, state, app[STOP])
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app


async def run(app: web.Application, port: int, say: Callable[[str], None], token: str) -> None:
    """Serve `app` on 127.0.0.1:port (0: a free port) until its stop event is set (SIGINT, SIGTERM)."""
    stop = app[STOP]
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_SECONDS, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LISTEN, port)
        try:
            await site.start()
        except OSError as error:
            raise ExperimentError(f"cannot listen on {LISTEN}:{port}: {error.strerror or error}") from None
        bound = runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            say(f"http://{LISTEN}:{bound}/?token={token}")
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        await runner.cleanup()


def serve(name: str, port: int = 0, say: Callable[[str], None] = print) -> None:
    """`nestbed web NAME`: one line for an unknown experiment or one without a plan; else serve until stopped."""
    state = require(name)
    current_topology(state)      # no plan: say so now; and the layout made (sfdp: ~3 s at 10k nodes) and cached
    token = new_token()

    async def main() -> None:
        await run(build_app(state, token), port, say, token)
    asyncio.run(main())
