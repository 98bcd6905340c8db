"""Kernel modules: names, modules.dep (parsed, resolved, generated from .modinfo), signatures (no root)."""
from __future__ import annotations

import struct

import pytest

from nestbed.realize.guestkit import modules

DEP = """kernel/net/9p/9pnet_virtio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/net/9p/9pnet.ko \
kernel/drivers/virtio/virtio.ko
kernel/net/9p/9pnet.ko:
kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
"""


def test_resolver_puts_dependencies_first_once_each():
    dep = modules.parse_modules_dep(DEP)
    order = modules.resolve(["9pnet_virtio", "9p", "bridge"], dep)
    assert len(order) == len(set(order))
    for path in order:
        for needed in dep[modules.module_name(path)][1]:
            assert order.index(needed) < order.index(path)
    assert set(map(modules.module_name, order)) == {"9pnet_virtio", "virtio_ring", "9pnet", "virtio", "9p",
                                                      "netfs", "fscache", "bridge", "stp", "llc"}


def test_resolver_walks_transitive_dependencies_itself():
    partial = "a.ko: b.ko\nb.ko: c.ko\nc.ko:\n"      # modules.dep lists all, but do not rely on it
    assert modules.resolve(["a"], modules.parse_modules_dep(partial)) == ["c.ko", "b.ko", "a.ko"]


def test_resolver_skips_builtins_and_rejects_unknown_and_normalises_names():
    dep = modules.parse_modules_dep(DEP)
    assert modules.resolve(["virtio-net"], dep) == ["kernel/net/core/failover.ko.xz",
                                                     "kernel/drivers/net/net_failover.ko.xz",
                                                     "kernel/drivers/net/virtio_net.ko.xz"]
    assert modules.resolve(["9pnet_virtio"], dep, builtin=["kernel/drivers/virtio/virtio.ko"]) == \
        ["kernel/drivers/virtio/virtio_ring.ko", "kernel/net/9p/9pnet.ko", "kernel/net/9p/9pnet_virtio.ko"]
    with pytest.raises(KeyError):
        modules.resolve(["no_such_module"], dep)


def test_strip_signature():
    body = b"\x7fELF" + b"m" * 100
    sig = b"S" * 40
    signed = body + sig + struct.pack(">BBBBBxxxI", 0, 0, 0, 0, 0, len(sig)) + modules.SIGNATURE_MAGIC
    assert modules.strip_signature(signed) == body
    assert modules.strip_signature(body) == body


def test_modules_dep_generated_from_modinfo(tmp_path):
    """A tree without modules.dep (Debian's package) gets one, from each module's .modinfo depends=."""
    def elf_with_modinfo(info: bytes) -> bytes:
        names = b"\0.modinfo\0.shstrtab\0"
        header = bytearray(64)
        header[:5] = b"\x7fELF\x02"
        data_off = 64
        names_off = data_off + len(info)
        shoff = names_off + len(names)
        struct.pack_into("<Q", header, 0x28, shoff)
        struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
        sections = bytes(64)
        sections += struct.pack("<IIQQQQ", 1, 1, 0, 0, data_off, len(info)).ljust(64, b"\0")
        sections += struct.pack("<IIQQQQ", 10, 3, 0, 0, names_off, len(names)).ljust(64, b"\0")
        return bytes(header) + info + names + sections

    root = tmp_path / "6.1.0-t"
    (root / "kernel/a").mkdir(parents=True)
    (root / "kernel/a/top.ko").write_bytes(elf_with_modinfo(b"alias=rtnl-link-top\0depends=mid\0"))
    (root / "kernel/a/mid.ko").write_bytes(elf_with_modinfo(b"depends=low\0"))
    (root / "kernel/a/low.ko").write_bytes(elf_with_modinfo(b"depends=\0"))
    text = modules.load_modules_dep(root, writable=True)
    dep = modules.parse_modules_dep(text)
    assert dep["top"] == ("kernel/a/top.ko", ("kernel/a/mid.ko", "kernel/a/low.ko"))
    assert modules.resolve(["top"], dep) == ["kernel/a/low.ko", "kernel/a/mid.ko", "kernel/a/top.ko"]
    assert "alias rtnl-link-top top" in (root / "modules.alias").read_text()


def test_module_names_are_the_kernels_spelling():
    assert modules.module_name("kernel/net/9p/9pnet_virtio.ko.xz") == "9pnet_virtio"
    assert modules.module_name("9pnet-virtio") == "9pnet_virtio"
    assert modules.module_name("kernel/drivers/net/virtio_net.ko") == "virtio_net"
    assert modules.module_name("kernel/fs/overlayfs/overlay.ko.zst") == "overlay"


def test_modules_dep_parser_skips_lines_without_a_colon():
    assert modules.parse_modules_dep("\n# comment\nkernel/a.ko: kernel/b.ko\n") == \
        {"a": ("kernel/a.ko", ("kernel/b.ko",))}


def test_read_only_tree_gets_modules_dep_without_files_written(tmp_path):
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel/plain.ko").write_bytes(b"not an ELF file")      # no .modinfo: no dependencies
    assert modules.load_modules_dep(tmp_path, writable=False) == "kernel/plain.ko:\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel"]
    assert modules.read_builtin(tmp_path) == []
    (tmp_path / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n\nkernel/net/9p/9pnet-virtio.ko\n")
    assert modules.read_builtin(tmp_path) == ["ext4", "9pnet_virtio"]
