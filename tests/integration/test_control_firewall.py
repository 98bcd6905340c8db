"""The control network reaches no host service and no other network; its firewall and links go at down, and only
what carries the experiment's mark goes. Traffic stays on the tests' own bridges and namespaces."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import uuid

from conftest import exec_in, nestbed, state_dir
from nestbed.realize import firewall

CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); print('connected')"


class Listener:
    """A TCP server on the host, counting the connections it accepts."""

    def __init__(self, address: str):
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def control_of(name: str) -> dict:
    return json.loads((state_dir(name) / "plan.json").read_text())["control"]


def bridge_of(name: str) -> str:
    return json.loads((state_dir(name) / "status.json").read_text())["control_bridge"]


def tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


def refused(name: str, node: str, address: str, port: int) -> bool:
    tried = exec_in(name, node, "python3", "-c", CONNECT, address, str(port), check=False, timeout=120)
    return tried.returncode != 0 and "connected" not in tried.stdout


def test_a_vm_and_a_control_node_reach_no_host_service_while_the_agents_work(experiments):
    name = experiments.up("""\
        nodes:
          a: {control: true}
          b: {control: true}
          vm1: {kind: qemu}
        lans:
          lan0: {members: [a, b, vm1]}
        """)
    host = control_of(name)["host_address"].split("/")[0]
    assert f"table inet {firewall.table_name(name)}" in tables()
    on_control, anywhere = Listener(host), Listener("0.0.0.0")
    try:
        with socket.create_connection((host, on_control.port), timeout=2):    # the listeners work from the host
            pass
        for node in ("a", "vm1"):
            assert refused(name, node, host, on_control.port), node
            assert refused(name, node, host, anywhere.port), node
            assert exec_in(name, node, "ping", "-c1", "-W1", host, check=False).returncode != 0, node
        assert on_control.accepted == 1 and anywhere.accepted == 0
    finally:
        on_control.close()
        anywhere.close()
    # the agents still work: the host connects to the guest agent; within the control network all is switched
    assert exec_in(name, "vm1", "hostname").stdout.strip() == "vm1"
    exec_in(name, "a", "ping", "-c1", "-W3", f"vm1.{name}.nestbed")
    exec_in(name, "vm1", "ping", "-c1", "-W3", f"b.{name}.nestbed")
    a_control = exec_in(name, "a", "ip", "-o", "-4", "addr", "show", "dev", "ctl0").stdout.split()[3].split("/")[0]
    assert subprocess.run(["ping", "-c1", "-W2", a_control], capture_output=True).returncode == 0   # host-opened
    nestbed("down", name)
    assert firewall.table_name(name) not in tables()


def test_two_experiments_control_networks_cannot_reach_each_other(experiments):
    topology = "nodes:\n  a: {control: true}\n"
    first, second = experiments.up(topology), experiments.up(topology)
    theirs = control_of(second)
    their_host = theirs["host_address"].split("/")[0]
    listener = Listener("0.0.0.0")
    try:
        # a of the first experiment routes to the second's subnet through its host address (it is root there)
        exec_in(first, "a", "ip", "route", "add", theirs["subnet"], "via", control_of(first)["host_address"][:-3])
        assert refused(first, "a", their_host, listener.port)           # the host's address on the other bridge
        assert listener.accepted == 0
    finally:
        listener.close()
    their_a = exec_in(second, "a", "ip", "-o", "-4", "addr", "show", "dev", "ctl0").stdout.split()[3].split("/")[0]
    assert exec_in(first, "a", "ping", "-c1", "-W1", their_a, check=False).returncode != 0


def test_the_forward_rules_stop_routing_between_control_networks(tmp_path):
    """Two control bridges in a namespace of their own that forwards (the host's ip_forward is left alone): a
    client on each pings the other through it until the two experiments' tables are loaded."""
    run = uuid.uuid4().hex[:6]
    hostns, clients = f"nbfw{run}", [f"nbfw{run}.a", f"nbfw{run}.b"]

    def sh(*command: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        return subprocess.run(prefix + list(command), capture_output=True, text=True, check=check)

    try:
        for ns in [hostns, *clients]:
            sh("ip", "netns", "add", ns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=hostns)
        scripts = []
        for k, client in enumerate(clients):
            bridge, port, subnet = f"nbfwbr{k}", f"nbfwp{k}.0", f"172.30.{250 + k}"
            sh("ip", "link", "add", bridge, "type", "bridge", netns=hostns)
            sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge, netns=hostns)
            sh("ip", "link", "add", port, "netns", hostns, "type", "veth", "peer", "eth0", "netns", client)
            sh("ip", "link", "set", port, "master", bridge, "up", netns=hostns)
            sh("ip", "link", "set", bridge, "up", netns=hostns)
            sh("ip", "addr", "add", f"{subnet}.2/24", "dev", "eth0", netns=client)
            sh("ip", "link", "set", "eth0", "up", netns=client)
            sh("ip", "route", "add", "default", "via", f"{subnet}.1", netns=client)
            scripts.append(firewall.ruleset(f"nestbed-fw{k}", f"nestbed:fw{k}:0", bridge, [f"nbfwp{k}.*"],
                                            f"{subnet}.0/24", f"{subnet}.1"))

        def ping(source: str, target: str) -> bool:
            return sh("ping", "-c1", "-W1", target, netns=source, check=False).returncode == 0
        assert ping(clients[0], "172.30.251.2") and ping(clients[1], "172.30.250.2")     # routed: the path works
        assert ping(clients[0], "172.30.250.1")
        for script in scripts:
            loaded = subprocess.run(["ip", "netns", "exec", hostns, "nft", "-f", "-"], input=script, text=True,
                                    capture_output=True)
            assert loaded.returncode == 0, loaded.stderr
        assert not ping(clients[0], "172.30.251.2") and not ping(clients[1], "172.30.250.2")
        assert not ping(clients[0], "172.30.250.1") and not ping(clients[0], "172.30.251.1")
        assert ping(hostns, "172.30.250.2") and ping(hostns, "172.30.251.2")       # the host's own: replies pass
    finally:
        for ns in [*clients, hostns]:
            sh("ip", "netns", "del", ns, check=False)


def test_down_leaves_a_link_and_a_table_of_our_names_that_do_not_carry_our_mark(experiments):
    name = experiments.up("nodes:\n  a: {control: true}\n")
    bridge, table = bridge_of(name), firewall.table_name(name)
    try:
        # someone else's link and table by the same names, made after ours went
        subprocess.run(["ip", "link", "del", bridge], check=True)
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)
        subprocess.run(["nft", "-f", "-"], input=f'add table inet {table} {{ comment "not nestbed"; }}\n',
                       text=True, check=True)
        down = nestbed("down", name)
        assert f"left link {bridge}: it carries no mark" in down.stderr, down.stderr
        assert f"left nftables table inet {table}: it carries 'not nestbed'" in down.stderr, down.stderr
        assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode == 0
        assert f"table inet {table}" in tables()
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
