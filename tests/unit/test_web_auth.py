"""The web view's guard (web/auth.py): loopback Host, the run's token by query or cookie, same-origin POSTs, the
cookie set by a tokened load only; through aiohttp's test server on 127.0.0.1, no browser."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from nestbed.web.auth import COOKIE, host_allowed, new_token, origin_allowed, token_matches, token_middleware

TOKEN = new_token()


def guarded_app() -> web.Application:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(text="page")

    async def act(request: web.Request) -> web.StreamResponse:
        return web.json_response({"done": True})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 1\n\n")
        return response

    app = web.Application(middlewares=[token_middleware(TOKEN)])
    app.router.add_get("/", page)
    app.router.add_post("/act", act)
    app.router.add_get("/stream", stream)
    return app


def with_client(check: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(guarded_app(), host="127.0.0.1")) as client:
            await check(client)
    asyncio.run(main())


def test_tokens_are_new_each_run_and_long():
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20 and all(len(t) >= 43 for t in tokens)


@pytest.mark.parametrize(("host", "port", "allowed"), [
    ("127.0.0.1", 8000, True), ("127.0.0.1:8000", 8000, True), ("localhost:8000", 8000, True),
    ("LOCALHOST:8000", 8000, True), ("127.0.0.1:8001", 8000, False), ("evil.example", 8000, False),
    ("evil.example:8000", 8000, False), ("127.0.0.1.evil.example:8000", 8000, False), ("", 8000, False),
    (None, 8000, False), ("127.0.0.1:80x", 8000, False), ("[::1]:8000", 8000, False), ("127.0.0.2:8000", 8000, False),
    ("localhost:1234", None, True)])
def test_host_header_must_name_this_loopback_port(host, port, allowed):
    assert host_allowed(host, port) is allowed


def test_token_and_origin_helpers():
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN[:-1], TOKEN) and not token_matches(None, TOKEN)
    assert not token_matches("", TOKEN) and not token_matches(TOKEN + "x", TOKEN)
    assert origin_allowed("GET", "http://evil.example", "127.0.0.1:9")          # a GET changes nothing
    assert origin_allowed("POST", None, "127.0.0.1:9") and origin_allowed("POST", "http://127.0.0.1:9", "127.0.0.1:9")
    assert not origin_allowed("POST", "http://evil.example", "127.0.0.1:9")
    assert not origin_allowed("POST", "null", "127.0.0.1:9") and not origin_allowed("DELETE", "http://x", "127.0.0.1:9")


def test_no_token_or_a_wrong_one_is_401_with_one_line():
    async def check(client: TestClient[Any, Any]) -> None:
        for path in ("/", "/?token=wrong", f"/?token={TOKEN[:-1]}", "/stream", "/no-such-page"):
            response = await client.get(path)
            body = await response.text()
            assert response.status == 401, path
            assert body.count("\n") == 1 and body.startswith("nestbed web: ") and TOKEN not in body
            assert COOKIE not in response.cookies
        response = await client.get("/", cookies={COOKIE: "wrong"})
        assert response.status == 401
        response = await client.post("/act")
        assert response.status == 401
    with_client(check)


def test_a_tokened_load_is_200_and_sets_the_strict_httponly_cookie():
    async def check(client: TestClient[Any, Any]) -> None:
        response = await client.get(f"/?token={TOKEN}")
        assert response.status == 200 and await response.text() == "page"
        morsel = response.cookies[COOKIE]
        assert morsel.value == TOKEN and morsel["httponly"] and morsel["samesite"] == "Strict"
        assert morsel["path"] == "/"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert (await client.get("/no-such-page?token=" + TOKEN)).status == 404    # past the guard
    with_client(check)


def test_a_tokenless_reload_with_the_cookie_works_and_sets_no_cookie():
    async def check(client: TestClient[Any, Any]) -> None:
        assert (await client.get(f"/?token={TOKEN}")).status == 200
        response = await client.get("/")                     # the client's jar sends the cookie back
        assert response.status == 200 and await response.text() == "page"
        assert COOKIE not in response.cookies and "Set-Cookie" not in response.headers
        client.session.cookie_jar.clear()
        assert (await client.get("/")).status == 401
    with_client(check)


def test_a_cookie_alone_never_sets_one():
    async def check(client: TestClient[Any, Any]) -> None:
        response = await client.get("/", cookies={COOKIE: TOKEN})
        assert response.status == 200 and "Set-Cookie" not in response.headers
    with_client(check)


def test_a_streamed_response_passes_without_a_cookie():
    async def check(client: TestClient[Any, Any]) -> None:
        response = await client.get(f"/stream?token={TOKEN}")
        assert response.status == 200 and await response.text() == "data: 1\n\n"
        assert "Set-Cookie" not in response.headers         # its headers went out before the guard saw it
    with_client(check)


def test_a_foreign_host_header_is_403_even_with_the_token():
    async def check(client: TestClient[Any, Any]) -> None:
        port = client.port
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1 if port < 65535 else 1}",
                     f"10.0.0.1:{port}"):
            response = await client.get(f"/?token={TOKEN}", headers={"Host": host})
            assert response.status == 403, host
            assert (await response.text()).count("\n") == 1 and "Set-Cookie" not in response.headers
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            assert (await client.get(f"/?token={TOKEN}", headers={"Host": host})).status == 200, host
    with_client(check)


def test_a_post_from_another_origin_is_403():
    async def check(client: TestClient[Any, Any]) -> None:
        own = f"http://127.0.0.1:{client.port}"
        response = await client.post(f"/act?token={TOKEN}", headers={"Origin": "http://evil.example"})
        assert response.status == 403 and (await response.text()).startswith("nestbed web: POST")
        response = await client.post(f"/act?token={TOKEN}", headers={"Origin": f"http://localhost:{client.port}"})
        assert response.status == 403                          # another origin than the Host it names
        response = await client.post(f"/act?token={TOKEN}", headers={"Origin": own})
        assert response.status == 200 and await response.json() == {"done": True}
        assert (await client.post("/act", cookies={COOKIE: TOKEN})).status == 200    # no Origin: not a browser's
        response = await client.get(f"/?token={TOKEN}", headers={"Origin": "http://evil.example"})
        assert response.status == 200                          # a GET changes nothing
    with_client(check)
