"""Fixed ifindexes on kernels before 6.15 (realize/linksender.py): the decision by release, which links leave the
host's batch (a header ifindex the sending namespace holds: sent from inside the link's own namespace; a VXLAN
device: the first ifindex free in both, its FDB following), and realize on a fake kernel that checks the sender's
namespace as those kernels do, whose root namespace holds links at small indexes like a real host's."""
from __future__ import annotations

import errno

import pytest
from fake_kernel import HOST, FakeKernel, Link
from test_realize_apply import plan_of, realized
from test_vxlan_plan import UNDERLAY_INDEX, with_tunnel

from nestbed.plan.hostplan import VethEnd
from nestbed.plan.mechanisms.specs import NewLink
from nestbed.realize import linksender, netlink
from nestbed.realize.teardown import teardown


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("release, old", [
    ("6.1.0-28-amd64", True),           # Debian 12
    ("5.10.229+debug+", True), ("6.14.11-300.fc42.x86_64", True),
    ("6.15.0", False),                  # ec061546c6cf
    ("6.18.1-arch1-1", False), ("7.2.0-rc4", False), ("10.0", False),
    ("unknown", True),                  # unreadable: old, which only costs batches
])
def test_which_kernels_check_the_senders_namespace(release, old):
    assert linksender.sender_checks_ifindex(release) is old


def links() -> list[NewLink]:
    return [NewLink("bridge", "sw", "br0", 2, "bridge br0"),
            NewLink("veth", "a", "eth0", 3, "veth a", peer=VethEnd("sw", "p0", 4)),
            NewLink("veth", "b", "eth0", 60, "veth b", peer=VethEnd("sw", "p1", 5)),
            NewLink("vxlan", "sw", "vx0", 6, "vxlan vx0")]


def test_a_new_kernel_sends_everything_from_the_host():
    sends = linksender.plan_sends(links(), None)
    assert sends.from_host == links() and not sends.inside and not sends.moved


def test_an_old_kernel_sends_what_the_sender_holds_from_inside_and_moves_a_vxlan_to_a_free_index():
    sends = linksender.plan_sends(links(), sender_taken={1, 2, 3, 6, 7})       # like a host's lo, eth0, …
    assert [link.name for link in sends.inside["sw"]] == ["br0"]
    assert [link.name for link in sends.inside["a"]] == ["eth0"]
    assert [(link.netns, link.ifindex) for link in sends.from_host] == [("b", 60), ("sw", 8)]
    assert sends.moved == {("sw", 6): 8}         # 7 is the sender's, 4 and 5 are the switch's own ports


def host_like_kernel(**kwargs) -> FakeKernel:
    """A fake whose root namespace holds lo, ul0 and 40 more links at ifindexes 2…42, like a busy host's."""
    kernel = FakeKernel(**kwargs)
    for index in range(2, 43):
        kernel.namespaces[HOST].links[index] = Link(f"host{index}", "physical")
    kernel.namespaces[HOST].links[UNDERLAY_INDEX] = Link("ul0", "veth")
    return kernel


def test_an_old_kernel_without_the_rerouting_refuses_the_plans_ifindexes(root, monkeypatch):
    """The fake checks as those kernels do: the one batch from the host fails at once."""
    monkeypatch.setattr(linksender, "plan_sends",
                        lambda links, taken: linksender.Sends(from_host=list(links)))
    with pytest.raises(netlink.NetlinkError) as caught:
        realized(host_like_kernel(old_kernel=True), with_tunnel(plan_of("ok1")))
    assert caught.value.code == errno.EEXIST and "sending namespace" in str(caught.value)


def test_an_old_kernel_realizes_the_plan_with_its_ifindexes_and_teardown_leaves_nothing(root):
    plan = with_tunnel(plan_of("ok2"))
    kernel = host_like_kernel(old_kernel=True)
    state = realized(kernel, plan)
    for node in plan.local_nodes:                      # every interface at the plan's ifindex, in its namespace
        for iface in node.interfaces:
            assert kernel.namespaces[node.netns].links[iface.ifindex].name == iface.name
    for b in plan.bridges:
        assert kernel.namespaces[b.netns].links[b.ifindex].name == b.name
    vx = plan.vxlans[0]
    switch = kernel.namespaces[vx.netns]
    given = next(i for i, link in switch.links.items() if link.name == vx.name)
    assert given not in kernel.namespaces[HOST].links and given >= vx.ifindex   # free in both namespaces
    assert {(i, mac) for i, mac, _ in switch.fdb} == {(given, "00:00:00:00:00:00"), (given, "02:aa:00:00:00:01"),
                                                      (given, "02:aa:00:00:00:02")}   # the FDB followed it
    assert kernel.vnis[("", vx.port, vx.vni)] == (vx.netns, given)   # its UDP socket: the host's namespace
    inside = [where for where, _ in kernel.sent_from if where]
    assert inside and all(where in plan.link_netns_names for where in inside)
    teardown(state, kernel)
    assert kernel.objects() == {("link", HOST, link.name) for i, link in kernel.namespaces[HOST].links.items()
                                if i != 1}          # only the host's own links are left


def test_a_new_kernel_sends_one_batch_from_the_host_as_before(root):
    plan = with_tunnel(plan_of("ok3"))
    kernel = host_like_kernel()
    realized(kernel, plan)
    assert [where for where, _ in kernel.sent_from] == [""]            # bridges, veths and the VXLAN at once
    assert plan.vxlans[0].name in {link.name for link in kernel.namespaces[plan.vxlans[0].netns].links.values()}
