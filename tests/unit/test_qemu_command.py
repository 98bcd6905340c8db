"""qemu command lines, the guest kernel command line, the modules.dep resolver and the initramfs writer (no root)."""
from __future__ import annotations

import base64
import gzip
import struct
from pathlib import Path

import pytest

from nestbed.errors import ExperimentError
from nestbed.realize import guestkit, qemu


def spec(**changes) -> qemu.VmSpec:
    base = {"name": "vm1", "memory": 256, "cpus": 2, "kernel": Path("/k/vmlinux"), "initrd": Path("/k/initrd.gz"),
            "argv": ["/usr/bin/python3", "-m", "nestbed.agent.guest", "--config", "/var/lib/nestbed/e/vm1.json"],
            "nics": [(7, "52:54:00:00:00:01"), (9, "52:54:00:00:00:02")], "qmp": Path("/run/e/vm1.qmp"),
            "console": Path("/var/lib/nestbed/e/vm1.console"), "pidfile": Path("/run/e/vm1.pid")}
    base.update(changes)
    return qemu.VmSpec(**base)


def option_values(cmd: list[str], option: str) -> list[str]:
    return [cmd[k + 1] for k, word in enumerate(cmd) if word == option]


def decode_argv(append: str) -> list[str]:
    value = next(word for word in append.split() if word.startswith("nestbed.argv="))
    return guestkit.decode_items(value.split("=", 1)[1])


def test_basic_command_line():
    cmd = qemu.build_command(spec())
    assert cmd[0] == qemu.QEMU
    for flag in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"):
        assert flag in cmd
    assert option_values(cmd, "-m") == ["256"] and option_values(cmd, "-smp") == ["2"]
    assert option_values(cmd, "-accel") == ["tcg,tb-size=64"] and option_values(cmd, "-cpu") == ["max"]
    assert option_values(cmd, "-kernel") == ["/k/vmlinux"] and option_values(cmd, "-initrd") == ["/k/initrd.gz"]
    assert option_values(cmd, "-qmp") == ["unix:/run/e/vm1.qmp,server=on,wait=off"]
    assert option_values(cmd, "-pidfile") == ["/run/e/vm1.pid"]
    assert "file,id=console,path=/var/lib/nestbed/e/vm1.console" in option_values(cmd, "-chardev")
    fsdev = option_values(cmd, "-fsdev")[0]
    assert "path=/," in fsdev and "readonly=on" in fsdev and "id=hostroot" in fsdev
    assert any("mount_tag=hostroot" in d for d in option_values(cmd, "-device"))


def test_one_tap_netdev_and_virtio_nic_per_interface_in_order():
    cmd = qemu.build_command(spec())
    assert option_values(cmd, "-netdev") == ["tap,id=net0,fd=7,vhost=off", "tap,id=net1,fd=9,vhost=off"]
    nics = [d for d in option_values(cmd, "-device") if d.startswith("virtio-net")]
    assert nics == ["virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01", "virtio-net-pci,netdev=net1,mac=52:54:00:00:00:02"]


def test_many_interfaces():
    nics = [(100 + k, f"52:54:00:00:01:{k:02x}") for k in range(12)]
    assert len(option_values(qemu.build_command(spec(nics=nics)), "-netdev")) == 12


def test_microvm_uses_mmio_devices_and_kvm_uses_host_cpu():
    cmd = qemu.build_command(spec(machine="microvm"), accel="kvm")
    assert option_values(cmd, "-machine")[0].startswith("microvm,")
    assert all(not d.endswith("-pci") and "-pci," not in d for d in option_values(cmd, "-device"))
    assert option_values(cmd, "-cpu") == ["host"] and option_values(cmd, "-accel") == ["kvm"]


def test_tb_size_and_bios():
    cmd = qemu.build_command(spec(tb_size=32, bios="qboot.rom"))
    assert option_values(cmd, "-accel") == ["tcg,tb-size=32"] and option_values(cmd, "-bios") == ["qboot.rom"]
    assert option_values(qemu.build_command(spec(tb_size=None)), "-accel") == ["tcg"]


def test_kernel_cmdline_carries_any_argv():
    argv = ["/usr/bin/env", "a b", "quote'\"", "ünïcode", "semi;colon", "--x=1,2", ""]
    append = qemu.kernel_cmdline(spec(argv=argv, hostname="vm1", env={"NESTBED_NODE": "vm1"}))
    assert decode_argv(append) == argv
    assert " " not in append.split("nestbed.argv=", 1)[1]
    assert "nestbed.hostname=vm1" in append and "console=ttyS0" in append
    env = next(w for w in append.split() if w.startswith("nestbed.env=")).split("=", 1)[1]
    assert guestkit.decode_items(env) == ["NESTBED_NODE=vm1"]


def test_plain_arguments_travel_as_they_are_others_as_base64():
    # stage 2 decodes a base64 item with one fork+exec in the guest: plain words skip it
    assert guestkit.encode_argv(["/usr/bin/python3", "-S", "--config", "/a/b.json", ""]) == \
        "%/usr/bin/python3,%-S,%--config,%/a/b.json,%"
    encoded = guestkit.encode_argv(["a b", "x,y", "%lit"])
    assert not any(item.startswith("%") for item in encoded.split(","))
    assert guestkit.decode_items(encoded) == ["a b", "x,y", "%lit"]


