"""The initramfs writer, its shell templates and its cache key (no root)."""
from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from nestbed.realize.guestkit import initramfs, protocol

PLACEHOLDER = re.compile(r"@[A-Z0-9_]+@")


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    entries, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * k:pos + 14 + 8 * k], 16) for k in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body)


def test_initramfs_without_modules_has_init_busybox_and_console(tmp_path):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF static busybox")
    data, names = initramfs.build_initramfs("6.1.0-test", None, busybox)
    entries = read_cpio(gzip.decompress(data))
    assert names == []
    assert entries["bin/busybox"][1] == busybox.read_bytes()
    assert entries["bin/sh"][1] == b"busybox"
    init = entries["init"][1].decode()
    assert init.startswith("#!/bin/sh") and protocol.FAILURE_MARKER in init and "hostroot" in init
    assert "switch_root" in init and "overlay" in init
    assert entries["dev/console"][0] & 0o170000 == 0o020000
    assert protocol.FAILURE_MARKER in entries["stage2"][1].decode()


def built_scripts(tmp_path: Path) -> dict[str, str]:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF static busybox")
    entries = read_cpio(gzip.decompress(initramfs.build_initramfs("6.1.0-test", None, busybox)[0]))
    return {name: entries[name][1].decode() for name in ("init", "stage2", "acpi/PWRF/00000080")}


def test_every_placeholder_is_filled_in(tmp_path):
    for name, text in built_scripts(tmp_path).items():
        assert not PLACEHOLDER.findall(text), name
    assert all(PLACEHOLDER.search(initramfs.template(name)) for name in ("init.sh", "stage2.sh"))


def test_scripts_carry_the_markers_and_the_version(tmp_path):
    scripts = built_scripts(tmp_path)
    assert "V=6.1.0-test\n" in scripts["init"]
    assert f"CACHE={protocol.DEFAULT_9P_CACHE}\n" in scripts["init"]
    assert f"format {initramfs.KIT_FORMAT})" in scripts["init"]
    for marker in (protocol.FAILURE_MARKER, protocol.EXIT_MARKER, protocol.HANDOFF_MARKER):
        assert marker in scripts["stage2"]
    assert scripts["acpi/PWRF/00000080"] == initramfs.template("power-button.sh")


@pytest.mark.needs("sh")
def test_scripts_are_valid_shell(tmp_path):
    for name, text in built_scripts(tmp_path).items():
        result = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_render_puts_values_in_as_they_are():
    assert initramfs.render("a=@A@ b=\"@B@\" @A@ @C@", A="1", B="x y") == 'a=1 b="x y" 1 @C@'


def test_cache_key_changes_with_each_template(tmp_path, monkeypatch):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"busybox")
    shipped = initramfs.template
    key = initramfs.initramfs_key("6.1.0-test", busybox, None)
    assert initramfs.initramfs_key("6.1.0-test", busybox, None) == key
    for edited in initramfs.TEMPLATES:
        monkeypatch.setattr(initramfs, "template",
                            lambda name, edited=edited: shipped(name) + ("# edited\n" if name == edited else ""))
        assert initramfs.initramfs_key("6.1.0-test", busybox, None) != key, edited
    monkeypatch.setattr(initramfs, "template", shipped)
    assert initramfs.initramfs_key("6.1.0-test", busybox, None) == key
    assert initramfs.initramfs_key("6.1.0-other", busybox, None) != key


def test_cached_initramfs_is_built_once_per_key(tmp_path, monkeypatch):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"busybox")
    builds = []
    real_build = initramfs.build_initramfs

    def counting_build(*args, **kwargs):
        builds.append(args)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(initramfs, "build_initramfs", counting_build)
    first, names = initramfs.cached_initramfs(tmp_path, "6.1.0-test", None, busybox, False, kmod_modprobe=False)
    again, _ = initramfs.cached_initramfs(tmp_path, "6.1.0-test", None, busybox, False, kmod_modprobe=False)
    assert first == again and first.exists() and names == () and len(builds) == 1
    shipped = initramfs.template
    monkeypatch.setattr(initramfs, "template", lambda name: shipped(name) + "# edited\n")
    rebuilt, _ = initramfs.cached_initramfs(tmp_path, "6.1.0-test", None, busybox, False, kmod_modprobe=False)
    assert rebuilt != first and len(builds) == 2
