"""qemu VM nodes and vhosts, for real (TCG here): the seed's example two ways, identity files, delay inside
guests, a broken kernel, and nothing left after down."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import PREFIX, exec_in, nestbed, our_namespaces, state_dir
from nestbed.guestproto import answer

pytestmark = [pytest.mark.root, pytest.mark.needs("qemu")]

SEED = """\
nodes:
  a: {}
  b: {}
  vm1: {kind: qemu}
lans:
  lan0: {members: [a, b, vm1], bandwidth: 100Mbit}
"""
NODES = ("a", "b", "vm1")


def addresses(name: str) -> dict[str, str]:
    found = {}
    for node in NODES:
        out = exec_in(name, node, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
        found[node] = re.search(r"inet (\S+)", out).group(1)
    return found


def check_identity(name: str) -> None:
    for node in NODES:
        nickname = exec_in(name, node, "cat", "/var/emulab/boot/nickname").stdout.strip()
        assert nickname == f"{node}.{name}.nestbed"
        topomap = exec_in(name, node, "cat", "/var/emulab/boot/topomap").stdout
        assert all(re.search(rf"^{n},lan0:10\.", topomap, re.M) for n in NODES), topomap
        ifmap = exec_in(name, node, "cat", "/var/emulab/boot/ifmap").stdout.split()
        link = exec_in(name, node, "ip", "-o", "link", "show", "dev", ifmap[0]).stdout
        addr = exec_in(name, node, "ip", "-o", "-4", "addr", "show", "dev", ifmap[0]).stdout
        assert ifmap[2] in link and f"inet {ifmap[1]}/" in addr, (ifmap, link, addr)


def pings_everyone(name: str) -> None:
    for src in NODES:
        for dst in NODES:
            if src != dst:
                exec_in(name, src, "ping", "-c1", "-W5", dst)


def nothing_left(name: str) -> None:
    assert not our_namespaces(name)
    assert not state_dir(name).exists()
    qemus = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    assert f"{state_dir(name)}/" not in qemus
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not re.search(PREFIX + r"c[0-9a-f]{6}\.\d", links) or name not in links
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(state_dir(name)) not in mounts


def control_of_a(name: str) -> str:
    """a has `control: true`: its ctl0 holds its control address, which its nickname names, seen from vm1."""
    assert exec_in(name, "a", "cat", "/var/emulab/boot/controlif").stdout.strip() == "ctl0"
    address = re.search(r"inet (\S+)", exec_in(name, "a", "ip", "-o", "-4", "addr", "show", "dev", "ctl0").stdout)
    assert address, "a has no control address"
    out = exec_in(name, "vm1", "ping", "-c1", "-W5", f"a.{name}.nestbed").stdout
    assert f"({address.group(1).split('/')[0]})" in out, out
    return address.group(1)


def test_seed_example_with_processes_on_the_host_and_inside_a_vhost(experiments):
    seed = SEED.replace("  a: {}", "  a: {control: true}")
    on_host = experiments.up(seed)
    pings_everyone(on_host)
    check_identity(on_host)
    status = json.loads(nestbed("status", on_host, "--json").stdout)
    assert {n["name"] for n in status["nodes"]} == set(NODES)
    host_addresses = addresses(on_host)
    host_control = control_of_a(on_host)

    nested = experiments.up(seed + "embed: {processes_in: qemu}\n")
    pings_everyone(nested)
    check_identity(nested)
    assert addresses(nested) == host_addresses            # the ptopo is invisible to the experiment
    nested_control = control_of_a(nested)                 # a's ctl0 inside the vhost, bridged to the VM's NIC
    assert nested_control.split(".")[3] == host_control.split(".")[3]
    hostname = exec_in(nested, "a", "hostname").stdout.strip()
    assert hostname == "a"
    # a's process really runs inside the vhost's kernel, not the host's
    assert exec_in(nested, "a", "uname", "-r").stdout.strip() != os.uname().release

    for name in (on_host, nested):
        nestbed("down", name)
        nothing_left(name)


def test_delay_on_a_link_between_vms_is_measured_inside_the_guest(experiments):
    name = experiments.up("""\
        nodes:
          v1: {kind: qemu}
          v2: {kind: qemu}
        links:
          - {ends: [v1, v2], delay: 30ms}
        """)
    out = exec_in(name, "v1", "ping", "-c4", "-i0.3", "v2").stdout
    average = float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1))
    assert 58 <= average <= 200, out              # 30 ms each way, shaped by netem in both guests
    qdisc = exec_in(name, "v1", "tc", "qdisc", "show", "dev", "eth0").stdout
    assert "netem" in qdisc and "delay 30ms" in qdisc


def test_the_agent_refuses_a_request_without_the_vms_credential(experiments):
    from nestbed.channel import AgentClient
    from nestbed.errors import ExperimentError
    from nestbed.plan.hostplan import HostPlan
    from nestbed.realize import credential as credentials
    from nestbed.realize.state import experiment
    name = experiments.up("nodes:\n  vm1: {kind: qemu}\n")
    plan = HostPlan.from_json((state_dir(name) / "plan.json").read_text())
    vm = plan.vm("vm1")
    address = vm.control_address.split("/")[0]
    secret = state_dir(name) / "credential"
    assert secret.stat().st_mode & 0o777 == 0o600
    own = credentials.for_vm(experiment(name), "vm1")
    for wrong in ("0" * 64, "", secret.read_text().strip(), credentials.for_vm(experiment(name), "vm2")):
        with pytest.raises(ExperimentError, match="refused"):
            AgentClient("vm1", address, plan.control.port, wrong).request("ping")
    with pytest.raises(ExperimentError, match="refused"):
        AgentClient("vm1", address, plan.control.port, "").run("vm1", ["true"])
    assert AgentClient("vm1", address, plan.control.port, own).request("ping")["ready"]
    # an answer seen on the wire is good for its own connection only
    first = raw_exchange(address, plan.control.port, lambda challenge: answer(own, challenge))
    assert first[0].get("ok") is True
    replayed = raw_exchange(address, plan.control.port, lambda challenge: first[1])
    assert replayed[0] == {"error": "refused: wrong or missing credential"}
    # the credential is never on the wire: not in the clear, not in the first line
    assert own not in json.dumps(first[2])


def raw_exchange(address: str, port: int, sign) -> tuple[dict, str, list]:
    """A ping on a raw connection: (the agent's reply, the answer sent, every line sent)."""
    import socket
    with socket.create_connection((address, port), timeout=10) as sock:
        reader = sock.makefile("rb")
        challenge = json.loads(reader.readline())["challenge"]
        sent = [{"answer": sign(challenge)}, {"op": "ping"}]
        sock.sendall(b"".join(json.dumps(line).encode() + b"\n" for line in sent))
        return json.loads(reader.readline()), sent[0]["answer"], sent


def test_a_guest_sees_only_the_allowlist_and_its_qemu_is_sandboxed(experiments, tmp_path):
    """From a qemu node and from a process inside a vhost: no experiment credential, no shadow, nothing of /root
    but the interpreter, no other experiment's state; qemu runs with -sandbox on as a uid of its own."""
    import shutil
    import sys
    other = experiments.up("nodes:\n  x: {}\n")
    marker_dir = Path(f"/root/.nestbed-test-{other}")
    marker_dir.mkdir()
    (marker_dir / "secret").write_text("host root's\n")
    try:
        name = experiments.up("nodes:\n  a: {}\n  vm1: {kind: qemu}\nlinks:\n  - {ends: [a, vm1]}\n"
                              "embed: {processes_in: qemu}\n")
        state = state_dir(name)
        for node in ("vm1", "a"):
            for path in (state / "credential", Path("/etc/shadow"), marker_dir / "secret",
                         state_dir(other) / "credential", state_dir(other) / "plan.json",
                         state / "plan.json", state / "vms" / "vm1" / "credential"):
                result = exec_in(name, node, "cat", str(path), check=False)
                assert result.returncode != 0 and "No such file" in result.stderr, (node, path, result)
            listing = exec_in(name, node, "ls", "-A", str(state.parent), "/home", "/etc/ssh", check=False)
            assert other not in listing.stdout and "ssh_host" not in listing.stdout, (node, listing)
            users = exec_in(name, node, "cut", "-d:", "-f1", "/etc/passwd").stdout.split()
            assert users == ["root", "nobody"], (node, users)
            found = exec_in(name, node, "find", "/root", "-maxdepth", "4").stdout.split()
            prefix = os.path.realpath(sys.base_prefix)
            # /root itself may be there (empty); below it only the interpreter, when it lives there (pyenv)
            assert all(p == "/root" or prefix.startswith(p) or p.startswith(prefix) for p in found), (node, found)
            exec_in(name, node, sys.executable, "-c", "import nestbed, yaml")     # what it needs is there
        for vm in ("vm1", *[p.name for p in (state / "vms").iterdir() if p.name != "vm1"]):
            pid = int((state / "vms" / vm / "qemu.pid").read_text())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert argv[argv.index(b"-sandbox") + 1].startswith(b"on"), argv
            uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]
            assert uid != "0", (vm, uid)
            assert not Path(f"/tmp/nestbed-{name}-{vm}-console.log").exists()
        assert shutil.which("qemu-system-x86_64")
    finally:
        shutil.rmtree(marker_dir)


