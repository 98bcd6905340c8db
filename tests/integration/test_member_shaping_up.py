"""Per-member shaping for real: a LAN of three process nodes where b has its own ingress bandwidth (a qdisc on
its bridge port, in the switch namespace) and c its own egress bandwidth (on c's eth0). tc shows both rates where
they belong, transfers measure them (broad bounds only), linktest passes, `link set` refuses in one line, an
edited file reshapes the port in place, and `down` leaves nothing."""
from __future__ import annotations

import subprocess

from test_link_changes import _transfer

from conftest import have, nestbed, our_namespaces
from nestbed.realize.state import experiment

LAN = """\
nodes: {a: {}, b: {}, c: {}}
lans:
  lan0:
    members:
      - a
      - {node: b, ingress: {bandwidth: 10Mbit}}
      - {node: c, egress: {bandwidth: 20Mbit}}
"""


def tc(netns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "tc", *args], capture_output=True, text=True,
                          check=True).stdout


def test_member_ingress_on_the_port_and_egress_on_the_node(experiments):
    assert have("tc") and have("ip")
    name = experiments.up(LAN)
    plan = experiment(name).load_plan()
    assert plan is not None
    (port,) = plan.port_shaping
    assert port.node == "b" and port.netns.endswith(f"{name}.lan0.sw")
    assert "qdisc htb 1: root" in tc(port.netns, "-s", "qdisc", "show", "dev", port.name)
    assert "rate 10Mbit" in tc(port.netns, "class", "show", "dev", port.name)
    c_ns = plan.node("c").netns
    assert "qdisc htb 1: root" in tc(c_ns, "-s", "qdisc", "show", "dev", "eth0")
    assert "rate 20Mbit" in tc(c_ns, "class", "show", "dev", "eth0")
    assert "htb" not in tc(plan.node("a").netns, "qdisc", "show", "dev", "eth0")
    # the other ports of the switch carry no shaping
    others = [v.b.name for v in plan.veths if v.b.netns == port.netns and v.b.name != port.name]
    assert len(others) == 2 and all("htb" not in tc(port.netns, "qdisc", "show", "dev", p) for p in others)

    to_b = _transfer(name, "a", "b")            # a → b: b's port sends at 10 Mbit/s
    from_c = _transfer(name, "c", "a")          # c → a: c's own egress, 20 Mbit/s
    a_to_c = _transfer(name, "a", "c")          # neither: a veth and a bridge at memory speed
    print(f"measured: a→b {to_b / 1e6:.1f}, c→a {from_c / 1e6:.1f}, a→c {a_to_c / 1e6:.1f} Mbit/s")
    assert 2e6 < to_b < 13e6, to_b
    assert 4e6 < from_c < 26e6, from_c
    assert a_to_c > 60e6, a_to_c

    report = nestbed("linktest", name, check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "bandwidth" in report.stdout and "FAIL" not in report.stdout

    refused = nestbed("link", name, "lan0", "set", "bandwidth=5Mbit", check=False)
    assert refused.returncode != 0 and "has per-member shaping" in refused.stderr + refused.stdout
    assert len((refused.stderr + refused.stdout).strip().splitlines()) == 1 and "Traceback" not in refused.stderr

    # the file edited and `up` again: b's port is reshaped in place, the rest untouched
    path = experiments.tmp / f"{name}.yaml"
    path.write_text(path.read_text().replace("bandwidth: 10Mbit", "bandwidth: 5Mbit"))
    out = nestbed("up", str(path)).stdout
    assert "ingress of b: bandwidth 10Mbit → 5Mbit" in out, out
    assert "rate 5Mbit" in tc(port.netns, "class", "show", "dev", port.name)
    assert "rate 20Mbit" in tc(c_ns, "class", "show", "dev", "eth0")

    nestbed("down", name)
    assert not our_namespaces(name)
    assert not experiment(name).directory.exists()
