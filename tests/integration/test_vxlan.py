"""A LAN across two "hosts" over real kernel VXLAN: each host is a network namespace of this test with an underlay
interface on a shared bridge (MTU 1500), and realizes its own HostPlan from inside it (a subprocess that enters it
first, with its own state directory and prefix, as an emulated host's agent does). Packets cross; the lowered
member MTU is enforced at the sender (no silent drop); the FDB is static; the hosts' namespaces get nothing but the
kernel's UDP socket; teardown from the journal leaves nothing."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from nestbed.plan.hostplan import HostPlan, InterfacePlan, NodePlan, SegmentPlan, VxlanPlan
from nestbed.plan.mechanisms import bridge, vxlan

MTU = 1500 - vxlan.HEADROOM          # the members' MTU: the underlay's 1500 cannot carry inner 1500 + 50

# The realization "on a host": this process moves into the host's namespace before anything else, so the
# host's own namespace is that one, as on an emulated host.
HOST_AGENT = textwrap.dedent("""
    import json, sys, time
    from nestbed.realize import processes
    processes.enter_netns(sys.argv[1])
    from nestbed.errors import NestbedError
    from nestbed.plan.hostplan import HostPlan
    from nestbed.realize.apply import realize
    from nestbed.realize.state import experiment
    from nestbed.realize.teardown import teardown
    plan = HostPlan.from_json(open(sys.argv[3]).read())
    state = experiment(plan.experiment)
    started = time.monotonic()
    if sys.argv[2] == "up":
        state.directory.mkdir(parents=True)
        try:
            realize(plan, state, {"netem": False, "iptables_loss": False}, write_identity=False)
        except NestbedError as error:
            print(error, file=sys.stderr)
            teardown(state)
            sys.exit(1)
    else:
        report = teardown(state)
        print(json.dumps({"namespaces": report.namespaces, "left": report.left}))
    print(f"seconds {time.monotonic() - started:.3f}", file=sys.stderr)
""")


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


class Hosts:
    """Two hosts on an underlay bridge, made by the test with ip(8), removed by it whatever happens."""

    def __init__(self, tag: str):
        self.underlay = f"nt-{tag}.ul"
        self.names = [f"nt-{tag}.emu{k}" for k in range(2)]
        self.addresses = [f"10.250.0.{k + 1}" for k in range(2)]

    def make(self) -> None:
        run("ip", "netns", "add", self.underlay)
        run("ip", "-n", self.underlay, "link", "add", "ul0", "mtu", "1500", "type", "bridge")
        run("ip", "-n", self.underlay, "link", "set", "ul0", "up")
        for k, (name, address) in enumerate(zip(self.names, self.addresses)):
            run("ip", "netns", "add", name)
            run("ip", "link", "add", "ul0", "netns", name, "mtu", "1500", "type", "veth", "peer", "name", f"h{k}",
                "netns", self.underlay)
            run("ip", "-n", self.underlay, "link", "set", f"h{k}", "master", "ul0", "up")
            run("ip", "-n", name, "addr", "add", f"{address}/24", "dev", "ul0")
            run("ip", "-n", name, "link", "set", "ul0", "up")
            run("ip", "-n", name, "link", "set", "lo", "up")

    def remove(self) -> None:
        for name in [*self.names, self.underlay]:
            if netns_exists(name):
                run("ip", "netns", "del", name, check=False)


def host_plan(experiment: str, k: int, hosts: Hosts, vni: int, macs: list[str]) -> HostPlan:
    """Host k's part of one LAN lan0 of two nodes n0 (on emu0) and n1 (on emu1), as compile would lay it out."""
    prefix = f"nt{k}"                                     # each host's own object prefix
    node = NodePlan(name=f"n{k}", kind="process", netns=f"{prefix}-{experiment}.n{k}", forwarding=False,
                    interfaces=[InterfacePlan("eth0", 2, "lan0", f"10.0.0.{k + 1}/24", macs[k], mtu=MTU)])
    plan = HostPlan(experiment=experiment, host=f"emu{k}",
                    segments=[SegmentPlan("lan0", "lan", "10.0.0.0/24",
                                          [("n0", "eth0", "10.0.0.1/24"), ("n1", "eth0", "10.0.0.2/24")])],
                    nodes=[node])
    root = bridge.plan(plan, f"{prefix}-{experiment}.lan0.sw", 0, "lan0", [(node, node.interfaces[0])], {node.name: k})
    other = 1 - k
    plan.vxlans.append(VxlanPlan(segment="lan0", netns=root.netns, name=vxlan.device_name(0),
                                 ifindex=vxlan.next_ifindex(plan, root), master=root.ifindex, vni=vni,
                                 local=hosts.addresses[k], underlay="ul0", port=vxlan.DEFAULT_PORT,
                                 peers=[hosts.addresses[other]], remote_macs=[(macs[other], hosts.addresses[other])],
                                 mtu=MTU))
    return plan


