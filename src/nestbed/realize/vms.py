"""Realize a plan's VMs on this host: the control network, TAPs on the segments' bridges, qemu, ready agents.

Order (each step journaled before it happens):
  1. the experiment's credential (0600; lifecycle.up makes it for every experiment), from which each VM's own
     is derived (realize/credential.py) — a guest agent refuses a client that cannot answer its challenge
  2. (realize.control made the control bridge in the host's namespace, with the host's control address)
  3. per VM: guest.json, its credential file (qemu hands it to the guest as fw_cfg), TAPs made in their switch
     namespaces and enslaved to the segment bridges, the control TAP on the control bridge, then qemu with
     those fds, in a mount namespace of its own holding the guest's read-only tree (realize/qemu/export.py),
     seccomp-sandboxed and switched to a uid of its own; its pid is journaled as soon as it exists
  4. every agent polled over the control network until it says ready; a VM that dies or fails names its
     console log
Teardown (`stop_vms`) powers VMs off through QMP (quit, then kill after a timeout); their TAPs go with them.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from nestbed import guestproto, paths, procs
from nestbed.channel import AgentClient
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, VmPlan
from nestbed.realize import bootconfig, control, credential, guestkit, identity, namespaces, ownership, portshaping
from nestbed.realize.guestkit import protocol as guestprotocol
from nestbed.realize.guestkit.kernel import guest_kernel
from nestbed.realize.qemu import accelprobe, cmdline, export, taps, vmprocess
from nestbed.realize.qemu.export import Entry
from nestbed.realize.state import ExperimentState

READY_SECONDS_PER_VM = 20.0       # TCG on 2 cores: a few seconds each; VMs boot in parallel but share the cores
READY_SECONDS_MIN = 60.0
QEMU_UID_BASE = 0x6E000000     # uids no account uses (past systemd's, containers' and LDAP's usual ranges)
QEMU_UID_RANGE = 1 << 24


def client(state: ExperimentState, plan: HostPlan, vm: VmPlan) -> AgentClient:
    assert plan.control is not None
    return AgentClient(vm.name, vm.control_address.split("/")[0], plan.control.port,
                       credential.for_vm(state, vm.name))


def realize_vms(plan: HostPlan, state: ExperimentState, bridge_index: int, progress: object | None = None) -> None:
    if not plan.vms:
        return
    assert plan.control is not None
    journal = state.journal
    kit = guestkit.ensure_kit(kernel=guest_kernel())
    accel, why = accelprobe.accelerator()
    state.set_status("creating", accelerator=accel, accelerator_reason=why)

    credential.ensure(state)             # lifecycle.up made it (every experiment has one); made here otherwise

    base = state.directory / "vms"
    journal.record([{"t": "dir", "path": str(base)}])
    base.mkdir(exist_ok=True)
    launched: list[tuple[VmPlan, int, Path]] = []
    for k, vm in enumerate(plan.vms):
        launched.append(_launch(plan, state, vm, k, kit, accel, bridge_index))
    _wait_ready(plan, state, launched)


def _launch(plan: HostPlan, state: ExperimentState, vm: VmPlan, k: int, kit: guestkit.Kit, accel: str,
            bridge_index: int) -> tuple[VmPlan, int, Path]:
    from pyroute2 import NetNS
    journal = state.journal
    directory = paths.vm_dir(state.directory, vm.name)
    files = ["guest.json", "credential", "console.log", "console.log.stderr", "qmp.sock", "qemu.pid"]
    journal.record([{"t": "dir", "path": str(directory)}, {"t": "dir", "path": str(directory / "root")}]
                   + [{"t": "file", "path": str(directory / f)} for f in files]
                   + [{"t": "vm", "name": vm.name, "qmp": str(directory / "qmp.sock"),
                       "pidfile": str(directory / "qemu.pid")}])
    directory.mkdir()
    (directory / "root").mkdir()           # where qemu's own mount namespace has the guest's tree
    config = {"vm": json.loads(json.dumps(vm, default=lambda o: o.__dict__)),
              "control": {k: v for k, v in plan.control.__dict__.items() if k != "tunnel"} if plan.control else None,
              "state_dir": str(state.directory), "hosts_path": str(state.hosts_path),
              "boot": bootconfig.boot_config(vm, state.directory)}
    (directory / "guest.json").write_text(json.dumps(config))

    credential.write_for_vm(state, vm.name, directory / "credential")
    control_tap = control.vm_tap_name(plan.experiment, k)
    control_mtu = plan.control.mtu if plan.control else None     # the tunnel's, across hosts
    journal.record([{"t": "rootlink", "name": control_tap}])
    fds: list[int] = []
    try:
        fds.append(taps.open_tap(None, control_tap))
        control.join_control_bridge(control_tap, bridge_index, ownership.mark(plan.experiment, state.directory),
                                    control_mtu)
        for tap in vm.taps:
            fds.append(taps.open_tap(namespaces.netns_path(tap.netns), tap.name))
            with NetNS(tap.netns) as ns:
                index = ns.link_lookup(ifname=tap.name)[0]
                ns.link("set", index=index, master=tap.master, state="up")
            portshaping.shape_tap(plan.port_shaping, tap.netns, tap.name, index, journal)
        spec = cmdline.VmSpec(name=vm.name, memory=vm.memory, cpus=vm.cpus, kernel=kit.kernel, initrd=kit.initrd,
                              argv=[sys.executable, "-S", "-c", guestproto.BOOT_PROGRAM, "--config",
                                    str(directory / "guest.json")],
                              env={"PYTHONPATH": _guest_python_path()},
                              nics=list(zip(fds, [vm.control_mac] + [t.mac for t in vm.taps])),
                              qmp=directory / "qmp.sock", console=directory / "console.log",
                              pidfile=directory / "qemu.pid", hostname=vm.name,
                              extra_append=["nestbed.trace"] if os.environ.get("NESTBED_TRACE_BOOT") else [],
                              root=str(directory / "root"), export=_export(plan, state, vm, kit, directory),
                              fw_cfg={guestproto.CREDENTIAL_FW_CFG: directory / "credential"},
                              runas=qemu_user(plan.experiment, vm.name), control_mtu=control_mtu)
        proc = vmprocess.launch(spec, accel)          # closes the fds: the TAPs now live as long as qemu
        fds = []
    finally:
        for fd in fds:
            os.close(fd)
    journal.record([{"t": "pid", "pid": proc.pid, "start": procs.start_time(proc.pid)}])
    return vm, proc.pid, directory / "console.log"


def _export(plan: HostPlan, state: ExperimentState, vm: VmPlan, kit: guestkit.Kit, directory: Path) -> list[Entry]:
    """What the VM sees of the host (realize/qemu/export.py): the programs, the interpreter and nestbed, the
    guest kernel's modules, a /etc of its own, and copies of its guest.json, the hosts file and its nodes'
    identity files at their paths here; nothing else of the state directory (not the credential)."""
    nodes = [node.name for node in vm.guest.nodes] if vm.guest else []
    own = [(directory / "guest.json", directory / "guest.json"), (state.hosts_path, state.hosts_path)]
    own += [(identity.node_dir(state.directory, node), identity.node_dir(state.directory, node)) for node in nodes]
    trees = export.python_trees() + ([str(kit.modules_dir.resolve())] if kit.modules_dir else [])
    hosts = state.hosts_path.read_text() if state.hosts_path.is_file() else plan.hosts_file
    return export.plan(trees, [(str(a), str(b)) for a, b in own if a.exists()],
                       export.generated_etc(vm.name, hosts) + export.host_etc())


def qemu_user(experiment: str, vm: str) -> str:
    """The "uid:gid" a VM's qemu runs as once it holds its files: one of its own (no account has it), so that
    two VMs' qemus cannot signal or trace each other, nor touch anything a user owns."""
    import zlib
    uid = QEMU_UID_BASE + zlib.crc32(f"{experiment}/{vm}".encode()) % QEMU_UID_RANGE
    return f"{uid}:{uid}"


