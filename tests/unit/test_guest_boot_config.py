"""The qemu node's boot configuration compiled on the host (realize/bootconfig.py) and the pure parts of the
VM's boot agent (agent/guestboot.py): its JSON without the json package, its mailbox line splitting."""
from __future__ import annotations

import json

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from nestbed.agent import guestboot, guestsys, mailbox
from nestbed.plan.hostplan import HostPlan, InterfacePlan, NodePlan, RoutePlan, ShapingPlan, TapPlan, VmPlan
from nestbed.realize import bootconfig, mailboxes


def qemu_vm() -> VmPlan:
    node = NodePlan(name="vm1", kind="qemu", netns="", forwarding=True, commands=["echo hi"], vm="vm1",
                    interfaces=[InterfacePlan("eth0", 7, "lan0", "10.0.0.3/24", "52:54:00:00:00:11"),
                                InterfacePlan("eth1", 8, "link0", "10.0.1.1/24", "52:54:00:00:00:12",
                                              ShapingPlan(bandwidth=10_000_000))],
                    routes=[RoutePlan("10.0.9.0/24", "10.0.1.2", "eth1")])
    guest = HostPlan(experiment="lab", host="vm1", switch_namespaces=[], nodes=[node], segments=[], bridges=[],
                     veths=[], hosts_file="10.0.0.3 vm1\n", routing="static")
    # the TAPs in another order than the interfaces: the guest's NICs follow the TAPs
    taps = [TapPlan("nb-lab-s1", "t1", 3, "52:54:00:00:00:12", "link0"),
            TapPlan("nb-lab-s0", "t0", 3, "52:54:00:00:00:11", "lan0")]
    return VmPlan(name="vm1", kind="qemu", cpus=1, memory=256, control_address="172.30.1.2/24",
                  control_mac="52:54:00:00:00:10", taps=taps, guest=guest)


def decoded(config: dict) -> list[tuple[int, object, str]]:
    out = []
    for hexed, purpose in config["netlink"]:
        raw = bytes.fromhex(hexed)
        kind = int.from_bytes(raw[4:6], "little")
        msg = {16: ifinfmsg, 20: ifaddrmsg, 24: rtmsg}.get(kind)
        if msg is not None:
            parsed = msg(raw)
            parsed.decode()
            out.append((kind, parsed, purpose))
        else:
            out.append((kind, None, purpose))
    return out


def test_nics_are_predicted_in_qemu_order_control_first():
    config = bootconfig.boot_config(qemu_vm(), "/var/lib/nestbed/lab")
    assert config["nics"] == [["52:54:00:00:00:10", 2], ["52:54:00:00:00:12", 3], ["52:54:00:00:00:11", 4]]
    assert config["identity"] == "/var/lib/nestbed/lab/nodes/vm1"
    assert config["commands"] == ["echo hi"] and config["forwarding"] is True
    assert (config["mailbox_events"], config["mailbox_fifo"]) == (mailboxes.EVENTS, mailboxes.FIFO)
    assert guestboot.MAILBOX == mailboxes.MOUNTPOINT