def test_a_broken_guest_kernel_fails_clearly_and_leaves_nothing(experiments, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(4 << 20))
    name, path = experiments.write("nodes:\n  a: {}\n  vm1: {kind: qemu}\nlinks:\n  - {ends: [a, vm1]}\n")
    result = nestbed("up", str(path), check=False, env={**os.environ, "NESTBED_GUEST_KERNEL": str(kernel)},
                     timeout=180)
    assert result.returncode != 0
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.stderr, result.stderr
    assert "vm1" in message and "console log" in message, message
    nothing_left(name)


def test_control_network_joins_the_host_vms_and_processes_with_control(experiments):
    name = experiments.up("""\
        nodes:
          a: {control: true}
          b: {}
          vm1: {kind: qemu}
        lans:
          lan0: {members: [a, b, vm1]}
        """)
    assert exec_in(name, "a", "cat", "/var/emulab/boot/controlif").stdout.strip() == "ctl0"
    assert exec_in(name, "b", "cat", "/var/emulab/boot/controlif").stdout.strip() == "lo"   # no control iface
    exec_in(name, "a", "ping", "-c1", "-W3", f"vm1.{name}.nestbed")        # nickname → control address
    exec_in(name, "vm1", "ping", "-c1", "-W3", f"a.{name}.nestbed")
    routes = exec_in(name, "vm1", "ip", "-4", "route").stdout
    assert "default" not in routes                       # no way from the control network to anything else
    status = json.loads((state_dir(name) / "status.json").read_text())
    bridge = status["control_bridge"]
    assert bridge in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    # no IPv6 link-local (no DAD, router or MLD chatter) on the control network, host side or in the nodes
    for node in ("a", "vm1"):
        assert "fe80" not in exec_in(name, node, "ip", "-6", "-o", "addr").stdout, node
    host_side = subprocess.run(["ip", "-6", "-o", "addr"], capture_output=True, text=True).stdout
    tag = re.escape(bridge) + rf"|{PREFIX}k[0-9a-f]{{6}}\.|{PREFIX}c[0-9a-f]{{6}}\."
    assert not [line for line in host_side.splitlines() if re.search(tag, line) and "fe80" in line], host_side
    nestbed("down", name)
    assert f" {bridge}:" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    nothing_left(name)


