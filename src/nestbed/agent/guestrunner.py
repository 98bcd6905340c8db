"""GuestRunner: the nodes inside one VM (a qemu node, or the process nodes of a vhost), through its guest agent.

Every program is an `exec` stream of the guest agent (channel.AgentClient.run); a shell is its `shell` op on
this terminal (channel.interactive_shell). The guest agent knows no timeout: a program past one is reported as
timed out and left to end in the VM. Spawned programs run detached in the VM (setsid), their output in the
guest's /run/nestbed-NODE-NAME.log.
"""
from __future__ import annotations

import io
import shlex

from nestbed.agent.runners import Exit, Output, Running, RunsByStart, Spawn, Spawned
from nestbed.channel import AgentClient, interactive_shell
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, VmPlan
from nestbed.realize.state import ExperimentState


def vm_client(state: ExperimentState, plan: HostPlan, vm: VmPlan) -> AgentClient:
    """The client of a VM's guest agent (on the control network; it answers the agent's challenge with the VM's
    own credential)."""
    from nestbed.realize import vms
    return vms.client(state, plan, vm)


class _Writer:
    """A binary file's write and flush over an Output (what AgentClient.run writes to)."""

    def __init__(self, output: Output):
        self.write = output

    def flush(self) -> None:
        pass


class GuestRunner(RunsByStart):
    def __init__(self, client: AgentClient):
        self.client = client

    def stream(self, node: str, argv: list[str], on_out: Output, on_err: Output, env: dict[str, str] | None = None,
               timeout: float | None = None) -> Exit:
        """timeout: the guest agent has none; the program runs to its end."""
        return Exit(self.client.run(node, argv, stdout=_Writer(on_out), stderr=_Writer(on_err),  # type: ignore[arg-type]
                                    env=env))

    def start(self, node: str, argv: list[str], env: dict[str, str] | None = None) -> Running:
        return Running(lambda on_out, on_err: self.stream(node, argv, on_out, on_err, env).rc)

    def _script(self, node: str, script: str) -> tuple[int, str, str]:
        """A /bin/sh script in the node: (exit code, stdout, stderr)."""
        out, err = io.BytesIO(), io.BytesIO()
        rc = self.client.run(node, ["/bin/sh", "-c", script], stdout=out, stderr=err)
        return rc, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")

    def spawn_many(self, spawns: list[Spawn]) -> list[Spawned]:
        spawned = []
        for spawn in spawns:
            log = f"/run/nestbed-{spawn.node}-{spawn.name}.log"
            command = shlex.join(spawn.argv)
            if spawn.env:
                command = f"env {shlex.join(f'{k}={v}' for k, v in spawn.env.items())} {command}"
            try:
                rc, out, _ = self._script(spawn.node, f"setsid {command} >>{shlex.quote(log)} 2>&1 </dev/null "
                                                      f"& echo $!")
                spawned.append(Spawned(int(out.split()[-1]), f"{self.client.vm}:{log}") if rc == 0
                               else Spawned(error=f"failed ({rc})"))
            except (ExperimentError, ValueError, IndexError) as error:
                spawned.append(Spawned(error=str(error)))
        return spawned

    def stop_many(self, programs: list[tuple[str, int]]) -> None:
        """One script for all of them, in the node of the first (the VM's processes share one pid space)."""
        if not programs:
            return
        groups = " ".join(f"-{pid}" for _, pid in programs)
        self._script(programs[0][0], f"kill -TERM {groups} 2>/dev/null; sleep 1; kill -KILL {groups} 2>/dev/null; "
                                     f"true")

    def exec(self, node: str, argv: list[str]) -> int:
        """argv's output to this process's stdout and stderr as the guest agent relays it; its exit code."""
        return self.client.run(node, argv)

    def shell(self, node: str) -> int:
        return interactive_shell(self.client, node)

