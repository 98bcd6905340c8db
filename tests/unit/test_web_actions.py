"""The web view's Link control (web/actions.py, `POST /api/link/<segment>`) with a fake link changer, and the
layer-clean change it calls (cluster/linkchange.py) with fake one-host and cluster paths (no root)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import webcases
from aiohttp.test_utils import TestClient, TestServer

from nestbed.cluster import linkchange
from nestbed.cluster.linkchange import BadLinkRequest, change_link
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, ShapingPlan
from nestbed.realize import linkstate
from nestbed.realize.state import ExperimentState
from nestbed.web import actions, server
from nestbed.web.auth import new_token

TOKEN = new_token()
LAB = webcases.LAB
REFUSAL = "lan lan0 has per-member shaping (egress/ingress); set cannot change it at run time"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ExperimentState, HostPlan]:
    return webcases.running(tmp_path, monkeypatch, LAB)


class FakeChanger:
    """Checks the request as change_link does, records it, and refuses a set on lan0 (per-member shaping)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []

    def __call__(self, name: str, segment: str, action: str, assignments: dict[str, Any]) -> dict[str, Any]:
        linkchange.check_request(action, assignments)
        if segment == "lan0" and action == "set":
            raise ExperimentError(REFUSAL)
        self.calls.append((name, segment, action, assignments))
        state = {"down": "down", "up": "up", "set": "up"}[action]
        return {"segment": segment, "state": state, "shaping": assignments or None, "members": ["a:eth1", "r:eth1"],
                "seconds": 0.001, "hosts": ["local"], "cluster": False}


def posting(state: ExperimentState, check: Any) -> FakeChanger:
    fake = FakeChanger()

    async def main() -> None:
        app = server.build_app(state, TOKEN)
        app[actions.CHANGER] = fake
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await check(client)
    asyncio.run(main())
    return fake


async def post(client: TestClient[Any, Any], segment: str, body: Any, token: str | None = TOKEN,
               **headers: str) -> tuple[int, str]:
    query = f"?token={token}" if token else ""
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
    response = await client.post(f"/api/link/{segment}{query}", headers=headers, **kwargs)
    return response.status, await response.text()


def one_line(status_text: tuple[int, str], status: int, *words: str) -> None:
    got, text = status_text
    assert got == status, text
    assert text.endswith("\n") and text.count("\n") == 1 and text.startswith("nestbed web: "), repr(text)
    for word in words:
        assert word in text, text


def test_down_up_and_set_go_to_the_changer_and_answer_its_dict(lab):
    state, _ = lab
    answers: list[Any] = []

    async def check(client: TestClient[Any, Any]) -> None:
        for body in ({"action": "down"}, {"action": "up", "shaping": {}},
                     {"action": "set", "shaping": {"bandwidth": "5Mbit", "delay": None}}):
            response = await client.post(f"/api/link/link0?token={TOKEN}", json=body)
            assert response.status == 200 and response.content_type == "application/json"
            answers.append(await response.json())

    fake = posting(state, check)
    assert fake.calls == [("lab", "link0", "down", {}), ("lab", "link0", "up", {}),
                          ("lab", "link0", "set", {"bandwidth": "5Mbit", "delay": None})]
    assert [a["state"] for a in answers] == ["down", "up", "up"]
    assert answers[2]["shaping"] == {"bandwidth": "5Mbit", "delay": None} and answers[0]["members"] == ["a:eth1",
                                                                                                         "r:eth1"]


def test_bad_requests_are_400_in_one_line_and_change_nothing(lab):
    state, _ = lab

    async def check(client: TestClient[Any, Any]) -> None:
        one_line(await post(client, "link0", {"action": "sideways"}), 400, "unknown link action 'sideways'")
        one_line(await post(client, "link0", {"action": "set", "shaping": {"bandwidth": "5Mbiz"}}), 400,
                 "5Mbiz")
        one_line(await post(client, "link0", {"action": "set", "shaping": {"bandwith": "5Mbit"}}), 400,
                 "unknown shaping key 'bandwith'", "did you mean bandwidth")
        one_line(await post(client, "link0", {"action": "set", "shaping": {"bandwidth": 5}}), 400, "string")
        one_line(await post(client, "link0", {"action": "set"}), 400, "set needs at least one of bandwidth")
        one_line(await post(client, "link0", {"action": "down", "shaping": {"loss": "1%"}}), 400,
                 "down takes no shaping values")
        one_line(await post(client, "link0", "not json {"), 400, "not JSON")
        one_line(await post(client, "link0", ["down"]), 400, '"action"')
        one_line(await post(client, "link0", {"action": "down", "force": True}), 400, "unknown field 'force'")

    assert posting(state, check).calls == []