def test_a_qemu_nodes_commands_mailbox_and_counters_work_from_its_boot_agent(experiments):
    """The VM's boot agent (agent/guestboot.py) configures a qemu node, starts its commands, streams its mailbox
    (events file and FIFO) and reports its counters, all without the full agent; exec then loads that."""
    import time

    from nestbed.agent.store import Store
    from nestbed.realize.state import experiment
    name = experiments.up("""\
        nodes:
          a: {}
          vm1:
            kind: qemu
            commands:
              - "echo started > /run/started-by-command; nestbed-event booted '{\\"n\\": 1}'"
        links:
          - {ends: [a, vm1], bandwidth: 50Mbit}
        """)
    store = Store(experiment(name).directory / "control.sqlite")
    console = (state_dir(name) / "vms" / "vm1" / "console.log")
    assert "nestbed-agent: vm1 ready" in console.read_text(errors="replace")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(e["name"] == "booted" for e in store.events()):
        time.sleep(0.1)
    assert any(e["name"] == "booted" and e["source"] == "vm1" and e["data"] == {"n": 1} for e in store.events())
    exec_in(name, "a", "ping", "-c3", "-i0.2", "vm1")
    deadline = time.monotonic() + 10
    rows: list = []
    while time.monotonic() < deadline:
        _, rows = store.latest_counters()
        if any(r.node == "vm1" and r.iface == "eth0" and r.rx_packets >= 3 for r in rows):
            break
        time.sleep(0.3)
    assert any(r.node == "vm1" and r.iface == "eth0" and r.rx_packets >= 3 for r in rows), rows
    assert exec_in(name, "vm1", "cat", "/run/started-by-command").stdout.strip() == "started"
    out = Path(experiments.tmp) / "files"          # a file that exists only in the guest's memory
    nestbed("collect", name, "/run/started-by-command", "--node", "vm1", "-o", str(out))
    assert (out / "vm1/run/started-by-command").read_text().strip() == "started"
    qdisc = exec_in(name, "vm1", "tc", "qdisc", "show", "dev", "eth0").stdout
    assert "htb" in qdisc                                   # shaping compiled on the host, applied in the guest
    exec_in(name, "vm1", "sh", "-c", "echo fifo-event > $NESTBED_MAILBOX/events.fifo; "
            "echo 'not json {' >> $NESTBED_MAILBOX/events.jsonl; "
            "echo '{\"record\": \"probe\", \"data\": {\"ok\": true}}' >> $NESTBED_MAILBOX/events.jsonl")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (store.records("probe")
                                               and any(e["name"] == "fifo-event" for e in store.events())):
        time.sleep(0.1)
    assert store.records("probe")[0]["node"] == "vm1"
    assert any(e["name"] == "fifo-event" and e["source"] == "vm1" for e in store.events())


