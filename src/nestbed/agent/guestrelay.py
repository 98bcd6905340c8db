"""What the host agent gets from the guest agents of the experiment's VMs: mailbox lines of the nodes inside them
(streamed by each guest's "mailbox" op, re-connected after a break) and their nodes' counters. Programs in those
nodes are another matter: agent/guestrunner.py."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan
from nestbed.realize.state import ExperimentState

Deliver = Callable[[str, str, str, Any, "str | None"], None]   # (node, kind, name, data, record kind): Events.deliver
RECONNECT_SECONDS = 1.0
COUNTERS_TIMEOUT = 0.5


class GuestRelay:
    def __init__(self, state: ExperimentState, plan: HostPlan, deliver: Deliver, log: Callable[[str], None],
                 stopping: threading.Event):
        self.state = state
        self.plan = plan
        self.deliver = deliver
        self.log = log
        self.stopping = stopping

    def start(self) -> None:
        """A thread per VM forwarding its nodes' mailbox lines, until `stopping` is set."""
        for vm in self.plan.vms:
            threading.Thread(target=self._forward_mailboxes, args=(vm.name,), name=f"mailbox-{vm.name}",
                             daemon=True).start()

    def _forward_mailboxes(self, vm_name: str) -> None:
        """Events and records written in mailboxes of nodes inside a VM, streamed by its guest agent."""
        from nestbed.agent.guestrunner import vm_client
        seq = 0
        while not self.stopping.is_set():
            try:
                conn = vm_client(self.state, self.plan, self.plan.vm(vm_name)).connect(timeout=5.0)
                try:
                    conn.sock.settimeout(None)
                    conn.send({"op": "mailbox", "since": seq})
                    while True:
                        message = conn.receive()
                        if message is None or "error" in message:
                            if message:
                                self.log(f"VM {vm_name} mailboxes: {message['error']}")
                                return
                            break
                        if "seq" in message:
                            seq = int(message["seq"])
                            self.deliver_line(message)
                finally:
                    conn.close()
            except (ExperimentError, OSError, ValueError):
                pass
            self.stopping.wait(RECONNECT_SECONDS)

    def deliver_line(self, message: dict[str, Any]) -> None:
        """A mailbox line from a guest: parsed there (a vhost's full agent) or raw (a qemu node's boot agent)."""
        from nestbed.agent import mailbox
        node = str(message["node"])
        if "line" not in message:
            self.deliver(node, str(message["kind"]), str(message["name"]), message.get("data"),
                         message.get("record_kind"))
            return
        try:
            kind, name, data, record_kind = mailbox.parse_line(str(message["line"]))
        except mailbox.MailboxError as error:
            self.log(f"mailbox {node}: {error}")
            return
        self.deliver(node, kind, name, data, record_kind)

    def counters(self) -> list[Any]:
        """Counters of nodes inside VMs, from their guest agents (a VM that does not answer is skipped)."""
        from nestbed.agent.guestrunner import vm_client
        from nestbed.agent.store import CounterRow
        rows = []
        for vm in self.plan.vms:
            try:
                answer = vm_client(self.state, self.plan, vm).request("counters", timeout=COUNTERS_TIMEOUT)
                rows += [CounterRow(**row) for row in answer.get("rows", [])]
            except Exception:       # noqa: BLE001 — booting, busy or gone: next second
                continue
        return rows
