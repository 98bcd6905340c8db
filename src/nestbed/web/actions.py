"""The web view's Link control: `POST /api/link/<segment>` with `{"action": "down"|"up"|"set", "shaping":
{"bandwidth": "5Mbit", …}}` is cluster/linkchange.change_link, what `nestbed link` runs (one host or a cluster).

The change sends netlink and takes the experiment's lock, so it runs in the executor. The answer is the change's
dict as JSON, or one line of text: 400 when the request is wrong in itself (body, action, segment, a value), 409 when
the experiment refuses it (not up, per-member shaping, a kernel without htb …), 500 when the change failed.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from nestbed.cluster.linkchange import BadLinkRequest, change_link
from nestbed.errors import NestbedError
from nestbed.web.lines import line

LinkChanger = Callable[[str, str, str, dict[str, Any]], dict[str, Any]]
EXPERIMENT = web.AppKey("experiment", str)       # the name of the experiment the server shows
CHANGER: web.AppKey[LinkChanger] = web.AppKey("link_changer")  # change_link unless a test puts another here



def parse_body(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The action and its shaping values from the POST body; BadLinkRequest (one line) when it is malformed."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadLinkRequest('the body is not JSON; send {"action": "down"|"up"|"set", "shaping": {…}}') from None
    if not isinstance(body, dict) or not isinstance(body.get("action"), str):
        raise BadLinkRequest('the body needs "action": "down", "up" or "set"')
    unknown = sorted(set(body) - {"action", "shaping"})
    if unknown:
        raise BadLinkRequest(f"unknown field {unknown[0]!r} in the body (fields: action, shaping)")
    shaping = body.get("shaping") or {}
    if not isinstance(shaping, dict):
        raise BadLinkRequest('"shaping" is an object such as {"bandwidth": "5Mbit"}')
    for key, value in shaping.items():
        if value is not None and not isinstance(value, str):
            raise BadLinkRequest(f'shaping {key} is a string such as "5Mbit" (or null to remove it)')
    return body["action"], shaping


async def link_route(request: web.Request) -> web.StreamResponse:
    segment = request.match_info["segment"]
    try:
        action, shaping = parse_body(await request.read())
        changer = request.app.get(CHANGER, change_link)
        done = await asyncio.get_running_loop().run_in_executor(
            None, changer, request.app[EXPERIMENT], segment, action, shaping)
    except BadLinkRequest as error:
        return line(400, str(error))
    except NestbedError as error:
        return line(409, str(error))
    except Exception as error:      # a failure below (netlink, a host): one line, the server goes on
        return line(500, f"{segment}: link change failed: {type(error).__name__}: {error}")
    return web.json_response(done)