def test_kernel_cmdline_too_long_is_one_line_error():
    with pytest.raises(ExperimentError, match="at most"):
        qemu.kernel_cmdline(spec(argv=["x" * 3000]))


def test_build_command_is_pure(tmp_path):
    s = spec(qmp=tmp_path / "q", console=tmp_path / "c", pidfile=tmp_path / "p")
    assert qemu.build_command(s) == qemu.build_command(s)
    assert list(tmp_path.iterdir()) == []


DEP = """kernel/net/9p/9pnet_virtio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko
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
    dep = guestkit.parse_modules_dep(DEP)
    order = guestkit.resolve(["9pnet_virtio", "9p", "bridge"], dep)
    assert len(order) == len(set(order))
    for path in order:
        for needed in dep[guestkit.module_name(path)][1]:
            assert order.index(needed) < order.index(path)
    assert set(map(guestkit.module_name, order)) == {"9pnet_virtio", "virtio_ring", "9pnet", "virtio", "9p",
                                                      "netfs", "fscache", "bridge", "stp", "llc"}


def test_resolver_walks_transitive_dependencies_itself():
    partial = "a.ko: b.ko\nb.ko: c.ko\nc.ko:\n"      # modules.dep lists all, but do not rely on it
    assert guestkit.resolve(["a"], guestkit.parse_modules_dep(partial)) == ["c.ko", "b.ko", "a.ko"]


def test_resolver_skips_builtins_and_rejects_unknown_and_normalises_names():
    dep = guestkit.parse_modules_dep(DEP)
    assert guestkit.resolve(["virtio-net"], dep) == ["kernel/net/core/failover.ko.xz",
                                                     "kernel/drivers/net/net_failover.ko.xz",
                                                     "kernel/drivers/net/virtio_net.ko.xz"]
    assert guestkit.resolve(["9pnet_virtio"], dep, builtin=["kernel/drivers/virtio/virtio.ko"]) == \
        ["kernel/drivers/virtio/virtio_ring.ko", "kernel/net/9p/9pnet.ko", "kernel/net/9p/9pnet_virtio.ko"]
    with pytest.raises(KeyError):
        guestkit.resolve(["no_such_module"], dep)


def test_strip_signature():
    body = b"\x7fELF" + b"m" * 100
    sig = b"S" * 40
    signed = body + sig + struct.pack(">BBBBBxxxI", 0, 0, 0, 0, 0, len(sig)) + guestkit.SIGNATURE_MAGIC
    assert guestkit.strip_signature(signed) == body
    assert guestkit.strip_signature(body) == body


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
    data, names = guestkit.build_initramfs("6.1.0-test", None, busybox)
    entries = read_cpio(gzip.decompress(data))
    assert names == []
    assert entries["bin/busybox"][1] == busybox.read_bytes()
    assert entries["bin/sh"][1] == b"busybox"
    init = entries["init"][1].decode()
    assert init.startswith("#!/bin/sh") and guestkit.FAILURE_MARKER in init and "hostroot" in init
    assert "switch_root" in init and "overlay" in init
    assert entries["dev/console"][0] & 0o170000 == 0o020000
    assert guestkit.FAILURE_MARKER in entries["stage2"][1].decode()


def test_kernel_release_from_bzimage_header(tmp_path):
    image = bytearray(0x4000)
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x20E, 0x1000)
    image[0x1200:0x1200 + 40] = b"6.1.0-99-amd64 (debian-kernel@lists)\0".ljust(40, b"\0")
    path = tmp_path / "vmlinuz"
    path.write_bytes(bytes(image))
    assert guestkit.kernel_release(path) == "6.1.0-99-amd64"
    path.write_bytes(b"random")
    assert guestkit.kernel_release(path) is None


def test_apt_failure_is_one_preflight_line(tmp_path, monkeypatch):
    import subprocess

    from nestbed.errors import PreflightError

    def fake_run(cmd, **kwargs):
        if cmd[:2] == ["apt-cache", "depends"]:
            return subprocess.CompletedProcess(cmd, 0, "linux-image-amd64\n  Depends: linux-image-6.1.0-99-amd64\n", "")
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package linux-image-6.1.0-99-amd64\n")

    monkeypatch.setattr(guestkit.subprocess, "run", fake_run)
    with pytest.raises(PreflightError) as err:
        guestkit.fetch_debian_kernel(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "linux-image-6.1.0-99-amd64" in message and "Unable to locate" in message
    assert not any((tmp_path / "kernel").iterdir())          # nothing half-made left


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
    text = guestkit.load_modules_dep(root, writable=True)
    dep = guestkit.parse_modules_dep(text)
    assert dep["top"] == ("kernel/a/top.ko", ("kernel/a/mid.ko", "kernel/a/low.ko"))
    assert guestkit.resolve(["top"], dep) == ["kernel/a/low.ko", "kernel/a/mid.ko", "kernel/a/top.ko"]
    assert "alias rtnl-link-top top" in (root / "modules.alias").read_text()
