"""What emulated hosts are made of, without root: their names, prefixes and addresses, the underlay's netlink
messages, and each sshd's configuration (cluster/emulated.py, underlay.py, sshd.py)."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nestbed.cluster import emulated, sshd, underlay
from nestbed.errors import PreflightError


def test_host_prefixes_follow_the_installations_within_three_characters():
    assert [emulated.host_prefix("nb", i) for i in (0, 1, 9, 10, 35)] == ["nb0", "nb1", "nb9", "nba", "nbz"]
    assert emulated.host_prefix("x", 36) == "x10" and emulated.host_prefix("x", 1295) == "xzz"
    with pytest.raises(PreflightError) as caught:
        emulated.host_prefix("nb", 36)
    assert "under NESTBED_PREFIX=nb at most 36 emulated hosts fit" in str(caught.value)
    with pytest.raises(PreflightError, match="at most 0 emulated hosts"):
        emulated.host_prefix("abc", 0)


def test_underlay_addresses():
    assert [underlay.host_address(i) for i in (0, 1, 254, 255, 999)] == \
        ["10.250.0.1", "10.250.0.2", "10.250.0.255", "10.250.1.0", "10.250.3.232"]
    assert underlay.CONTROLLER_ADDRESS not in {underlay.host_address(i) for i in range(underlay.MAX_HOSTS)}


def _attributes(message: bytes, start: int) -> dict[int, bytes]:
    found, pos = {}, start
    while pos < len(message):
        length, kind = struct.unpack_from("=HH", message, pos)
        found[kind & 0x3FFF] = message[pos + 4:pos + length]
        pos += (length + 3) & ~3
    return found


def test_every_underlay_link_carries_the_mtu_and_is_made_in_its_namespace():
    batch = underlay.links(2, 9000, underlay_fd=7, host_fds=[8, 9])
    assert len(batch) == 3
    bridge, port = (_attributes(m, 16 + 16) for m in batch.messages[:2])
    assert bridge[underlay.IFLA_MTU] == struct.pack("=I", 9000) and bridge[3] == b"ul0\0"
    assert port[underlay.IFLA_MTU] == struct.pack("=I", 9000) and port[3] == b"p0\0"
    assert port[28] == struct.pack("=I", 7)                     # IFLA_NET_NS_FD: the underlay namespace
    peer = _attributes(port[18], 0)[2]                          # IFLA_LINKINFO → IFLA_INFO_DATA
    host_end = _attributes(_attributes(peer, 0)[1], 16)         # VETH_INFO_PEER: ifinfomsg, then attributes
    assert host_end[3] == b"ul0\0" and host_end[28] == struct.pack("=I", 8)
    assert host_end[underlay.IFLA_MTU] == struct.pack("=I", 9000)


def test_sshd_configuration_is_the_contracts(tmp_path: Path):
    text = sshd.config("10.250.0.1", tmp_path / "host_ed25519", tmp_path / "client_ed25519.pub",
                       tmp_path / "sshd.pid")
    lines = set(text.splitlines())
    assert {"ListenAddress 10.250.0.1:22", f"HostKey {tmp_path}/host_ed25519", "UsePAM no",
            "PasswordAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no",
            f"AuthorizedKeysFile {tmp_path}/client_ed25519.pub", f"PidFile {tmp_path}/sshd.pid"} <= lines
    public = tmp_path / "k.pub"
    public.write_text("ssh-ed25519 AAAAC3Nza nestbed\n")
    assert sshd.known_hosts_line("10.250.0.3", public) == "10.250.0.3 ssh-ed25519 AAAAC3Nza\n"
