"""Realize a plan's VMs on this host: the control network, TAPs on the segments' bridges, qemu, ready agents.

Order (each step journaled before it happens):
  1. the experiment's credential (0600; lifecycle.up makes it for every experiment) — agents refuse
     anything without it
  2. (realize.control made the control bridge in the host's namespace, with the host's control address)
  3. per VM: guest.json, TAPs made in their switch namespaces and enslaved to the segment bridges, the control
     TAP on the control bridge, then qemu with those fds; its pid is journaled as soon as it exists
  4. every agent polled over the control network until it says ready; a VM that dies or fails names its
     console log
Teardown (`stop_vms`) powers VMs off through QMP (quit, then kill after a timeout); their TAPs go with them.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from nestbed import guestproto, paths, procs
from nestbed.channel import AgentClient
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, VmPlan
from nestbed.realize import bootconfig, control, credential, guestkit, namespaces, ownership
from nestbed.realize.guestkit import protocol as guestprotocol
from nestbed.realize.guestkit.kernel import guest_kernel
from nestbed.realize.qemu import accelprobe, cmdline, taps, vmprocess
from nestbed.realize.state import ExperimentState

READY_SECONDS_PER_VM = 20.0       # TCG on 2 cores: a few seconds each; VMs boot in parallel but share the cores
READY_SECONDS_MIN = 60.0


def client(state: ExperimentState, plan: HostPlan, vm: VmPlan) -> AgentClient:
    assert plan.control is not None
    return AgentClient(vm.name, vm.control_address.split("/")[0], plan.control.port,
                       paths.credential(state.directory).read_text().strip())


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
    files = ["guest.json", "console.log", "console.log.stderr", "qmp.sock", "qemu.pid"]
    journal.record([{"t": "dir", "path": str(directory)}]
                   + [{"t": "file", "path": str(directory / f)} for f in files]
                   + [{"t": "vm", "name": vm.name, "qmp": str(directory / "qmp.sock"),
                       "pidfile": str(directory / "qemu.pid")}])
    directory.mkdir()
    config = {"vm": json.loads(json.dumps(vm, default=lambda o: o.__dict__)),
              "control": plan.control.__dict__ if plan.control else None,
              "credential_file": str(paths.credential(state.directory)), "plan_path": str(state.plan_path),
              "state_dir": str(state.directory), "hosts_path": str(state.hosts_path),
              "boot": bootconfig.boot_config(vm, state.directory)}
    (directory / "guest.json").write_text(json.dumps(config))

    control_tap = control.vm_tap_name(plan.experiment, k)
    journal.record([{"t": "rootlink", "name": control_tap}])
    fds: list[int] = []
    try:
        fds.append(taps.open_tap(None, control_tap))
        control.join_control_bridge(control_tap, bridge_index, ownership.mark(plan.experiment, state.directory))
        for tap in vm.taps:
            fds.append(taps.open_tap(namespaces.netns_path(tap.netns), tap.name))
            with NetNS(tap.netns) as ns:
                index = ns.link_lookup(ifname=tap.name)[0]
                ns.link("set", index=index, master=tap.master, state="up")
        spec = cmdline.VmSpec(name=vm.name, memory=vm.memory, cpus=vm.cpus, kernel=kit.kernel, initrd=kit.initrd,
                              argv=[sys.executable, "-S", "-c", guestproto.BOOT_PROGRAM, "--config",
                                    str(directory / "guest.json")],
                              env={"PYTHONPATH": _guest_python_path()},
                              nics=list(zip(fds, [vm.control_mac] + [t.mac for t in vm.taps])),
                              qmp=directory / "qmp.sock", console=directory / "console.log",
                              pidfile=directory / "qemu.pid", hostname=vm.name,
                              extra_append=["nestbed.trace"] if os.environ.get("NESTBED_TRACE_BOOT") else [])
        proc = vmprocess.launch(spec, accel)          # closes the fds: the TAPs now live as long as qemu
        fds = []
    finally:
        for fd in fds:
            os.close(fd)
    journal.record([{"t": "pid", "pid": proc.pid, "start": procs.start_time(proc.pid)}])
    return vm, proc.pid, directory / "console.log"


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
    """The experiment is rolled back, state directory included: keep the console where the user can read it."""
    kept = Path(tempfile.gettempdir()) / f"nestbed-{plan.experiment}-{vm}-console.log"
    try:
        shutil.copyfile(console, kept)
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
