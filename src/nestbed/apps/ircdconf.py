"""ngircd's configuration from a template (string.Template; examples/catch/ngircd.conf.template), no I/O.

Placeholders: $name (this server, with a dot), $port, $listen, $info, $network, $directory (the private directory
the configuration is written to) and $peers_block (one [Server] block per peer; with `connect` each block has the
peer's Port, so this server dials it, else it waits for it).
ngircd has no quoting: a value with a line break, or a password with a ':' or a space, is refused here.
"""
from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import NamedTuple

_SERVER_NAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_HOST = re.compile(r"[A-Za-z0-9._-]+")
_PASSWORD = re.compile(r"[!-9;-~]+")         # printable ASCII without ':' and spaces
_NETWORK = re.compile(r"[!-~]+")
_INFO = re.compile(r"[ -~]*")                # one line of printable ASCII


class Peer(NamedTuple):
    name: str            # the peer's IRC server name (irc2.catch)
    host: str            # how to reach it (a name in /etc/hosts, or an address)
    port: int
    my_password: str     # what this server says (the peer's PeerPassword)
    peer_password: str   # what the peer must say (its MyPassword)


class ConfigError(ValueError):
    pass


def check_server_name(name: str) -> str:
    if not _SERVER_NAME.fullmatch(name) or len(name) > 63:
        raise ConfigError(f"server name {name!r} must be letters, digits and '-' with at least one dot")
    return name


def check_port(port: int, what: str = "port") -> int:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what} {port} is not a TCP port (1..65535)")
    return port


def parse_peer(spec: str) -> Peer:
    """NAME=HOST:PORT:MYPASS:PEERPASS"""
    name, eq, rest = spec.partition("=")
    parts = rest.split(":")
    if not eq or len(parts) != 4:
        raise ConfigError(f"peer {spec!r} is not NAME=HOST:PORT:MYPASS:PEERPASS")
    host, port, mine, theirs = parts
    if not _HOST.fullmatch(host):
        raise ConfigError(f"peer host {host!r} is not a host name or IPv4 address")
    if not port.isdigit():
        raise ConfigError(f"peer port {port!r} is not a number")
    for password in (mine, theirs):
        if not _PASSWORD.fullmatch(password):
            raise ConfigError(f"peer {name}: a link password must be printable, without ':' or spaces")
    return Peer(check_server_name(name), host, check_port(int(port), "peer port"), mine, theirs)


def peers_block(peers: Sequence[Peer], connect: bool) -> str:
    blocks = []
    for peer in peers:
        lines = ["[Server]", f"\tName = {peer.name}", f"\tHost = {peer.host}"]
        if connect:
            lines.append(f"\tPort = {peer.port}")
        lines += [f"\tMyPassword = {peer.my_password}", f"\tPeerPassword = {peer.peer_password}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render(template: str, name: str, port: int, peers: Sequence[Peer] = (), connect: bool = False,
           listen: str = "0.0.0.0", info: str = "", network: str = "catch", directory: str = "/nonexistent") -> str:
    check_server_name(name)
    check_port(port)
    if not re.fullmatch(r"[0-9a-fA-F.:,]+", listen):
        raise ConfigError(f"listen {listen!r} is not a list of addresses")
    if not _INFO.fullmatch(info):
        raise ConfigError("info must be one line of printable ASCII")
    if not _NETWORK.fullmatch(network):
        raise ConfigError(f"network {network!r} must be printable ASCII without spaces")
    if not re.fullmatch(r"/[A-Za-z0-9._/+-]*", directory):
        raise ConfigError(f"directory {directory!r} is not an absolute path of plain characters")
    names = [peer.name.lower() for peer in peers]
    if name.lower() in names or len(set(names)) != len(names):
        raise ConfigError("each peer must be named once, and not as this server")
    values = {"name": name, "port": str(port), "listen": listen, "info": info or f"nestbed IRC server {name}",
              "network": network, "directory": directory, "peers_block": peers_block(peers, connect)}
    try:
        return string.Template(template).substitute(values)
    except KeyError as error:
        raise ConfigError(f"the template has ${error.args[0]}, which is none of "
                          f"${', $'.join(sorted(values))}") from None
    except ValueError as error:             # a lone '$'
        raise ConfigError(f"the template: {error} (write $$ for a dollar sign)") from None
