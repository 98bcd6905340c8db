"""Real hosts (a cluster file's hosts with `ssh:`): how to reach each, and what its plan needs to know of it.

    hosts = real.hosts_of(cluster)                  # RealHost per host; bad input fails here, in one line
    transports = [h.transport() for h in hosts]     # SshHost: the user's keys and known_hosts; nestbed brought
    sites = real.sites(hosts, hellos, mtus)         # HostSite per host, from what each agent said in its hello

Unlike emulated hosts they exist before the experiment and after it: nothing is made to reach them, and teardown
removes only what their agents journaled. Each runs its agent in its own namespace (the host's root namespace),
where its underlay is; a physical node placed on one is that namespace (plan/multihost.py).
"""
from __future__ import annotations

import ipaddress
import itertools
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from nestbed.errors import ExperimentError, TopologyError
from nestbed.model.cluster import Cluster

if TYPE_CHECKING:
    from nestbed.cluster.ssh import ConnectInfo, SshHost
    from nestbed.plan.multihost import HostSite

PROBE_SECONDS = 5.0            # one direction's path-MTU probe at most (agent/pathmtu.py)
PARALLEL = 64


@dataclass(frozen=True)
class RealHost:
    name: str
    ssh: str                    # user@host[:port]
    address: str                # its underlay address (VXLAN local and remote)
    python: str | None = None   # an interpreter there with this nestbed (None: brought, run by python3)
    state_dir: str | None = None
    prefix: str | None = None

    def connect_info(self) -> ConnectInfo:
        from nestbed.cluster.ssh import ConnectInfo
        return ConnectInfo.from_destination(self.ssh, python=self.python or "python3", bring=self.python is None,
                                            state_dir=self.state_dir, prefix=self.prefix)

    def transport(self) -> SshHost:
        from nestbed.cluster.ssh import SshHost
        return SshHost(self.name, self.connect_info())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> RealHost:
        return cls(**fields)


def is_real(cluster: Cluster) -> bool:
    """A cluster of real hosts; one that mixes them with emulated hosts is refused (they share no underlay)."""
    real = [name for name in cluster.hosts if not cluster.is_emulated(name)]
    if real and cluster.emulate:
        raise TopologyError(f"the cluster mixes emulated hosts (emulate: {cluster.emulate}) with real ones "
                            f"({', '.join(real)}): emulated hosts' underlay is on this machine alone",
                            cluster.source or "<cluster>", "use emulate: N, or list real hosts only")
    return bool(real)


def host_of(cluster: Cluster, name: str) -> RealHost:
    """One host of the cluster file as reached over SSH (its destination checked, its address resolved)."""
    from nestbed.cluster.ssh import ConnectInfo
    spec = cluster.hosts[name]
    if spec.ssh is None:
        raise TopologyError(f"host {name!r} has no ssh: destination (how to reach it)", spec.location,
                            "write e.g. ssh: root@192.0.2.10")
    try:
        info = ConnectInfo.from_destination(spec.ssh)
    except ExperimentError as error:
        raise TopologyError(str(error), spec.location) from None
    return RealHost(name, spec.ssh, spec.address or _address_of(name, info.address, spec.location), spec.python,
                    spec.state_dir, spec.prefix)


def hosts_of(cluster: Cluster) -> list[RealHost]:
    found = [host_of(cluster, name) for name in cluster.hosts]
    taken: dict[str, str] = {}
    for host in found:
        if host.address in taken:
            raise TopologyError(f"hosts {taken[host.address]!r} and {host.name!r} have the same underlay address "
                                f"{host.address}", cluster.hosts[host.name].location,
                                "give each its own address: in the cluster file")
        taken[host.address] = host.name
    return found


def _address_of(name: str, destination: str, location: str) -> str:
    """The ssh host as an IPv4 address (resolved here when it is a name)."""
    try:
        return str(ipaddress.IPv4Address(destination))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(destination, None, socket.AF_INET)[0][4][0])
    except OSError:
        raise TopologyError(f"host {name!r}: cannot resolve {destination!r} to an IPv4 address", location,
                            "give its underlay address: address: 10.0.0.2") from None


def underlay_mtus(transports: dict[str, SshHost], hosts: list[RealHost]) -> dict[str, int]:
    """Each host's underlay MTU: the smallest path MTU (DF probes, agent/pathmtu.py) from it to any other host and
    from any other host to it. One host alone: its route's MTU is not asked for (no tunnel is made)."""
    address = {h.name: h.address for h in hosts}
    pairs = list(itertools.permutations(address, 2))
    if not pairs:
        return {h.name: 1500 for h in hosts}

    def probe(pair: tuple[str, str]) -> tuple[str, str, int]:
        source, target = pair
        answer = transports[source].request("probe_mtu", peer=address[target], seconds=PROBE_SECONDS)
        mtu = answer.get("mtu")
        if not mtu:
            raise ExperimentError(f"host {source}: no IPv4 packet reaches host {target} at {address[target]} "
                                  f"(its underlay address): {answer.get('why') or 'no answer to any probe size'}")
        return source, target, int(mtu)
    with ThreadPoolExecutor(min(PARALLEL, len(pairs))) as pool:
        results = list(pool.map(probe, pairs))
    lowest = {h.name: 65535 for h in hosts}
    for source, target, mtu in results:
        lowest[source] = min(lowest[source], mtu)
        lowest[target] = min(lowest[target], mtu)
    return lowest


def underlay_links(hosts: list[RealHost], hellos: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each host's interface holding its underlay address, from its agent's hello (before any probe is sent)."""
    found = {}
    for host in hosts:
        links = hellos[host.name].get("links") or {}
        if host.address not in links:
            held = ", ".join(sorted(links)) or "none"
            raise ExperimentError(f"host {host.name} has no interface with address {host.address} (its underlay "
                                  f"address); it has {held}: set address: in the cluster file to one of them")
        found[host.name] = str(links[host.address])
    return found


def sites(hosts: list[RealHost], hellos: dict[str, dict[str, Any]], mtus: dict[str, int]) -> dict[str, HostSite]:
    """What each host's plan needs, from its agent's hello: its object prefix and its underlay interface."""
    from nestbed.plan.multihost import HostSite
    links = underlay_links(hosts, hellos)
    return {host.name: HostSite(prefix=str(hellos[host.name]["prefix"]), address=host.address,
                                underlay=links[host.name], mtu=mtus[host.name]) for host in hosts}
