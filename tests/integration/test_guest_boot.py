"""qemu guests booted for real (TCG here): the host's python runs in the guest, TAP NICs in a namespace show in
the guest with their MACs, and broken guests fail clearly and leave no process or TAP behind."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import PREFIX
from nestbed.realize import guestkit, namespaces
from nestbed.realize.guestkit import protocol
from nestbed.realize.qemu import accelprobe, cmdline, taps, vmprocess

pytestmark = [pytest.mark.root, pytest.mark.needs("qemu")]

BOOT_TIMEOUT = float(os.environ.get("NESTBED_TEST_BOOT_TIMEOUT", "10"))


@pytest.fixture(scope="module")
def kit() -> guestkit.Kit:
    return guestkit.ensure_kit()


@pytest.fixture
def netns():
    name = f"{PREFIX}vm{uuid.uuid4().hex[:8]}"
    namespaces.create([name])
    yield name
    namespaces.remove(name)


def spec_for(tmp: Path, kit: guestkit.Kit, argv: list[str], nics: list[tuple[int, str]] | None = None,
             name: str = "g") -> cmdline.VmSpec:
    return cmdline.VmSpec(name=name, memory=256, cpus=1, kernel=kit.kernel, initrd=kit.initrd, argv=argv,
                          nics=nics or [], qmp=tmp / "qmp.sock", console=tmp / "console.log", pidfile=tmp / "qemu.pid")


def qemu_pids_with(path: Path) -> list[int]:
    """qemu processes whose command line mentions `path` (this test's files only)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                words = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in words and str(path).encode() in words:
                found.append(int(entry))
    return found


def links_in(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_host_python_runs_in_guest(kit, tmp_path):
    marker = "NB-GUEST-" + "PYTHON-OK"
    code = ("import sys, time; print('NB-GUEST-' + 'PYTHON-OK', sys.version_info[:2], sys.argv[1:], flush=True);"
            " time.sleep(60)")
    arguments = ["plain/word", "a b", "x,y", "quote'\"", "%lit", "", "ünï"]   # plain ones travel unencoded
    spec = spec_for(tmp_path, kit, [sys.executable, "-c", code, *arguments])
    proc = vmprocess.launch(spec, "tcg")
    try:
        line = vmprocess.wait_console(spec.console, marker, BOOT_TIMEOUT, proc, spec.name)
        assert str(sys.version_info[:2]) in line
        assert line.rstrip().endswith(repr(arguments))
    finally:
        how = vmprocess.stop(spec.qmp, proc.pid, timeout=8.0, powerdown_wait=5.0)
    proc.wait(timeout=5)
    assert how == "powerdown"                                # the guest acts on the ACPI power button
    assert f"{protocol.EXIT_MARKER} powered down" in spec.console.read_text(errors="replace")
    assert not qemu_pids_with(tmp_path)
    assert vmprocess.stop(spec.qmp, proc.pid) == "gone"     # safe to repeat


def test_guest_writes_stay_in_guest(kit, tmp_path):
    """The host root is read-only in the guest and writes go to its tmpfs overlay."""
    probe = tmp_path / "written-by-guest"
    script = (f"echo guest > /etc/hosts && mkdir -p {probe.parent} && echo x > {probe} && "
              f"cat /etc/hosts && mkdir -p /var/emulab/boot && echo WRITES-OK")
    spec = spec_for(tmp_path, kit, ["/bin/sh", "-c", script])
    proc = vmprocess.boot(spec, "WRITES-OK", BOOT_TIMEOUT, "tcg")
    vmprocess.stop(spec.qmp, proc.pid, timeout=5.0)
    proc.wait(timeout=5)
    assert not probe.exists()
    assert "guest" not in Path("/etc/hosts").read_text().split()


def test_two_tap_nics_in_a_namespace(kit, tmp_path, netns):
    macs = ["52:54:00:aa:00:01", "52:54:00:aa:00:02"]
    fds = [taps.open_tap(namespaces.netns_path(netns), name) for name in ("vmtap0", "vmtap1")]
    listing = links_in(netns)
    assert "vmtap0" in listing and "vmtap1" in listing
    assert "vmtap0" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    script = "for d in /sys/class/net/*; do echo NIC ${d##*/} $(cat $d/address); done; echo NICS-DONE; sleep 60"
    spec = spec_for(tmp_path, kit, ["/bin/sh", "-c", script], nics=list(zip(fds, macs)))
    proc = vmprocess.boot(spec, "NICS-DONE", BOOT_TIMEOUT, "tcg")
    try:
        console = spec.console.read_text(errors="replace")
        seen = {line.split()[2] for line in console.splitlines() if line.startswith("NIC ") and len(line.split()) == 3}
        assert set(macs) <= seen, console
    finally:
        vmprocess.stop(spec.qmp, proc.pid, timeout=5.0)
    proc.wait(timeout=5)
    assert "vmtap" not in links_in(netns)                    # the TAPs lived as long as qemu


def test_failing_command_fails_fast_and_clearly(kit, tmp_path):
    spec = spec_for(tmp_path, kit, ["/nonexistent/nestbed-agent", "--config", "x"])
    with pytest.raises(vmprocess.GuestBootError) as err:
        vmprocess.boot(spec, "NEVER-PRINTED", BOOT_TIMEOUT, "tcg")
    assert "status 127" in str(err.value) and str(spec.console) in str(err.value)
    assert not qemu_pids_with(tmp_path)


def test_broken_kernel_fails_clearly_and_leaves_nothing(tmp_path, netns):
    bad = tmp_path / "vmlinuz-broken"
    bad.write_bytes(os.urandom(2 << 20))
    broken = guestkit.ensure_kit(cache_dir=tmp_path / "cache", kernel=bad)
    assert broken.source == "user" and broken.kernel == bad
    fd = taps.open_tap(namespaces.netns_path(netns), "vmtapb")
    spec = spec_for(tmp_path, broken, [sys.executable, "-c", "print('NEVER')"], nics=[(fd, "52:54:00:aa:00:09")])
    with pytest.raises(vmprocess.GuestBootError) as err:
        vmprocess.boot(spec, "NEVER", BOOT_TIMEOUT, "tcg")
    message = str(err.value)
    assert str(spec.console) in message and "\n" not in message
    assert not qemu_pids_with(tmp_path)
    assert "vmtapb" not in links_in(netns)
    assert not spec.qmp.exists()


def test_missing_kernel_is_a_preflight_error(tmp_path):
    from nestbed.errors import PreflightError
    with pytest.raises(PreflightError, match="does not exist"):
        guestkit.ensure_kit(cache_dir=tmp_path / "cache", kernel=tmp_path / "no-such-vmlinuz")


def test_accelerator_says_which(kit):
    accel, reason = accelprobe.accelerator()
    assert accel in ("kvm", "tcg") and reason
    assert accelprobe.accelerator() == (accel, reason)           # cached