def test_the_batch_renames_addresses_routes_and_shapes_by_predicted_ifindex():
    messages = decoded(bootconfig.boot_config(qemu_vm(), "/var/lib/nestbed/lab"))
    seqs = [int.from_bytes(bytes.fromhex(h)[8:12], "little") for h, _ in
            bootconfig.boot_config(qemu_vm(), "/var/lib/nestbed/lab")["netlink"]]
    assert seqs == list(range(1, len(seqs) + 1))              # acks name their message by it
    renames = [(m["index"], m.get_attr("IFLA_IFNAME")) for kind, m, _ in messages
               if kind == 16 and m.get_attr("IFLA_IFNAME")]
    assert renames[0] == (2, "ctl0")
    assert renames[-2:] == [(4, "eth0"), (3, "eth1")]         # temporary names first, then the plan's
    assert {name for _, name in renames[1:-2]} == {"nbtmp0", "nbtmp1"}
    addresses = {(m["index"], m.get_attr("IFA_LOCAL")) for kind, m, _ in messages if kind == 20}
    assert addresses == {(2, "172.30.1.2"), (4, "10.0.0.3"), (3, "10.0.1.1")}
    routes = [m for kind, m, _ in messages if kind == 24]
    assert [(r.get_attr("RTA_DST"), r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF")) for r in routes] == \
        [("10.0.9.0", "10.0.1.2", 3)]
    shaping = [(kind, purpose) for kind, _, purpose in messages if kind in (36, 40)]   # qdisc, class
    assert shaping and all("eth1" in purpose for _, purpose in shaping)
    assert all(int.from_bytes(bytes.fromhex(h)[20:24], "little", signed=True) == 3
               for h, p in bootconfig.boot_config(qemu_vm(), "x")["netlink"] if "htb" in p)


def test_a_vhost_is_left_to_the_full_agent():
    vm = qemu_vm()
    vhost = VmPlan(name="vh0", kind="vhost", cpus=1, memory=256, control_address=vm.control_address,
                   control_mac=vm.control_mac, guest=vm.guest)
    assert bootconfig.boot_config(vhost, "/x") is None


def test_boot_agent_json_matches_the_json_package():
    value = {"a": [1, 2.5, "é\n\"", True, None, {"b": -3}], "c": ""}
    assert guestboot.loads(json.dumps(value)) == value
    assert json.loads(guestboot.dumps(value)) == value
    assert guestboot.loads(b'  {"x": 1}\n') == {"x": 1}
    for bad in ('{"x": 1} trailing', '{"x": }'):
        try:
            guestboot.loads(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_boot_agent_mailbox_keeps_complete_lines_only():
    box = guestboot.Mailbox.__new__(guestboot.Mailbox)      # no watcher threads: just the line keeping
    import threading
    box.node, box.messages, box.changed = "vm1", [], threading.Condition()
    rest = box._add(b'{"event": "a"}\n\nb')
    assert (box.messages, rest) == ([{"seq": 1, "node": "vm1", "line": '{"event": "a"}'}], b"b")
    rest = box._add(rest + b"ravo\n")
    assert (box.messages[-1], rest) == ({"seq": 2, "node": "vm1", "line": "bravo"}, b"")
    assert mailbox.parse_line(box.messages[-1]["line"]) == ("event", "bravo", None, None)   # what the host agent does


def test_follow_sends_the_backlog_then_what_comes():
    import threading
    items, changed, got = ["a", "b"], threading.Condition(), []

    def send(item):
        got.append(item)
        if len(got) == 3:
            raise OSError("gone")                 # the other side went away: follow ends with it

    def later():
        with changed:
            items.append("c")
            changed.notify_all()
    threading.Timer(0.05, later).start()
    try:
        guestsys.follow(changed, items, 0, send)
    except OSError:
        pass
    assert got == ["a", "b", "c"]


def test_interface_counters_read_sys(tmp_path):
    rows = guestboot.interface_counters("me")
    assert all(row["node"] == "me" and row["iface"] != "lo" for row in rows)
    assert all(isinstance(row[key], int) for row in rows for key in guestboot.COUNTERS)


def test_boot_agent_leaves_a_guest_whose_nics_are_elsewhere_to_the_full_agent(tmp_path, monkeypatch):
    credential = tmp_path / "credential"
    credential.write_text("secret\n")
    config = {"vm": {"name": "vm1"}, "credential_file": str(credential),
              "boot": bootconfig.boot_config(qemu_vm(), "/var/lib/nestbed/lab")}
    calls = []
    agent = guestboot.BootAgent(config)
    monkeypatch.setattr(agent, "full_agent", lambda configure=False: calls.append(("full", configure)))
    monkeypatch.setattr(agent, "_configure_qemu_node", lambda boot: calls.append(("boot", None)))
    # a kernel that made a tunnel device first: every NIC one ifindex later than the host expected
    monkeypatch.setattr(guestboot, "nics_by_mac", lambda: {mac: index + 1 for mac, index in config["boot"]["nics"]})
    agent.configure()
    assert calls == [("full", True)] and agent.ready and not agent.light
    calls.clear()
    monkeypatch.setattr(guestboot, "nics_by_mac", lambda: dict(config["boot"]["nics"]))
    agent = guestboot.BootAgent(config)
    monkeypatch.setattr(agent, "_configure_qemu_node", lambda boot: calls.append(("boot", None)))
    agent.configure()
    assert calls == [("boot", None)] and agent.light and agent.credential == "secret"
