"""Timeouts reach a qemu node (the guest agent kills the program, the host agent answers rc -9 in time), and
`down` returns only once the VM's qemu, the host agent and its launcher are dead and reaped (a zombie of init
aside: it holds nothing and only init may reap it)."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import nestbed, state_dir
from nestbed import procs
from nestbed.agent.hostclient import HostAgentClient

pytestmark = [pytest.mark.root]

TOPOLOGY = """\
nodes:
  a: {}
  vm1: {kind: qemu}
links:
  - {ends: [a, vm1]}
"""


def test_a_timeout_kills_a_program_in_a_qemu_node_and_down_leaves_no_qemu_listed(experiments):
    assert subprocess.run(["which", "qemu-system-x86_64"], capture_output=True).returncode == 0, \
        "qemu-system-x86 is not installed"
    name = experiments.up(TOPOLOGY)
    client = HostAgentClient(name)
    started = time.monotonic()
    (result,) = client.run_many([("vm1", ["sleep", "30"])], timeout=2)
    assert time.monotonic() - started < 6.0, "run_many did not return at its timeout"
    assert (result["rc"], result.get("timeout")) == (-9, True), result
    started = time.monotonic()
    rc, _, _ = client.run("vm1", ["sh", "-c", "sleep 30 & sleep 30"], timeout=2)
    assert rc == -9 and time.monotonic() - started < 6.0
    # the guest killed the whole group: no sleep is left in the VM
    (left,) = client.run_many([("vm1", ["sh", "-c", "ps -o comm= 2>/dev/null | grep -c '^sleep' || true"])],
                              timeout=10)
    assert left["out"].strip() in ("0", ""), left
    client.close()

    journal = [json.loads(line) for line in (state_dir(name) / "journal.jsonl").read_text().splitlines()]
    qemu = int((state_dir(name) / "vms/vm1/qemu.pid").read_text())
    pids = {e["pid"]: e.get("start") for e in journal if e["t"] == "pid"}
    assert qemu in pids and procs.is_same(qemu, pids[qemu])
    nestbed("down", name)
    for pid, start in pids.items():         # qemu, the host agent, its launcher: dead, and nobody's zombie but init's
        # (a zombie of init holds nothing and only init may reap it: this container's init takes 1-2 s)
        gone = not procs.is_same(pid, start) or (procs.state_of(pid) == "Z" and procs.parent_of(pid) == 1)
        assert gone, f"pid {pid} still listed ({procs.state_of(pid)}, parent {procs.parent_of(pid)}) after down"
    assert procs.state_of(qemu) in ("", "Z") or not procs.is_same(qemu, pids[qemu])     # qemu itself is dead