class Agents:
    """Runs the realization and teardown of plans on hosts; tears down whatever it brought up."""

    def __init__(self, tmp: Path, hosts: Hosts):
        self.tmp, self.hosts = tmp, hosts
        self.up_plans: list[tuple[int, Path]] = []
        self.seconds: list[float] = []

    def _agent(self, k: int, action: str, plan_path: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "NESTBED_STATE_DIR": str(self.tmp / f"emu{k}"), "NESTBED_PREFIX": f"nt{k}"}
        result = subprocess.run([sys.executable, "-c", HOST_AGENT, self.hosts.names[k], action, str(plan_path)],
                                capture_output=True, text=True, timeout=120, env=env)
        for line in result.stderr.splitlines():
            if line.startswith("seconds "):
                self.seconds.append(float(line.split()[1]))
        return result

    def up(self, k: int, plan: HostPlan) -> subprocess.CompletedProcess:
        path = self.tmp / f"{plan.experiment}.emu{k}.json"
        path.write_text(plan.to_json())
        self.up_plans.append((k, path))
        return self._agent(k, "up", path)

    def down(self, k: int, path: Path) -> dict:
        result = self._agent(k, "down", path)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def down_all(self) -> None:
        for k, path in reversed(self.up_plans):
            self.down(k, path)
        self.up_plans = []


@pytest.fixture
def lab(tmp_path):
    tag = f"vx{uuid.uuid4().hex[:6]}"
    hosts = Hosts(tag)
    agents = Agents(tmp_path, hosts)
    try:
        hosts.make()
        yield tag, hosts, agents
    finally:
        try:
            agents.down_all()
        finally:
            hosts.remove()          # a host's namespace takes any VXLAN device whose socket it held with it


def udp_ports(netns: str) -> str:
    return run("ip", "netns", "exec", netns, "ss", "-H", "-uln").stdout


def link_names(netns: str | None) -> set[str]:
    command = ["ip", "-o", "link", "show"] if netns is None else ["ip", "-n", netns, "-o", "link", "show"]
    return {line.split(":")[1].strip().split("@")[0] for line in run(*command).stdout.splitlines()}


