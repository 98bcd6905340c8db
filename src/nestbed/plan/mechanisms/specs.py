"""What a link mechanism asks realize to make: plain data, encoded to rtnetlink by realize/apply.py."""
from __future__ import annotations

from dataclasses import dataclass

from nestbed.plan.hostplan import VethEnd, VxlanPlan

FIRST_IFINDEX = 2              # 1 is lo in every namespace


@dataclass(frozen=True)
class NewLink:
    """A link created directly in its namespace, with the ifindex the plan gave it (one message of a batch)."""
    kind: str                  # the encoder realize uses: "bridge" | "veth" | "vxlan"
    netns: str
    name: str
    ifindex: int
    purpose: str               # for error messages: "veth a:eth0 <-> b:eth0"
    mac: str | None = None
    master: int | None = None  # ifindex of the bridge it joins (same namespace)
    up: bool = False
    peer: VethEnd | None = None    # a veth's other end (created down: the kernel refuses a peer created up)
    peer_mac: str | None = None
    mtu: int | None = None     # both ends of a veth; None: the kernel's default
    tunnel: VxlanPlan | None = None    # a vxlan's VNI, addresses, underlay and port


@dataclass(frozen=True)
class FdbEntry:
    """A VXLAN forwarding entry: frames to `mac` (all zero: every broadcast and unknown one) go to `dst`.
    Sent from a socket in the device's namespace once the device exists."""
    netns: str
    ifindex: int               # the VXLAN device
    mac: str
    dst: str                   # the peer host's underlay address
    append: bool               # one more destination for the same MAC (the all-zero entries), not a new MAC
    purpose: str


@dataclass(frozen=True)
class JoinBridge:
    """A link that exists joins a bridge and comes up: sent from a socket in its namespace."""
    netns: str
    name: str
    ifindex: int
    master: int


@dataclass(frozen=True)
class DeleteLink:
    """A link teardown must delete itself (one that does not go with an experiment namespace)."""
    netns: str                 # "" for the host's own namespace
    name: str
