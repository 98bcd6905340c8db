"""Give every link and LAN a subnet and every member an address, honouring the addresses users fixed.

Subnets come from 10.0.0.0/8 in declaration order: a /24 per segment while that fits (readable: 10.0.3.2 is
member 2 of segment 3), the smallest subnet that holds the members otherwise.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from nestbed.errors import TopologyError
from nestbed.model.topology import Endpoint

POOL = ipaddress.IPv4Network("10.0.0.0/8")
READABLE_PREFIX = 24


@dataclass(frozen=True)
class SegmentAddresses:
    subnet: ipaddress.IPv4Network
    addresses: dict[str, ipaddress.IPv4Interface]   # node → address, in member order


def _prefix_for(members: int, readable: bool) -> int:
    bits = max(2, math.ceil(math.log2(members + 2)))
    prefix = 32 - bits
    return min(prefix, READABLE_PREFIX) if readable else prefix


def _fixed_subnet(name: str, kind: str, members: list[Endpoint]) -> ipaddress.IPv4Network | None:
    fixed = [m for m in members if m.ip is not None]
    if not fixed:
        return None
    subnet = fixed[0].ip.network  # type: ignore[union-attr]
    for member in fixed[1:]:
        if member.ip.network != subnet:  # type: ignore[union-attr]
            raise TopologyError(f"{kind} {name!r}: address {member.ip} of {member.node} is not in subnet {subnet} "
                                f"of {fixed[0].node}", member.location, "give all members of a segment one subnet")
    if subnet.num_addresses - 2 < len(members) and subnet.prefixlen < 31:
        raise TopologyError(f"{kind} {name!r}: subnet {subnet} holds {subnet.num_addresses - 2} hosts but the "
                            f"{kind} has {len(members)} members", fixed[0].location, "use a shorter prefix")
    return subnet


def allocate(segments: list[tuple[str, str, list[Endpoint]]], pinned_subnets: dict[str, str] | None = None,
             pinned_addresses: dict[str, dict[str, str]] | None = None,
             start: int = 0) -> dict[str, SegmentAddresses]:
    """segments: (name, kind, members with groups expanded), in declaration order. A running experiment's pins
    (plan/pins.py): its segments' subnets and members' addresses stay, unless the user fixed others; new subnets
    come from `start` on (past every subnet it ever had)."""
    pinned_subnets = pinned_subnets or {}
    pinned_addresses = pinned_addresses or {}
    fixed: dict[str, ipaddress.IPv4Network] = {}
    for name, kind, members in segments:
        subnet = _fixed_subnet(name, kind, members)
        if subnet is None and name in pinned_subnets:
            subnet = ipaddress.IPv4Network(pinned_subnets[name])
            if subnet.num_addresses - 2 < len(members) and subnet.prefixlen < 31:
                raise TopologyError(f"{kind} {name!r} has outgrown its subnet {subnet} ({len(members)} members)",
                                    members[0].location if members else None,
                                    "give it a larger subnet yourself, or take the experiment down and up")
        if subnet is None:
            continue
        for other, other_subnet in fixed.items():
            if subnet.overlaps(other_subnet):
                location = next(m.location for m in members if m.ip is not None)
                raise TopologyError(f"{kind} {name!r}: subnet {subnet} overlaps {other_subnet} of {other!r}",
                                    location, "give each link and LAN its own subnet")
        fixed[name] = subnet

    subnets = (_auto_subnets(segments, fixed, readable=True, start=start)
               or _auto_subnets(segments, fixed, readable=False, start=start))
    if subnets is None:
        raise TopologyError(f"the topology needs more addresses than {POOL} holds",
                            hint="fix some subnets yourself or make the topology smaller")
    return {name: _addresses(name, kind, members, subnets[name], pinned_addresses.get(name, {}))
            for name, kind, members in segments}


def _auto_subnets(segments: list[tuple[str, str, list[Endpoint]]], fixed: dict[str, ipaddress.IPv4Network],
                  readable: bool, start: int = 0) -> dict[str, ipaddress.IPv4Network] | None:
    taken = sorted((int(s.network_address), int(s.broadcast_address)) for s in fixed.values())
    cursor, end = max(int(POOL.network_address), start), int(POOL.broadcast_address)
    result = dict(fixed)
    for name, _kind, members in segments:
        if name in fixed:
            continue
        size = 2 ** (32 - _prefix_for(len(members), readable))
        while True:
            cursor = (cursor + size - 1) // size * size      # align the block to its size
            clash = next(((lo, hi) for lo, hi in taken if lo <= cursor + size - 1 and cursor <= hi), None)
            if clash is None:
                break
            cursor = clash[1] + 1
        if cursor + size - 1 > end:
            return None
        result[name] = ipaddress.IPv4Network((cursor, 32 - int(math.log2(size))))
        cursor += size
    return result


def _addresses(name: str, kind: str, members: list[Endpoint], subnet: ipaddress.IPv4Network,
               pinned: dict[str, str] | None = None) -> SegmentAddresses:
    used: dict[ipaddress.IPv4Address, str] = {}
    kept: dict[str, ipaddress.IPv4Interface] = {}
    for member in members:          # pinned addresses of members the user gave none, while they fit the subnet
        pinned_address = (pinned or {}).get(member.node)
        if member.ip is None and pinned_address is not None \
                and ipaddress.IPv4Interface(pinned_address).network == subnet:
            kept[member.node] = ipaddress.IPv4Interface(pinned_address)
    for member in members:
        if member.ip is not None:
            if member.ip.ip in used:
                raise TopologyError(f"{kind} {name!r}: address {member.ip.ip} is given to both "
                                    f"{used[member.ip.ip]} and {member.node}", member.location)
            used[member.ip.ip] = member.node
    for node, kept_address in kept.items():     # after the user's: an address they fixed wins
        used.setdefault(kept_address.ip, node)
    hosts = (ipaddress.IPv4Address(a) for a in range(int(subnet.network_address) + 1,
                                                      int(subnet.broadcast_address)))
    addresses: dict[str, ipaddress.IPv4Interface] = {}
    for member in members:
        if member.ip is not None:
            addresses[member.node] = member.ip
            continue
        if member.node in kept and used.get(kept[member.node].ip) == member.node:
            addresses[member.node] = kept[member.node]
            continue
        address = next(hosts, None)
        while address in used:
            address = next(hosts, None)
        if address is None:
            raise TopologyError(f"{kind} {name!r}: subnet {subnet} has no address left for {member.node}",
                                member.location, "give the segment a larger subnet")
        used[address] = member.node
        addresses[member.node] = ipaddress.IPv4Interface(f"{address}/{subnet.prefixlen}")
    return SegmentAddresses(subnet, addresses)
