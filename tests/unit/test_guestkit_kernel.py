"""The guest kernel: its release from a bzImage header, and Debian's package through apt (no root)."""
from __future__ import annotations

import struct

import pytest

from nestbed.realize.guestkit import kernel


def test_kernel_release_from_bzimage_header(tmp_path):
    image = bytearray(0x4000)
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x20E, 0x1000)
    image[0x1200:0x1200 + 40] = b"6.1.0-99-amd64 (debian-kernel@lists)\0".ljust(40, b"\0")
    path = tmp_path / "vmlinuz"
    path.write_bytes(bytes(image))
    assert kernel.kernel_release(path) == "6.1.0-99-amd64"
    path.write_bytes(b"random")
    assert kernel.kernel_release(path) is None


def test_apt_failure_is_one_preflight_line(tmp_path, monkeypatch):
    import subprocess

    from nestbed.errors import PreflightError

    def fake_run(cmd, **kwargs):
        if cmd[:2] == ["apt-cache", "depends"]:
            return subprocess.CompletedProcess(cmd, 0, "linux-image-amd64\n  Depends: linux-image-6.1.0-99-amd64\n", "")
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package linux-image-6.1.0-99-amd64\n")

    monkeypatch.setattr(kernel.subprocess, "run", fake_run)
    with pytest.raises(PreflightError) as err:
        kernel.fetch_debian_kernel(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "linux-image-6.1.0-99-amd64" in message and "Unable to locate" in message
    assert not any((tmp_path / "kernel").iterdir())          # nothing half-made left
