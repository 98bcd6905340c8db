"""TAP devices for VM NICs, made inside a network namespace and handed to qemu as fds."""
from __future__ import annotations

import fcntl
import os
import struct
import threading

from nestbed.realize import syscalls

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


def _make_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)       # not O_CLOEXEC: passed to qemu through pass_fds
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except OSError:
        os.close(fd)
        raise
    return fd


def open_tap(netns: str | None, name: str) -> int:
    """A new TAP device `name` in the network namespace at path `netns` (None: this one); returns its fd.

    The device exists while the fd (or qemu's copy of it) is open: nothing to remove after qemu exits. It is
    created down and without a master; bring it up and enslave it to its bridge in that namespace.
    """
    if len(name.encode()) > 15:
        raise ValueError(f"interface name {name!r} is longer than 15 bytes")
    if netns is None:
        return _make_tap(name)
    result: list[int | BaseException] = []

    def inside() -> None:
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(netns, os.O_RDONLY)
            try:
                syscalls.setns(target, syscalls.CLONE_NEWNET)
                try:
                    result.append(_make_tap(name))
                finally:
                    syscalls.setns(home, syscalls.CLONE_NEWNET)
            finally:
                os.close(target)
                os.close(home)
        except BaseException as err:  # noqa: BLE001 -- re-raised in the caller's thread
            result.append(err)

    thread = threading.Thread(target=inside, name=f"tap-{name}")
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