def test_a_refused_change_is_409_in_one_line(lab):
    state, _ = lab

    async def check(client: TestClient[Any, Any]) -> None:
        one_line(await post(client, "lan0", {"action": "set", "shaping": {"bandwidth": "1Mbit"}}), 409,
                 "per-member shaping")

    assert posting(state, check).calls == []


def test_a_failure_below_is_500_in_one_line(lab):
    state, _ = lab

    def broken(*_: Any) -> dict[str, Any]:
        raise OSError(105, "No buffer space available")

    async def main() -> None:
        app = server.build_app(state, TOKEN)
        app[actions.CHANGER] = broken
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            one_line(await post(client, "link0", {"action": "down"}), 500, "link0: link change failed", "OSError")
    asyncio.run(main())


def test_the_token_and_origin_rules_hold_for_the_post(lab):
    state, _ = lab

    async def check(client: TestClient[Any, Any]) -> None:
        one_line(await post(client, "link0", {"action": "down"}, token=None), 401, "token")
        one_line(await post(client, "link0", {"action": "down"}, token="wrong"), 401, "token")
        one_line(await post(client, "link0", {"action": "down"}, Origin="http://evil.example"), 403,
                 "another origin")
        one_line(await post(client, "link0", {"action": "down"}, Host="evil.example"), 403, "Host")
        host = f"127.0.0.1:{client.port}"
        status, _ = await post(client, "link0", {"action": "down"}, Origin=f"http://{host}")
        assert status == 200                                       # the page's own origin

    assert [c[2] for c in posting(state, check).calls] == ["down"]


# cluster/linkchange.change_link itself: the checks, and which path it takes.

def test_change_link_checks_the_request_before_anything(lab, monkeypatch):
    def no_change(*_: Any, **__: Any) -> dict[str, Any]:
        raise AssertionError("links.change reached")

    monkeypatch.setattr("nestbed.realize.links.change", no_change)
    for action, values, words in [("sideways", {}, "unknown link action"), ("up", {"loss": "1%"}, "takes no"),
                                  ("set", {}, "set needs"), ("set", {"loss": "lots"}, "lots"),
                                  ("set", {"bogus": "1"}, "unknown shaping key")]:
        with pytest.raises(BadLinkRequest, match=words):
            change_link("lab", "link0", action, values)
    with pytest.raises(BadLinkRequest, match="no link or LAN 'link9'"):
        change_link("lab", "link9", "down", {})


def test_change_link_refuses_an_experiment_that_is_not_up(lab):
    state, _ = lab
    state.set_status("down")
    with pytest.raises(ExperimentError, match="is not up") as raised:
        change_link("lab", "link0", "down", {})
    assert not isinstance(raised.value, BadLinkRequest)
    with pytest.raises(ExperimentError, match="nosuch") as raised:
        change_link("nosuch", "link0", "down", {})
    assert not isinstance(raised.value, BadLinkRequest)


def test_change_link_on_one_host_is_realize_links_change(lab, monkeypatch):
    state, plan = lab
    seen: list[Any] = []

    def change(st: Any, pl: Any, segment: str, action: str, **shaping: Any) -> dict[str, Any]:
        seen.append((st.name, segment, action, shaping))
        return {"segment": segment, "kind": "link", "action": action, "state": "down", "shaping": None,
                "members": ["a:eth1", "r:eth1"], "seconds": 0.002}

    monkeypatch.setattr("nestbed.realize.links.change", change)
    done = change_link("lab", "link0", "down", {})
    assert seen == [("lab", "link0", "down", {})]
    assert done["hosts"] == [plan.host] and done["cluster"] is False and done["state"] == "down"


def test_change_link_on_a_cluster_asks_every_host_and_keeps_the_state(lab, monkeypatch):
    state, plan = lab
    state.set_status("up", cluster={"hosts": ["h1", "h2"]})
    for node, host in (("a", "h1"), ("r", "h2"), ("b", "h2")):
        plan.node(node).host = host
    state.plan_path.write_text(plan.to_json())
    asked: list[Any] = []

    class Control:
        def link(self, segment: str, action: str, **shaping: Any) -> None:
            asked.append((segment, action, shaping))

        def close(self) -> None:
            asked.append("closed")

    monkeypatch.setattr("nestbed.cluster.deploy.control", lambda name: Control())
    done = change_link("lab", "link0", "set", {"bandwidth": "5Mbit"})
    assert asked == [("link0", "set", {"bandwidth": "5Mbit"}), "closed"]
    assert done["cluster"] is True and done["hosts"] == ["h1", "h2"] and done["state"] == "up"
    assert done["shaping"]["bandwidth"] == 5_000_000 and len(done["members"]) == 2
    assert linkstate.current(state, plan)["link0"] == ("up", ShapingPlan(**done["shaping"]))
    done = change_link("lab", "lan0", "down", {})
    assert done["state"] == "down" and done["hosts"] == ["h2"]
    assert linkstate.current(state, plan)["lan0"][0] == "down"
