"""An NS file with `$ns rtproto Manual` and `add-route` (tests/data/ns/nb-manual-chain.ns: a – r – b) comes up with
exactly its manual routes: a's host route to b and b's route to the a–r link are in their namespaces, a pings b
across r (TTL one lower: r forwarded it), and r's far address, which no route covers, is unreachable from a (no
computed routes); down leaves nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import exec_in, nestbed, our_namespaces, state_dir

pytestmark = pytest.mark.needs("tclsh")

CHAIN = Path(__file__).parent.parent / "data" / "ns" / "nb-manual-chain.ns"
NAME = "nb-manual-chain"


def test_manual_routes_carry_a_ping_across_the_router_and_nothing_else() -> None:
    try:
        shown = nestbed("up", str(CHAIN)).stdout
        assert f"{NAME} is up" in shown, shown
        a_routes = exec_in(NAME, "a", "ip", "-4", "route", "show").stdout
        b_routes = exec_in(NAME, "b", "ip", "-4", "route", "show").stdout
        assert "10.0.1.2 via 10.0.0.2 dev eth0" in a_routes, a_routes
        assert "10.0.0.0/24 via 10.0.1.1 dev eth0" in b_routes, b_routes
        assert [line for line in a_routes.splitlines() if " via " in line] == \
            [line for line in a_routes.splitlines() if line.startswith("10.0.1.2 via")]      # no other route
        assert exec_in(NAME, "r", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
        crossed = exec_in(NAME, "a", "ping", "-c1", "-W2", "b")
        assert "1 received" in crossed.stdout and "ttl=63" in crossed.stdout, crossed.stdout
        back = exec_in(NAME, "b", "ping", "-c1", "-W2", "a")
        assert "1 received" in back.stdout and "ttl=63" in back.stdout, back.stdout
        uncovered = exec_in(NAME, "a", "ping", "-c1", "-W1", "r-l1", check=False)     # 10.0.1.1: no route to it
        assert uncovered.returncode != 0 and "1 received" not in uncovered.stdout, uncovered.stdout
    finally:
        nestbed("down", NAME, check=False)
    assert our_namespaces(NAME) == [] and not state_dir(NAME).exists()
