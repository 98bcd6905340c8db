"""The VXLAN mechanism without root: its plan data round-trips, realize journals it after the bridges and makes it
after them, its messages say what the kernel needs (decoded here, and byte for byte what pyroute2 encodes), a VNI
in use is one clear line, and teardown needs nothing of its own."""
from __future__ import annotations

import dataclasses
import errno
import json
import socket
import struct

import pytest
from fake_kernel import HOST, FakeKernel, Link
from pyroute2.netlink.rtnl import RTM_NEWLINK, RTM_NEWNEIGH
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from test_realize_apply import plan_of, realized

from nestbed import netlinkwire as wire
from nestbed.errors import NestbedError, PreflightError
from nestbed.plan import mechanisms
from nestbed.plan.hostplan import HostPlan, VxlanPlan
from nestbed.plan.mechanisms import vxlan
from nestbed.plan.mechanisms.specs import FdbEntry, JoinBridge, NewLink
from nestbed.realize import apply, netlink
from nestbed.realize.teardown import teardown

UNDERLAY_INDEX = 7


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    return tmp_path


def with_tunnel(plan: HostPlan, vni: int = 70000, mtu: int | None = 1450) -> HostPlan:
    """The plan with its LAN spanning hosts: a VXLAN on its root bridge, two peers, remote members' MACs, and
    (as compile does for a lowered segment) the MTU on the LAN's members."""
    root_bridge = plan.bridges[0]
    plan.vxlans.append(VxlanPlan(
        segment=root_bridge.segment, netns=root_bridge.netns, name=vxlan.device_name(0),
        ifindex=vxlan.next_ifindex(plan, root_bridge), master=root_bridge.ifindex, vni=vni, local="10.250.0.1",
        underlay="ul0", port=vxlan.DEFAULT_PORT, peers=["10.250.0.2", "10.250.0.3"],
        remote_macs=[("02:aa:00:00:00:01", "10.250.0.2"), ("02:aa:00:00:00:02", "10.250.0.3")],
        mtu=1500 - vxlan.HEADROOM))
    if mtu is not None:
        for node in plan.nodes:
            node.interfaces = [dataclasses.replace(i, mtu=mtu) if i.segment == root_bridge.segment else i
                               for i in node.interfaces]
    return plan


def underlay_kernel(**kwargs) -> FakeKernel:
    kernel = FakeKernel(**kwargs)
    kernel.namespaces[HOST].links[UNDERLAY_INDEX] = Link("ul0", "veth")
    return kernel


def attrs_of(data: bytes, start: int, end: int | None = None) -> dict[int, bytes]:
    return {kind: data[a:b] for kind, (a, b) in wire.attributes(data, start, len(data) if end is None else end).items()}


# -- plan data ----------------------------------------------------------------------------------------------------
def test_json_round_trip_keeps_vxlans_and_mtus():
    plan = with_tunnel(plan_of())
    again = HostPlan.from_json(plan.to_json())
    assert again == plan
    assert again.vxlans[0].remote_macs[0] == ("02:aa:00:00:00:01", "10.250.0.2")     # tuples, as made
    assert {i.mtu for n in again.nodes for i in n.interfaces if i.segment == "lan0"} == {1450}


def test_a_plan_without_the_new_keys_loads():
    data = json.loads(plan_of().to_json())
    del data["vxlans"]
    for node in data["nodes"]:
        for iface in node["interfaces"]:
            del iface["mtu"]
    old = HostPlan.from_dict(data)
    assert old.vxlans == [] and all(i.mtu is None for n in old.nodes for i in n.interfaces)


def test_next_ifindex_follows_everything_in_the_switch_namespace():
    plan = plan_of()
    root_bridge = plan.bridges[0]
    ports = [end.ifindex for v in plan.veths for end in (v.a, v.b) if end.netns == root_bridge.netns]
    assert len(ports) == 3                                    # a, b, r1 on lan0
    assert vxlan.next_ifindex(plan, root_bridge) == max(ports + [root_bridge.ifindex]) + 1
    with_tunnel(plan)
    assert vxlan.next_ifindex(plan, root_bridge) == plan.vxlans[0].ifindex + 1
    empty = HostPlan("e", "h", bridges=[root_bridge])
    assert vxlan.next_ifindex(empty, root_bridge) == root_bridge.ifindex + 1