def test_two_experiments_whose_names_give_the_same_control_subnet_both_come_up(experiments):
    import uuid
    import zlib
    first = experiments.name("cc")
    while True:                       # a second name with the same CRC byte: the same default control subnet
        second = f"cd{uuid.uuid4().hex[:6]}"
        if zlib.crc32(second.encode()) & 0xFF == zlib.crc32(first.encode()) & 0xFF:
            break
    experiments.names.append(second)
    topology = "nodes:\n  a: {control: true}\n  b: {control: true}\nlinks:\n  - {ends: [a, b]}\n"
    experiments.up(topology, first)
    experiments.up(topology, second)
    subnets = [json.loads((state_dir(n) / "plan.json").read_text())["control"]["subnet"]
               for n in (first, second)]
    assert subnets[0] != subnets[1], subnets
    for name in (first, second):
        exec_in(name, "a", "ping", "-c1", "-W3", f"b.{name}.nestbed")     # nickname → its own control address
        hosts = exec_in(name, "a", "cat", "/etc/hosts").stdout
        prefix = json.loads((state_dir(name) / "plan.json").read_text())["control"]["subnet"][:-4]
        assert re.search(rf"^{re.escape(prefix)}\d+\s+b\.{name}\.nestbed", hosts, re.M), hosts


def test_dscp_marked_traffic_is_counted_as_attack_inside_a_vhost(experiments):
    """Processes in a vhost count attack traffic apart, as on the host: the guest agent loads nf_tables and
    installs the DSCP counters on its first counters request (the CATCH demo's target and routers run there)."""
    import time

    from nestbed.agent.attack_counters import ATTACK_TOS
    from nestbed.agent.store import Store
    from nestbed.realize.state import experiment
    name = experiments.up("""\
        nodes:
          a: {}
          b: {}
        links:
          - {ends: [a, b]}
        embed: {processes_in: qemu}
        """)
    store = Store(experiment(name).directory / "control.sqlite")

    def attack(node: str) -> int:
        _, rows = store.latest_counters()
        return sum(r.attack_rx_packets for r in rows if r.node == node)

    deadline = time.monotonic() + 20                   # the agent's first counters request installs them
    while time.monotonic() < deadline and not any(r.node == "b" for r in store.latest_counters()[1]):
        time.sleep(0.3)
    time.sleep(2.0)                                    # the sample after the install
    before = attack("b")
    exec_in(name, "a", "ping", "-c4", "-i0.2", "-Q", hex(ATTACK_TOS), "b")
    exec_in(name, "a", "ping", "-c3", "-i0.2", "b")                           # unmarked: not attack
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and attack("b") - before < 4:
        time.sleep(0.3)
    assert attack("b") - before == 4
