"""The older kernels' path (realize/linksender.py) on this kernel: with NESTBED_KERNEL_RELEASE=6.1.0 the realizer
takes this host's namespace for one that checks a new link's ifindex against the sender's (Linux before 6.15,
Debian 12's 6.1), so every link whose planned ifindex this host's own namespace holds (lo, eth0, …) is sent from
inside its own namespace. The links still get the plan's ifindexes, packets cross, and `down` leaves nothing."""
from __future__ import annotations

import os
import re

import pytest

from conftest import exec_in, nestbed, our_namespaces, state_dir
from nestbed.model import load_topology
from nestbed.plan import compile_plan, mechanisms
from nestbed.plan.mechanisms.specs import NewLink
from nestbed.realize import linksender
from nestbed.realize.kernel import LINUX

pytestmark = pytest.mark.needs("root")

TOPOLOGY = """
nodes:
  a: {}
  b: {}
  r: {router: true}
  c: {}
lans:
  lan0: {members: [a, b, r]}
links:
  - {ends: [r, c]}
"""


def test_links_sent_from_inside_their_namespaces_get_the_plans_ifindexes_and_carry_packets(experiments,
                                                                                            monkeypatch):
    taken = {int(line.split(":")[0]) for line in os.popen("ip -o link").read().splitlines()}
    assert 2 in taken                     # this host's namespace holds the nodes' first ifindex: the case itself
    monkeypatch.setenv("NESTBED_KERNEL_RELEASE", "6.1.0-28-amd64")
    name, path = experiments.write(TOPOLOGY)
    plan = compile_plan(load_topology(path))
    new = [link for link in mechanisms.links(plan) if isinstance(link, NewLink)]
    sends = linksender.plan_sends(new, LINUX.sender_ifindexes())
    assert sends.inside and sum(map(len, sends.inside.values())) + len(sends.from_host) == len(new)   # taken
    nestbed("up", str(path))
    for node, dst in [("a", "b"), ("a", "c"), ("c", "b")]:
        result = exec_in(name, node, "ping", "-c1", "-W2", dst, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    links = exec_in(name, "r", "ip", "-o", "link").stdout
    assert re.search(r"^2: eth0@", links, re.M) and re.search(r"^3: eth1@", links, re.M), links   # the plan's
    nestbed("down", name)
    assert our_namespaces(name) == [] and not state_dir(name).exists()
