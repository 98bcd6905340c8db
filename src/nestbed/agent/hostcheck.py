"""What `nestbed cluster check` asks of a host (the remote agent's `check` op): its nestbed, Python and kernel, the
kernel features experiments use, its clock and its addresses.

Features are probed as `nestbed up` probes them (realize/preflight.py: in a throwaway namespace of a child
process, nothing left behind) and answered as {"ok": True | False | None, "detail": "…"} (None: not known
without booting a VM). KVM is the cheap probe only (/dev/kvm makes a VM and a vCPU) plus what `up` already found
out on this boot (realize/qemu/accelprobe.py); booting a test guest is left to the first VM.
"""
from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

Feature = dict[str, Any]


def answer(features: bool = True) -> dict[str, Any]:
    """The `check` op's answer; `features=False` is the cheap form (version and clock: the clock samples)."""
    from nestbed import __version__
    found: dict[str, Any] = {"version": __version__, "python": platform.python_version(),
                             "kernel": platform.release(), "host": socket.gethostname()}
    if features:
        found["features"] = kernel_features()
        found["addresses"] = addresses()
        found["ssh_address"] = ssh_address()
    found["time"] = time.time()         # last: the controller pairs it with when the answer arrives
    return found


def kernel_features() -> dict[str, Feature]:
    return {"netem": _netem(), "htb": _htb(), "vxlan": _vxlan(), "nftables": _nftables(), "kvm": kvm()}


def _feature(ok: bool | None, detail: str) -> Feature:
    return {"ok": ok, "detail": detail}


def _netem() -> Feature:
    from nestbed.realize import preflight
    if preflight.has_qdisc("netem"):
        return _feature(True, "the netem qdisc works (delay, jitter, loss)")
    return _feature(False, "no netem qdisc (sch_netem): no delay or jitter; loss falls back to iptables")


def _htb() -> Feature:
    from nestbed.realize import preflight
    if preflight.has_qdisc("htb"):
        return _feature(True, "the htb qdisc works (bandwidth)")
    return _feature(False, "no htb qdisc (sch_htb): links cannot have a bandwidth")


def _vxlan() -> Feature:
    from nestbed.realize import preflight
    if preflight.has_vxlan():
        return _feature(True, "VXLAN devices can be made")
    return _feature(False, "no VXLAN devices (the vxlan module): segments cannot cross hosts")


def _nftables() -> Feature:
    from nestbed.realize import preflight
    problem = preflight.nftables_problem()
    if problem is None:
        return _feature(True, "nft loads the control network's firewall")
    return _feature(False, f"{problem}: no control network")


def kvm() -> Feature:
    import shutil

    from nestbed.errors import NestbedError
    from nestbed.realize.qemu import accelprobe, cmdline
    if shutil.which(cmdline.QEMU) is None:
        return _feature(False, f"{cmdline.QEMU} is not installed: no VMs")
    problem = accelprobe.kvm_ioctl_problem()
    if problem is not None:
        return _feature(False, f"{problem}: VMs run under TCG (software emulation)")
    try:
        known = accelprobe.remembered()
    except NestbedError as error:
        return _feature(False, str(error))
    if known is None:
        return _feature(None, "/dev/kvm makes VMs; whether a guest runs under KVM is probed at the first VM")
    accel, reason = known
    return _feature(accel == "kvm", reason)


def addresses() -> list[str]:
    """This host's IPv4 addresses (ADDRESS/PREFIX), loopback left out: the underlay is among them."""
    from nestbed.realize import netlink
    sock = netlink.open_socket()
    try:
        found = netlink.ipv4_addresses(sock)
    finally:
        sock.close()
    return [f"{address}/{length}" for address, length in found if not address.startswith("127.")]


def address_links() -> dict[str, str]:
    """This host's IPv4 addresses → the interface holding each (where a VXLAN underlay is, by its address)."""
    from nestbed.realize import netlink
    sock = netlink.open_socket()
    try:
        found = netlink.ipv4_addresses_on_links(sock)
    finally:
        sock.close()
    links = {}
    for address, _, index in found:
        try:
            links[address] = socket.if_indextoname(index)
        except OSError:
            continue                # gone since the dump
    return links


def ssh_address() -> str | None:
    """The address the controller reached this host on (sshd's SSH_CONNECTION: client, port, server, port)."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    return parts[2] if len(parts) == 4 else None
