"""GuestRunner: the nodes inside one VM (a qemu node, or the process nodes of a vhost), through its guest agent.

Every program is an `exec` stream of the guest agent (channel.AgentClient.run); a shell is its `shell` op on
this terminal (channel.interactive_shell). A timeout travels with the request: the guest agent kills the
program's process group then and answers rc -9, "timeout": true; this side gives up a little later
(channel.TIMEOUT_GRACE) when the VM does not answer, naming it. Spawned programs run detached in the VM (setsid),
their output in the guest's /run/nestbed-NODE-NAME.log.
"""
from __future__ import annotations

import io
import shlex
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from nestbed.agent.runners import TIMED_OUT, Exit, Output, Program, Running, Spawn, Spawned
from nestbed.channel import AgentClient, interactive_shell
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, VmPlan
from nestbed.realize.state import ExperimentState

T = TypeVar("T")

# A pid's start time in the VM (field 22 of /proc/PID/stat, after the command name), as procs.start_time: sh only.
START_TIME = 'start_time() { read -r l <"/proc/$1/stat" || return; set -- ${l##*") "}; echo "${20}"; } 2>/dev/null; '


def vm_client(state: ExperimentState, plan: HostPlan, vm: VmPlan) -> AgentClient:
    """The client of a VM's guest agent (on the control network; it answers the agent's challenge with the VM's
    own credential)."""
    from nestbed.realize import vms
    return vms.client(state, plan, vm)


SCRIPT_SECONDS = 30.0      # spawn's and stop's scripts end in a second or two; a VM that hangs must not hang them


class _Writer:
    """A binary file's write and flush over an Output (what AgentClient.run writes to)."""

    def __init__(self, output: Output):
        self.write = output

    def flush(self) -> None:
        pass


class GuestRunner:
    def __init__(self, client: AgentClient):
        self.client = client

    def stream(self, node: str, argv: list[str], on_out: Output, on_err: Output, env: dict[str, str] | None = None,
               timeout: float | None = None) -> Exit:
        rc, timed_out = self.client.run(node, argv, stdout=_Writer(on_out), stderr=_Writer(on_err),  # type: ignore[arg-type]
                                        env=env, timeout=timeout)
        return Exit(TIMED_OUT if timed_out else rc, timed_out)

    def start(self, node: str, argv: list[str], env: dict[str, str] | None = None) -> Running:
        """No timeout reaches the VM from here (finish's is reported, the program left to end there): run and
        run_many send theirs."""
        return Running(lambda on_out, on_err: self.stream(node, argv, on_out, on_err, env).rc)

    def run(self, node: str, argv: list[str], timeout: float | None = 60.0,
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
        (result,) = self.run_many([{"node": node, "argv": argv, "env": env}], timeout)
        return int(result["rc"]), str(result["out"]), str(result["err"])

    def run_many(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        """Each item an exec of its own, at once (a thread each), the timeout sent with it."""
        results: list[dict[str, Any]] = [{} for _ in items]

        def run(k: int, item: dict[str, Any]) -> None:
            out, err = bytearray(), bytearray()
            try:
                finished = self.stream(str(item["node"]), list(item["argv"]), out.extend, err.extend,
                                       item.get("env"), timeout)
                rc, timed_out = finished.rc, finished.timed_out
            except ExperimentError as error:
                rc, timed_out = -1, False
                err.extend(f"{error}\n".encode())
            results[k] = {"rc": rc, "out": out.decode(errors="replace"), "err": err.decode(errors="replace"),
                          **({"timeout": True} if timed_out else {})}
        _at_once(run, items)
        return results

    def _script(self, node: str, script: str) -> tuple[int, str, str]:
        """A /bin/sh script in the node: (exit code, stdout, stderr)."""
        out, err = io.BytesIO(), io.BytesIO()
        rc, _ = self.client.run(node, ["/bin/sh", "-c", script], stdout=out, stderr=err, timeout=SCRIPT_SECONDS)
        return rc, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")

    def spawn_many(self, spawns: list[Spawn]) -> list[Spawned]:
        """Each spawn a script of its own, all at once (a thread each, as run_many): one after the other, twenty
        bots in two vhosts took 29 s under TCG, each spawn waiting behind the programs started before it."""
        spawned: list[Spawned] = [Spawned(error="not started") for _ in spawns]

        def start(k: int, spawn: Spawn) -> None:
            log = f"/run/nestbed-{spawn.node}-{spawn.name}.log"
            command = shlex.join(spawn.argv)
            if spawn.env:
                command = f"env {shlex.join(f'{k}={v}' for k, v in spawn.env.items())} {command}"
            try:
                rc, out, _ = self._script(spawn.node, f"{START_TIME}setsid {command} >>{shlex.quote(log)} 2>&1 "
                                                      f"</dev/null & echo $! $(start_time $!)")
                pid, *begun = out.splitlines()[-1].split()
                spawned[k] = (Spawned(int(pid), f"{self.client.vm}:{log}", start=int(begun[0]) if begun else None)
                              if rc == 0 else Spawned(error=f"failed ({rc})"))
            except (ExperimentError, ValueError, IndexError) as error:
                spawned[k] = Spawned(error=str(error))
        _at_once(start, spawns)
        return spawned

    def stop_many(self, programs: list[Program]) -> None:
        """One script for all of them, in the node of the first (the VM's processes share one pid space). Only
        groups whose leader still has the start time it had at spawn are signalled (pids are recycled)."""
        known = [p for p in programs if p.start is not None]
        if not known:
            return
        pairs = " ".join(f"{p.pid}:{p.start}" for p in known)
        self._script(known[0].node, f"{START_TIME}ours=; for g in {pairs}; do "
                                    '[ "$(start_time ${g%:*})" = "${g#*:}" ] && ours="$ours -${g%:*}"; done; '
                                    'if [ -n "$ours" ]; then kill -TERM $ours; sleep 1; kill -KILL $ours; fi '
                                    "2>/dev/null; true")

    def exec(self, node: str, argv: list[str]) -> int:
        """argv's output to this process's stdout and stderr as the guest agent relays it; its exit code."""
        return self.client.run(node, argv)[0]

    def shell(self, node: str) -> int:
        return interactive_shell(self.client, node)


def _at_once(work: Callable[[int, T], None], items: list[T]) -> None:
    """work(k, item) for every item, each in a thread of its own; returns when all are done."""
    threads = [threading.Thread(target=work, args=(k, item), daemon=True) for k, item in enumerate(items)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
