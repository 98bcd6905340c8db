"""The physical topology (ptopo): the hosts an experiment may be embedded on, with their optional capacities.

A cluster file looks like this (every capacity is optional; a missing one means "no limit"):

    hosts:
      h1: {ssh: root@192.0.2.10, cpus: 16, memory: 64G, max_vms: 8, max_containers: 200}
      h2: {ssh: root@h2.lab:2222, address: 10.0.0.2}
    emulate: 0        # N > 0: also N emulated hosts emu0 … emuN-1 on this machine
    underlay_mtu: 1500    # the emulated hosts' underlay bridge (ul0): 1500 by default, 576 to 65535
    engine: {etcd: [http://10.0.0.5:2379]}    # optional: plans through etcd, one `nestbed agent` per host

A real host's keys besides its capacities: `ssh` (how to reach it: user@host[:port], with the user's own keys
and ~/.ssh/known_hosts), `address` (its underlay address, which VXLAN tunnels use: by default the ssh host when
that is an IPv4 address), `python` (an interpreter there that has this nestbed installed; by default nestbed
brings its own to `python3` there: cluster/bundle.py), `state_dir` and `prefix` (that host's NESTBED_STATE_DIR
and NESTBED_PREFIX, e.g. for two installations sharing hosts; by default the host's own).

An emulated host may also be listed under `hosts:` (e.g. `emu0: {max_vms: 2}`) to give it capacities; it cannot
have `ssh:` or the other keys of a real host, since it lives on this machine. No cluster file means one host:
this machine (`local_cluster()`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestbed.errors import TopologyError
from nestbed.model import units
from nestbed.model.topology import check_name
from nestbed.paths import valid_prefix
from nestbed.types import Location

TOP_KEYS = ("hosts", "emulate", "underlay_mtu", "engine")
HOST_KEYS = ("ssh", "address", "python", "state_dir", "prefix", "cpus", "memory", "max_vms", "max_containers")
REAL_HOST_KEYS = ("ssh", "address", "python", "state_dir", "prefix")
MAX_EMULATED = 1000
DEFAULT_UNDERLAY_MTU = 1500
UNDERLAY_MTU_RANGE = (576, 65535)     # IPv4's minimum datagram, the largest a veth and bridge take
LOCAL_HOST = "local"


@dataclass
class HostSpec:
    name: str
    ssh: str | None = None
    address: str | None = None         # underlay address (None: the ssh host's, when it is an IPv4 address)
    python: str | None = None          # an interpreter there with this nestbed (None: nestbed brings its own)
    state_dir: str | None = None       # its NESTBED_STATE_DIR (None: the host's default)
    prefix: str | None = None          # its NESTBED_PREFIX (None: the host's default)
    cpus: float | None = None
    memory: int | None = None          # bytes
    max_vms: int | None = None
    max_containers: int | None = None
    location: Location = "<python>"


@dataclass
class Cluster:
    hosts: dict[str, HostSpec] = field(default_factory=dict)
    emulate: int = 0                   # hosts emu0 … emu{N-1} (also present in `hosts`) are emulated
    source: str | None = None
    underlay_mtu: int = DEFAULT_UNDERLAY_MTU     # of the emulated hosts' underlay (their ul0 and its bridge)
    etcd: list[str] = field(default_factory=list)    # engine: {etcd: [URL, ...]}: the etcd engine's endpoints

    def is_emulated(self, host: str) -> bool:
        return host in emulated_names(self.emulate)


def emulated_names(count: int) -> list[str]:
    return [f"emu{i}" for i in range(count)]


def local_cluster(cpus: float | None = None, memory: int | None = None) -> Cluster:
    """One host, this machine; capacities only when given (none by default: everything fits, as before)."""
    return Cluster(hosts={LOCAL_HOST: HostSpec(LOCAL_HOST, cpus=cpus, memory=memory)})


def load_cluster(path: str | Path) -> Cluster:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise TopologyError(f"cluster file {str(path)!r} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise TopologyError(f"cannot read cluster file {str(path)!r}: {err.__class__.__name__}") from None
    return load_cluster_text(text, str(path))


def load_cluster_text(text: str, path: str = "<text>") -> Cluster:
    try:
        from nestbed.model.loader import parse_yaml  # the YAML readers load only when a file is read
        raw = parse_yaml(text, path)
    except TopologyError as err:
        if err.message == "the file is empty":    # the topology loader's hint would be wrong here
            raise TopologyError("the cluster file is empty", err.location, "list hosts under hosts:") from None
        raise
    return build_cluster(raw, path)


def build_cluster(raw: Any, path: str) -> Cluster:
    def at(line: int) -> str:
        return f"{path}:{line}"

    top = _mapping(raw, TOP_KEYS, "the cluster file", at(getattr(raw, "line", 1)), at)
    emulate = top.get("emulate", 0)
    if emulate is None:
        emulate = 0
    if isinstance(emulate, bool) or not isinstance(emulate, int) or not 0 <= emulate <= MAX_EMULATED:
        raise TopologyError(f"emulate {emulate!r} must be an integer from 0 to {MAX_EMULATED}",
                            at(_line(top, "emulate")), "e.g. emulate: 4 for four emulated hosts")
    underlay_mtu = top.get("underlay_mtu")
    if underlay_mtu is None:
        underlay_mtu = DEFAULT_UNDERLAY_MTU
    low, high = UNDERLAY_MTU_RANGE
    if isinstance(underlay_mtu, bool) or not isinstance(underlay_mtu, int) or not low <= underlay_mtu <= high:
        raise TopologyError(f"underlay_mtu {underlay_mtu!r} must be an integer from {low} to {high}",
                            at(_line(top, "underlay_mtu")), "e.g. underlay_mtu: 1500 (the default) or 9000")
    raw_hosts = top.get("hosts")
    if raw_hosts is None:
        raw_hosts = {}
    if not isinstance(raw_hosts, dict):
        raise TopologyError("hosts must be a mapping of host names", at(_line(top, "hosts")),
                            "write h1: {ssh: root@192.0.2.10}")
    emulated = set(emulated_names(emulate))
    hosts: dict[str, HostSpec] = {}
    for name, spec in raw_hosts.items():
        line = getattr(raw_hosts, "key_lines", {}).get(name, _line(top, "hosts"))
        location = at(line)
        check_name(name, "host", location)
        spec = {} if spec is None else spec
        _mapping(spec, HOST_KEYS, f"host {name!r}", location, at)
        hosts[name] = _host(name, spec, location)
        real_keys = [key for key in REAL_HOST_KEYS if key in spec]
        if name in emulated and real_keys:
            raise TopologyError(f"host {name!r} is emulated (emulate: {emulate}) and cannot have "
                                f"{real_keys[0]}", location, "rename the host or lower emulate")
    for name in emulated_names(emulate):
        hosts.setdefault(name, HostSpec(name, location=at(_line(top, "emulate"))))
    if not hosts:
        raise TopologyError("the cluster has no hosts", at(getattr(top, "line", 1)),
                            "list hosts under hosts: or set emulate: N")
    etcd = _engine(top.get("engine"), at(_line(top, "engine")))
    return Cluster(hosts=hosts, emulate=emulate, source=path, underlay_mtu=underlay_mtu, etcd=etcd)


def _engine(raw: Any, location: Location) -> list[str]:
    """engine: {etcd: [URL, ...]}: each URL http://HOST:PORT or unix:///PATH (a socket of this machine)."""
    if raw is None:
        return []
    hint = "e.g. engine: {etcd: [http://10.0.0.5:2379]}"
    if not isinstance(raw, dict) or set(raw) != {"etcd"}:
        raise TopologyError("engine must be a mapping with one key, etcd", location, hint)
    urls = raw["etcd"]
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls:
        raise TopologyError("engine: etcd must list one or more endpoint URLs", location, hint)
    from urllib.parse import urlsplit
    for url in urls:
        ok = isinstance(url, str) and (
            (url.startswith("unix:///") and len(url) > len("unix:///"))
            or (urlsplit(url).scheme == "http" and bool(urlsplit(url).hostname) and _port(url) is not None))
        if not ok:
            raise TopologyError(f"engine: etcd endpoint {url!r} must be http://HOST:PORT or unix:///PATH",
                                location, hint)
    return list(urls)