# -- mechanism order ----------------------------------------------------------------------------------------------
def test_entries_and_links_put_the_tunnel_after_the_bridges_and_veths():
    plan = with_tunnel(plan_of())
    v = plan.vxlans[0]
    entries = mechanisms.entries(plan)
    assert [e["t"] for e in entries] == ["bridge"] * len(plan.bridges) + ["veth"] * len(plan.veths) + ["vxlan"]
    assert entries[-1] == {"t": "vxlan", "netns": v.netns, "name": "vx0", "vni": 70000}
    links = mechanisms.links(plan)
    kinds = [link.kind if isinstance(link, NewLink) else type(link).__name__ for link in links]
    assert kinds == ["bridge"] * len(plan.bridges) + ["veth"] * len(plan.veths) + ["vxlan"] + ["FdbEntry"] * 4
    device = links[len(plan.bridges) + len(plan.veths)]
    assert isinstance(device, NewLink) and (device.netns, device.ifindex, device.master, device.mtu, device.up) \
        == (v.netns, v.ifindex, v.master, 1450, True)
    fdbs = [link for link in links if isinstance(link, FdbEntry)]
    assert [(f.mac, f.dst, f.append) for f in fdbs] == [
        (vxlan.FLOOD_MAC, "10.250.0.2", True), (vxlan.FLOOD_MAC, "10.250.0.3", True),
        ("02:aa:00:00:00:01", "10.250.0.2", False), ("02:aa:00:00:00:02", "10.250.0.3", False)]
    assert all((f.netns, f.ifindex) == (v.netns, v.ifindex) for f in fdbs)
    assert not any(isinstance(link, JoinBridge) for link in links)


def test_member_mtu_goes_on_both_ends_of_its_veth_only():
    plan = with_tunnel(plan_of())
    lowered = {(n.netns, i.name) for n in plan.nodes for i in n.interfaces if i.mtu}
    for link in mechanisms.links(plan):
        if isinstance(link, NewLink) and link.kind == "veth":
            assert link.peer is not None
            ends = {(link.netns, link.name), (link.peer.netns, link.peer.name)}
            assert link.mtu == (1450 if ends & lowered else None)
            message = netlink.veth(link.name, link.ifindex, 3, link.peer.name, link.peer.ifindex, 4, mtu=link.mtu)
            outer = attrs_of(message, 32)
            peer = attrs_of(attrs_of(attrs_of(outer[wire.IFLA_LINKINFO], 0)[netlink.IFLA_INFO_DATA], 0)
                            [netlink.VETH_INFO_PEER], 16)
            for found in (outer, peer):
                assert (struct.unpack("=I", found[netlink.IFLA_MTU])[0] if netlink.IFLA_MTU in found else None) \
                    == link.mtu


def test_removals_are_nothing_the_switch_namespace_takes_it():
    plan = with_tunnel(plan_of())
    assert mechanisms.removals(mechanisms.entries(plan)) == []
    assert mechanisms.BY_ENTRY["vxlan"] is vxlan