def _wait_ready(plan: HostPlan, state: ExperimentState, launched: list[tuple[VmPlan, int, Path]]) -> None:
    """Every agent prints "ready" on its console when configured: watch the consoles (no network round trips
    while guests boot), then confirm each over the control network with the credential."""
    deadline = time.monotonic() + max(READY_SECONDS_MIN, READY_SECONDS_PER_VM * len(launched) / (os.cpu_count() or 1))
    waiting = {vm.name: (vm, pid, console) for vm, pid, console in launched}
    while waiting:
        for name, (vm, pid, console) in list(waiting.items()):
            text = console.read_text(errors="replace") if console.exists() else ""
            problem = None
            if guestprotocol.FAILURE_MARKER in text or guestproto.FAILED_LINE.format(name=name) in text:
                problem = f"VM {name} failed to boot: {_last_lines(text)}"
            elif not os.path.exists(f"/proc/{pid}") or (procs.is_child(pid) and os.waitpid(pid, os.WNOHANG)[0]):
                problem = f"VM {name}: qemu exited during boot: {_last_lines(text)}"
            elif time.monotonic() > deadline:
                problem = f"VM {name}: its agent was not ready in time: {_last_lines(text)}"
            elif guestproto.READY_LINE.format(name=name) in text:
                try:
                    client(state, plan, vm).wait_ready(time.monotonic() + 10.0, lambda: None)
                    del waiting[name]
                    continue
                except ExperimentError as error:
                    problem = str(error)
            if problem:
                raise ExperimentError(f"{problem} (console log: {_keep_console(plan, name, console)})")
        time.sleep(0.05)


def _keep_console(plan: HostPlan, vm: str, console: Path) -> Path:
    """The experiment is rolled back, state directory included: keep the console where the user can read it,
    in the state root's .consoles/ (root's own, 0700; never a predictable path in a shared /tmp)."""
    kept_dir = paths.state_root() / ".consoles"
    kept = kept_dir / f"{plan.experiment}-{vm}-console.log"
    try:
        kept_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        kept.unlink(missing_ok=True)
        fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(console.read_bytes())
    except OSError:
        return console
    return kept


def _guest_python_path() -> str:
    """nestbed's own source and this environment's packages: the guest's Python skips site (-S), which costs
    a few hundred ms under software emulation."""
    import sysconfig

    import nestbed
    return f"{Path(nestbed.__file__).resolve().parents[1]}:{sysconfig.get_paths()['purelib']}"


def _last_lines(text: str, count: int = 2) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(no output)"


def stop_vms(entries: list[dict[str, object]]) -> int:
    """Power off every journaled VM at once (QMP powerdown, then quit, then kill); returns how many ran."""
    from concurrent.futures import ThreadPoolExecutor

    def stop(entry: dict[str, object]) -> bool:
        pidfile = Path(str(entry["pidfile"]))
        try:
            pid: int | None = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = None
        return vmprocess.stop(Path(str(entry["qmp"])), pid, timeout=5.0, powerdown_wait=1.0) != "gone"

    vms = [entry for entry in entries if entry["t"] == "vm"]
    if not vms:
        return 0
    with ThreadPoolExecutor(min(32, len(vms))) as pool:
        return sum(pool.map(stop, vms))
