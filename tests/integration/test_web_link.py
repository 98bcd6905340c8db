"""The web view's Link control for real: `nestbed web NAME` serving a 2-node experiment; a tokened POST of
down makes a ping across the link fail, up restores it (the same change as `nestbed link`), a refused or tokenless
POST changes nothing, and down leaves no namespace, state directory or server behind."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from webserve import ping_passes, start_web, stop_web

from conftest import nestbed, our_namespaces, state_dir


def _post(port: int, segment: str, body: dict[str, Any], token: str | None) -> tuple[int, str]:
    query = f"?token={token}" if token else ""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/link/{segment}{query}", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_link_down_and_up_from_the_page_stop_and_restore_pings(experiments):
    name = experiments.up("nodes: {a: {}, b: {}}\nlinks: [{ends: [a, b], bandwidth: 10Mbit}]\n")
    served = start_web(name)
    try:
        port, token = served.port, served.token
        assert ping_passes(name, "a", "b")
        status, text = _post(port, "link0", {"action": "down"}, token=None)
        assert status == 401 and ping_passes(name, "a", "b"), text
        status, text = _post(port, "link0", {"action": "down"}, token)
        assert status == 200, text
        done = json.loads(text)
        assert done["segment"] == "link0" and done["state"] == "down" and len(done["members"]) == 2
        assert not ping_passes(name, "a", "b")
        links = json.loads(nestbed("status", name, "--json").stdout)["links"]
        assert [(s["name"], s["state"]) for s in links] == [("link0", "down")]     # what `nestbed link` keeps
        status, text = _post(port, "link0", {"action": "set", "shaping": {"bandwidth": "5Mbiz"}}, token)
        assert status == 400 and text.count("\n") == 1, text
        status, text = _post(port, "link0", {"action": "up"}, token)
        assert status == 200 and json.loads(text)["state"] == "up", text
        assert ping_passes(name, "a", "b")
        status, text = _post(port, "link0", {"action": "set", "shaping": {"bandwidth": "5Mbit"}}, token)
        assert status == 200 and json.loads(text)["shaping"]["bandwidth"] == 5_000_000, text
    finally:
        stop_web(served)
    nestbed("down", name)
    assert our_namespaces(name) == [] and not state_dir(name).exists()