# -- the messages -------------------------------------------------------------------------------------------------
def test_vxlan_message_decodes_to_what_the_kernel_needs():
    message = netlink.vxlan("vx3", 9, 41, vni=0xABCDEF, local="10.250.0.1", underlay=UNDERLAY_INDEX, port=4789,
                            mtu=1450, master=2)
    length, kind, flags, _seq, _pid = wire.HEADER.unpack_from(message)
    assert (length, kind) == (len(message), wire.RTM_NEWLINK)
    assert flags == wire.NLM_F_REQUEST | wire.NLM_F_CREATE | wire.NLM_F_EXCL | wire.NLM_F_ACK
    _family, _type, ifindex, up, change = wire.IFINFO.unpack_from(message, 16)
    assert (ifindex, up, change) == (9, wire.IFF_UP, wire.IFF_UP)
    top = attrs_of(message, 32)
    assert top[wire.IFLA_IFNAME] == b"vx3\0"
    assert struct.unpack("=I", top[wire.IFLA_NET_NS_FD]) == (41,)
    assert struct.unpack("=I", top[netlink.IFLA_MTU]) == (1450,)
    assert struct.unpack("=I", top[wire.IFLA_MASTER]) == (2,)
    info = attrs_of(top[wire.IFLA_LINKINFO], 0)
    assert info[netlink.IFLA_INFO_KIND] == b"vxlan\0"
    data = attrs_of(info[netlink.IFLA_INFO_DATA], 0)
    assert struct.unpack("=I", data[netlink.IFLA_VXLAN_ID]) == (0xABCDEF,)
    assert struct.unpack("=I", data[netlink.IFLA_VXLAN_LINK]) == (UNDERLAY_INDEX,)
    assert socket.inet_ntoa(data[netlink.IFLA_VXLAN_LOCAL]) == "10.250.0.1"
    assert data[netlink.IFLA_VXLAN_LEARNING] == b"\0"
    assert data[netlink.IFLA_VXLAN_PORT] == bytes([0x12, 0xB5])          # 4789, network byte order


def test_vxlan_message_is_what_pyroute2_encodes():
    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["change"] = 9, IFF_UP, IFF_UP
    msg["attrs"] = [("IFLA_IFNAME", "vx3"), ("IFLA_NET_NS_FD", 41), ("IFLA_MTU", 1450), ("IFLA_MASTER", 2),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": [
                        ("IFLA_VXLAN_ID", 70001), ("IFLA_VXLAN_LINK", 7), ("IFLA_VXLAN_LOCAL", "10.250.0.1"),
                        ("IFLA_VXLAN_LEARNING", 0), ("IFLA_VXLAN_PORT", 4789)]})]})]
    assert netlink.vxlan("vx3", 9, 41, 70001, "10.250.0.1", 7, 4789, 1450, 2) == netlink._encoded(msg, RTM_NEWLINK)


@pytest.mark.parametrize("append", [True, False])
def test_fdb_entry_is_what_bridge_fdb_sends(append):
    mac = vxlan.FLOOD_MAC if append else "02:aa:00:00:00:01"
    message = netlink.fdb_entry(12, mac, "10.250.0.2", append)
    _length, kind, flags, _seq, _pid = wire.HEADER.unpack_from(message)
    assert kind == netlink.RTM_NEWNEIGH
    # bridge fdb append: NLM_F_CREATE|NLM_F_APPEND; bridge fdb add: NLM_F_CREATE|NLM_F_EXCL (iproute2 bridge/fdb.c)
    assert flags == wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.NLM_F_CREATE | (
        netlink.NLM_F_APPEND if append else wire.NLM_F_EXCL)
    family, ifindex, state, ntf, _type = struct.unpack_from("=BxxxiHBB", message, 16)
    assert (family, ifindex, ntf) == (socket.AF_BRIDGE, 12, netlink.NTF_SELF)
    assert state == netlink.NUD_NOARP | netlink.NUD_PERMANENT       # `permanent`, as iproute2 assumes
    found = attrs_of(message, 28)
    assert found[netlink.NDA_LLADDR] == bytes.fromhex(mac.replace(":", ""))
    assert socket.inet_ntoa(found[netlink.NDA_DST]) == "10.250.0.2"
    msg = ndmsg()
    msg["family"], msg["ifindex"], msg["state"], msg["flags"] = socket.AF_BRIDGE, 12, state, netlink.NTF_SELF
    msg["attrs"] = [("NDA_LLADDR", mac), ("NDA_DST", "10.250.0.2")]
    assert message == netlink._encoded(msg, RTM_NEWNEIGH, flags)


