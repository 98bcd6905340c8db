"""Where each link-creating message is sent from, so that the plan's fixed ifindexes work on older kernels too.

Links are created from one socket in this host's own namespace, each directly in its namespace (IFLA_NET_NS_FD),
with the plan's ifindex in the message header (realize/apply.py). Before Linux 6.15 the kernel looked that header
ifindex (or, without one, the name) up in the *sender's* namespace before creating anything, and answered EEXIST
(NLM_F_EXCL) when a device of the sender had it, whatever the target namespace held: `__rtnl_newlink` called
`__dev_get_by_index(sock_net(skb->sk), ifm->ifi_index)`. Commit ec061546c6cf ("rtnetlink: Lookup device in
target netns when creating link", Xiao Liang, net-next 2025-02, first released in 6.15) looks it up in the target
namespace when NLM_F_CREATE|NLM_F_EXCL are set. Only the header's device is affected: a veth peer's ifindex
(VETH_INFO_PEER) was always checked by register_netdevice in the peer's own namespace.

So on an older kernel (Debian 12's 6.1), a link whose header ifindex is taken in the sender's namespace (a real
host's root namespace holds lo, eth0, … at small indexes; an emulated host's holds lo and ul0) is sent instead from
a socket inside its own namespace, where the lookup finds what it should. A VXLAN device cannot be: its UDP socket
is opened in the sending namespace, which must be the underlay's; it gets the first ifindex free in both
namespaces instead, and its FDB entries follow it. Everything else, and everything on a 6.15+ kernel, goes in the
one batch from the host's namespace as before.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from nestbed.plan.mechanisms.specs import NewLink

FIXED_IN = (6, 15)      # the first release that looks a new link's header ifindex up in its target namespace


def sender_checks_ifindex(release: str) -> bool:
    """Whether a kernel of this release (os.uname().release, e.g. "6.1.0-28-amd64") checks a new link's header
    ifindex against the sender's namespace. A release it cannot read is taken as old: that only costs batches."""
    found = re.match(r"(\d+)\.(\d+)", release)
    if found is None:
        return True
    return (int(found.group(1)), int(found.group(2))) < FIXED_IN


@dataclass
class Sends:
    """The links in the one batch from the host's namespace, those sent from inside their own namespace (by
    namespace), and the VXLAN devices that got another ifindex: (netns, planned) → given."""
    from_host: list[NewLink] = field(default_factory=list)
    inside: dict[str, list[NewLink]] = field(default_factory=dict)
    moved: dict[tuple[str, int], int] = field(default_factory=dict)


def plan_sends(links: list[NewLink], sender_taken: set[int] | None) -> Sends:
    """`sender_taken`: the ifindexes of the sending namespace when the kernel checks them (None: it does not)."""
    sends = Sends()
    if sender_taken is None:
        sends.from_host = list(links)
        return sends
    planned: dict[str, set[int]] = {}
    for link in links:
        planned.setdefault(link.netns, set()).add(link.ifindex)
        if link.peer is not None:
            planned.setdefault(link.peer.netns, set()).add(link.peer.ifindex)
    for link in links:
        if link.ifindex <= 0 or link.ifindex not in sender_taken:
            sends.from_host.append(link)
        elif link.kind == "vxlan":
            given = _free(link.ifindex, sender_taken | planned[link.netns])
            planned[link.netns].add(given)
            sends.moved[(link.netns, link.ifindex)] = given
            sends.from_host.append(replace(link, ifindex=given))
        else:
            sends.inside.setdefault(link.netns, []).append(link)
    return sends


def _free(start: int, taken: set[int]) -> int:
    index = start
    while index in taken:
        index += 1
    return index
