"""qemu command lines and the guest kernel command line (no root)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nestbed.errors import ExperimentError
from nestbed.realize.guestkit import protocol
from nestbed.realize.qemu import cmdline


def spec(**changes) -> cmdline.VmSpec:
    base = {"name": "vm1", "memory": 256, "cpus": 2, "kernel": Path("/k/vmlinux"), "initrd": Path("/k/initrd.gz"),
            "argv": ["/usr/bin/python3", "-m", "nestbed.agent.guest", "--config", "/var/lib/nestbed/e/vm1.json"],
            "nics": [(7, "52:54:00:00:00:01"), (9, "52:54:00:00:00:02")], "qmp": Path("/run/e/vm1.qmp"),
            "console": Path("/var/lib/nestbed/e/vm1.console"), "pidfile": Path("/run/e/vm1.pid")}
    base.update(changes)
    return cmdline.VmSpec(**base)


def option_values(cmd: list[str], option: str) -> list[str]:
    return [cmd[k + 1] for k, word in enumerate(cmd) if word == option]


def decode_argv(append: str) -> list[str]:
    value = next(word for word in append.split() if word.startswith("nestbed.argv="))
    return protocol.decode_items(value.split("=", 1)[1])


def test_basic_command_line():
    cmd = cmdline.build_command(spec())
    assert cmd[0] == cmdline.QEMU
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
    cmd = cmdline.build_command(spec())
    assert option_values(cmd, "-netdev") == ["tap,id=net0,fd=7,vhost=off", "tap,id=net1,fd=9,vhost=off"]
    nics = [d for d in option_values(cmd, "-device") if d.startswith("virtio-net")]
    assert nics == ["virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01",
                    "virtio-net-pci,netdev=net1,mac=52:54:00:00:00:02"]


def test_many_interfaces():
    nics = [(100 + k, f"52:54:00:00:01:{k:02x}") for k in range(12)]
    assert len(option_values(cmdline.build_command(spec(nics=nics)), "-netdev")) == 12


def test_microvm_uses_mmio_devices_and_kvm_uses_host_cpu():
    cmd = cmdline.build_command(spec(machine="microvm"), accel="kvm")
    assert option_values(cmd, "-machine")[0].startswith("microvm,")
    assert all(not d.endswith("-pci") and "-pci," not in d for d in option_values(cmd, "-device"))
    assert option_values(cmd, "-cpu") == ["host"] and option_values(cmd, "-accel") == ["kvm"]


def test_tb_size_and_bios():
    cmd = cmdline.build_command(spec(tb_size=32, bios="qboot.rom"))
    assert option_values(cmd, "-accel") == ["tcg,tb-size=32"] and option_values(cmd, "-bios") == ["qboot.rom"]
    assert option_values(cmdline.build_command(spec(tb_size=None)), "-accel") == ["tcg"]


def test_kernel_cmdline_carries_any_argv():
    argv = ["/usr/bin/env", "a b", "quote'\"", "ünïcode", "semi;colon", "--x=1,2", ""]
    append = cmdline.kernel_cmdline(spec(argv=argv, hostname="vm1", env={"NESTBED_NODE": "vm1"}))
    assert decode_argv(append) == argv
    assert " " not in append.split("nestbed.argv=", 1)[1]
    assert "nestbed.hostname=vm1" in append and "console=ttyS0" in append
    env = next(w for w in append.split() if w.startswith("nestbed.env=")).split("=", 1)[1]
    assert protocol.decode_items(env) == ["NESTBED_NODE=vm1"]


def test_kernel_cmdline_too_long_is_one_line_error():
    with pytest.raises(ExperimentError, match="at most"):
        cmdline.kernel_cmdline(spec(argv=["x" * 3000]))


def test_build_command_is_pure(tmp_path):
    s = spec(qmp=tmp_path / "q", console=tmp_path / "c", pidfile=tmp_path / "p")
    assert cmdline.build_command(s) == cmdline.build_command(s)
    assert list(tmp_path.iterdir()) == []


def test_qemu_is_sandboxed_runs_as_its_own_user_and_gets_the_credential_by_fw_cfg():
    cmd = cmdline.build_command(spec(fw_cfg={"opt/nestbed/credential": Path("/s/vms/vm1,x/credential")},
                                     runas="1845493760:1845493760"))
    assert option_values(cmd, "-sandbox") == ["on,obsolete=deny,spawn=deny,resourcecontrol=deny"]
    assert option_values(cmd, "-runas") == ["1845493760:1845493760"]
    assert option_values(cmd, "-fw_cfg") == ["name=opt/nestbed/credential,file=/s/vms/vm1,,x/credential"]
    assert "-runas" not in cmdline.build_command(spec())
    assert "-sandbox" not in cmdline.build_command(spec(sandbox=False))