def test_a_lan_across_two_hosts_over_vxlan(lab):
    experiment, hosts, agents = lab
    vni = random.randrange(0x100000, 0xFFFFFF)
    macs = ["02:5a:00:00:00:01", "02:5a:00:00:00:02"]
    plans = [host_plan(experiment, k, hosts, vni, macs) for k in range(2)]
    root_links_before = link_names(None)
    for k, plan in enumerate(plans):
        result = agents.up(k, plan)
        assert result.returncode == 0, result.stderr
    n0, n1 = (plan.nodes[0].netns for plan in plans)
    switches = [plan.vxlans[0].netns for plan in plans]

    ping = run("ip", "netns", "exec", n0, "ping", "-c3", "-i0.2", "-W2", "10.0.0.2")
    assert "3 received" in ping.stdout
    # The lowered MTU holds end to end: the largest DF packet crosses, one byte more fails at the sender.
    for size in (1000, 1400, 1422):
        fits = run("ip", "netns", "exec", n0, "ping", "-M", "do", "-s", str(size), "-c1", "-W2", "10.0.0.2",
                   check=False)
        assert fits.returncode == 0 and "1 received" in fits.stdout, (size, fits.stdout, fits.stderr)
    too_big = run("ip", "netns", "exec", n0, "ping", "-M", "do", "-s", "1423", "-c1", "-W2", "10.0.0.2", check=False)
    assert too_big.returncode != 0 and "message too long" in too_big.stdout + too_big.stderr
    # Without DF the sender fragments to the member MTU: every size crosses.
    for size in (1423, 4000):
        fragmented = run("ip", "netns", "exec", n0, "ping", "-M", "dont", "-s", str(size), "-c1", "-W2", "10.0.0.2")
        assert "1 received" in fragmented.stdout
    back = run("ip", "netns", "exec", n1, "ping", "-M", "do", "-s", "1422", "-c1", "-W2", "10.0.0.1")
    assert "1 received" in back.stdout

    for k, (plan, switch) in enumerate(zip(plans, switches)):
        v = plan.vxlans[0]
        details = run("ip", "-n", switch, "-d", "link", "show", "vx0").stdout
        assert f"vxlan id {vni} " in details and "dstport 4789" in details and "nolearning" in details
        assert f"mtu {MTU} " in details and "master br0" in details and ",UP" in details
        port = next(end.name for pair in plan.veths for end in (pair.a, pair.b) if end.netns == switch)
        assert f"mtu {MTU} " in run("ip", "-n", switch, "link", "show", port).stdout       # the bridge port end
        assert f"mtu {MTU} " in run("ip", "-n", plan.nodes[0].netns, "link", "show", "eth0").stdout
        fdb = run("ip", "netns", "exec", switch, "bridge", "fdb", "show", "dev", "vx0").stdout
        peer = hosts.addresses[1 - k]
        # (the kernel names the underlay's namespace, not the device's: "link-netnsid N")
        assert re.search(rf"^00:00:00:00:00:00 dst {peer} (link-netnsid \d+ )?self permanent$", fdb, re.M), fdb
        assert re.search(rf"^{macs[1 - k]} dst {peer} (link-netnsid \d+ )?self permanent$", fdb, re.M), fdb
        assert len(re.findall(r" self ", fdb)) == 2                    # nothing learnt: nolearning
        assert run("ip", "-n", switch, "-o", "link", "show", "vx0").stdout.split(":")[0].strip() == str(v.ifindex)
        # The host's namespace holds its underlay and the kernel's UDP socket for the device, nothing else.
        assert link_names(hosts.names[k]) == {"lo", "ul0"}
        assert ":4789 " in udp_ports(hosts.names[k])
    assert ":4789 " not in udp_ports(hosts.underlay)
    ours = {"vx0", "br0", "p0e0", "p1e0"}
    assert link_names(None) & ours <= root_links_before & ours          # nothing of it in the machine's own

    reports = []
    for k, path in reversed(agents.up_plans):
        reports.append(agents.down(k, path))
    agents.up_plans = []
    assert [r["namespaces"] for r in reports] == [2, 2] and all(r["left"] == [] for r in reports)
    for plan in plans:
        assert not any(netns_exists(name) for name in plan.netns_names)
    waited = time.monotonic()
    while any(":4789 " in udp_ports(name) for name in hosts.names) and time.monotonic() - waited < 5:
        time.sleep(0.02)          # the kernel frees a namespace (and its devices) after its last handle goes
    print(f"realize per host: {agents.seconds[:2]} s; UDP socket gone {time.monotonic() - waited:.3f} s "
          f"after teardown; teardown {agents.seconds[2:]} s")
    assert all(":4789 " not in udp_ports(name) for name in hosts.names)
    assert all(link_names(name) == {"lo", "ul0"} for name in hosts.names)
    assert not any((agents.tmp / f"emu{k}" / experiment).exists() for k in range(2))


def test_a_vni_in_use_on_a_host_is_one_line_and_leaves_nothing(lab):
    experiment, hosts, agents = lab
    vni = random.randrange(0x100000, 0xFFFFFF)
    macs = ["02:5b:00:00:00:01", "02:5b:00:00:00:02"]
    first = host_plan(experiment, 0, hosts, vni, macs)
    assert agents.up(0, first).returncode == 0
    second = host_plan(f"{experiment}b", 0, hosts, vni, macs)            # another experiment, the same VNI
    result = agents.up(0, second)
    agents.up_plans.pop()                                                # it rolled itself back
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"vxlan vni {vni} is in use on host emu0 (another experiment?)"
    assert not any(netns_exists(name) for name in second.netns_names)
    assert all(netns_exists(name) for name in first.netns_names)         # the other experiment is untouched
    assert "vx0" in link_names(first.vxlans[0].netns)