# -- realize and teardown on the fake kernel ---------------------------------------------------------------------
def test_realize_journals_then_makes_the_device_in_the_switch_namespace_and_its_fdb(root):
    kernel = underlay_kernel()
    plan = with_tunnel(plan_of())
    v = plan.vxlans[0]
    state = realized(kernel, plan)
    switch = kernel.namespaces[v.netns]
    device = switch.links[v.ifindex]
    assert (device.name, device.kind, device.master, device.up) == ("vx0", "vxlan", v.master, True)
    assert switch.fdb == {(v.ifindex, mac, dst) for mac, dst in [
        (vxlan.FLOOD_MAC, "10.250.0.2"), (vxlan.FLOOD_MAC, "10.250.0.3"),
        ("02:aa:00:00:00:01", "10.250.0.2"), ("02:aa:00:00:00:02", "10.250.0.3")]}
    assert [link.name for link in kernel.namespaces[HOST].links.values()] == ["lo", "ul0"]    # nothing added
    entries = state.journal.entries()
    journaled_at = next(k for k, e in enumerate(entries) if e["t"] == "vxlan") + 1
    made_at = next(count for key, count in kernel.log if key == ("link", v.netns, "vx0"))
    assert journaled_at <= made_at
    fdb_made = [count for key, count in kernel.log if key[0] == "fdb"]
    assert len(fdb_made) == 4 and min(fdb_made) >= made_at

    teardown(state, kernel)
    assert set(kernel.namespaces) == {HOST} and kernel.objects() == {("link", HOST, "ul0")}


def test_a_vni_in_use_on_the_host_is_one_line_and_rolls_back_only_its_own(root):
    kernel = underlay_kernel()
    first = realized(kernel, with_tunnel(plan_of("fk"), vni=70000))
    mine = kernel.objects()
    second = with_tunnel(plan_of("fl"), vni=70000)
    with pytest.raises(NestbedError) as raised:
        realized(kernel, second)
    assert str(raised.value) == f"vxlan vni 70000 is in use on host {second.host} (another experiment?)"
    assert "\n" not in str(raised.value)
    from nestbed.realize.state import experiment
    teardown(experiment("fl"), kernel)
    assert kernel.objects() == mine
    teardown(first, kernel)


def test_another_port_or_another_host_namespace_may_reuse_the_vni(root):
    kernel = underlay_kernel()
    realized(kernel, with_tunnel(plan_of("fk"), vni=70000))
    other = with_tunnel(plan_of("fl"), vni=70000)
    other.vxlans[0] = dataclasses.replace(other.vxlans[0], port=8472)
    realized(kernel, other)                                      # a different UDP socket: allowed
    assert kernel.namespaces[other.vxlans[0].netns].links[other.vxlans[0].ifindex].kind == "vxlan"


def test_a_missing_underlay_is_one_line_before_anything_is_made(root):
    kernel = FakeKernel()                                        # no ul0 on this "host"
    plan = with_tunnel(plan_of())
    with pytest.raises(PreflightError, match=r"^host local has no interface 'ul0', the underlay of segment lan0's "
                                             r"VXLAN$"):
        realized(kernel, plan)
    assert kernel.log == [] and set(kernel.namespaces) == {HOST}


def test_the_vni_line_names_only_an_eexist_of_a_vxlan():
    plan = with_tunnel(plan_of())
    new = [link for link in mechanisms.links(plan) if isinstance(link, NewLink)]
    device = next(k for k, link in enumerate(new) if link.kind == "vxlan")
    exists = netlink.NetlinkError("x", errno.EEXIST, device)
    assert str(apply._vni_in_use(exists, new, "emu1")) == "vxlan vni 70000 is in use on host emu1 (another experiment?)"
    assert apply._vni_in_use(netlink.NetlinkError("x", errno.EEXIST, 0), new, "h") is None         # a bridge's
    assert apply._vni_in_use(netlink.NetlinkError("x", errno.ENODEV, device), new, "h") is None
    assert apply._vni_in_use(netlink.NetlinkError("x"), new, "h") is None