def _port(url: str) -> int | None:
    from urllib.parse import urlsplit
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _host(name: str, spec: dict[str, Any], location: Location) -> HostSpec:
    ssh = spec.get("ssh")
    if ssh is not None and (not isinstance(ssh, str) or not ssh.strip() or any(c.isspace() for c in ssh)):
        raise TopologyError(f"host {name!r}: ssh {ssh!r} must be a destination like root@192.0.2.10", location)
    address = spec.get("address")
    if address is not None and not _is_ipv4(address):
        raise TopologyError(f"host {name!r}: address {address!r} must be an IPv4 address (its underlay's)",
                            location, "e.g. address: 10.0.0.2")
    paths: dict[str, str | None] = {}
    for key in ("python", "state_dir"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith("/")
                                  or any(c.isspace() for c in value)):
            raise TopologyError(f"host {name!r}: {key} {value!r} must be an absolute path without spaces",
                                location, "e.g. python: /opt/nestbed/bin/python" if key == "python"
                                else "e.g. state_dir: /var/lib/nestbed")
        paths[key] = value
    prefix = spec.get("prefix")
    if prefix is not None and not valid_prefix(prefix):
        raise TopologyError(f"host {name!r}: prefix {prefix!r} must be 1 to 3 lowercase letters or digits, "
                            f"starting with a letter", location, "e.g. prefix: nb")
    limits: dict[str, int | None] = {}
    for key in ("max_vms", "max_containers"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise TopologyError(f"host {name!r}: {key} {value!r} must be an integer of 0 or more", location)
        limits[key] = value
    try:
        cpus = None if spec.get("cpus") is None else units.parse_cpus(spec["cpus"])
        memory = None if spec.get("memory") is None else units.parse_memory(spec["memory"])
    except ValueError as err:
        raise TopologyError(f"host {name!r}: {err}", location) from None
    return HostSpec(name, ssh=ssh, address=address, python=paths["python"], state_dir=paths["state_dir"],
                    prefix=prefix, cpus=cpus, memory=memory, max_vms=limits["max_vms"],
                    max_containers=limits["max_containers"], location=location)


def _is_ipv4(value: Any) -> bool:
    import ipaddress
    try:
        ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        return False
    return isinstance(value, str)


def _mapping(value: Any, allowed: tuple[str, ...], what: str, location: Location, at: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        found = "a list" if isinstance(value, list) else type(value).__name__
        raise TopologyError(f"{what} must be a mapping (key: value), not {found}", location)
    lines = getattr(value, "key_lines", {})
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
            raise TopologyError(f"unknown key {key!r} in {what}", at(lines[key]) if key in lines else location,
                                hint)
    return value


def _line(mapping: Any, key: str) -> int:
    return int(getattr(mapping, "key_lines", {}).get(key, getattr(mapping, "line", 1)))
