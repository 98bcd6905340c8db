"""Who may use the web view: a request to this machine's loopback name, carrying the run's token.

The token is made for each run (`secrets.token_urlsafe(32)`) and never written to disk: it is in the URL `nestbed
web` prints. Checked in this order (as Jupyter does, and against DNS rebinding): the Host header must be
127.0.0.1 or localhost on the port the request came in on (else 403); the token is `?token=` or the cookie
`nestbed_token`, compared in constant time (else 401); a POST (any unsafe method) whose Origin is not this Host is
refused (403), so another site's page cannot act on links. A load that carried `?token=` sets the cookie
(HttpOnly, SameSite=Strict), because EventSource and later loads cannot send the token in a header.
"""
from __future__ import annotations

import hmac
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from nestbed.web.lines import line

COOKIE = "nestbed_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def host_allowed(host: str | None, port: int | None) -> bool:
    """`127.0.0.1[:P]` or `localhost[:P]`, P the port the request came in on (None: any port)."""
    if not host:
        return False
    name, colon, given = host.rpartition(":")
    if not colon:
        name, given = host, ""
    if name.lower() not in LOOPBACK_NAMES:
        return False
    if not given:
        return True
    return given.isdigit() and (port is None or int(given) == port)


def token_matches(supplied: str | None, token: str) -> bool:
    return supplied is not None and hmac.compare_digest(supplied.encode(), token.encode())


def origin_allowed(method: str, origin: str | None, host: str) -> bool:
    """An unsafe request's Origin, when the browser sent one, must be this page's own."""
    return method in SAFE_METHODS or origin is None or origin == f"http://{host}"



def _local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def token_middleware(token: str) -> Middleware:
    """The aiohttp middleware guarding every route of the app with this run's token."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not host_allowed(host, _local_port(request)):
            return line(403, f"Host {host!r} refused: open http://127.0.0.1:PORT/ as `nestbed web` printed it")
        from_query = request.query.get("token")
        if not token_matches(from_query or request.cookies.get(COOKIE), token):
            return line(401, "a token is needed: open the URL `nestbed web` printed (with ?token=…)")
        if not origin_allowed(request.method, request.headers.get("Origin"), host):
            return line(403, f"{request.method} from another origin refused")
        response = await handler(request)
        # a streamed response (a file, an event stream) has sent its headers already: no cookie can be added
        if not response.prepared:
            response.headers["Referrer-Policy"] = "no-referrer"      # the token in the URL goes nowhere
            if from_query is not None:
                response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return guard
