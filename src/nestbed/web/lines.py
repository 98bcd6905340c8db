"""The web view's one-line answers: every refusal or error the server gives is one line of text, "nestbed web:
what is wrong", whitespace folded, so a page or a script shows it as it is."""
from __future__ import annotations

from aiohttp import web


def line(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=f"nestbed web: {' '.join(text.split())}\n", content_type="text/plain")
