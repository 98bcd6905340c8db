"""The host agent's counters thread: every NESTBED_COUNTER_INTERVAL seconds (default 1) the interface counters of
this host's process nodes (agent/sampler.py, with the attack counters of agent/attack_counters.py) and of the
nodes in VMs (from their guest agents) go into the store as one sample.

The node set may change while it runs (the agent's reload): `set_nodes` hands the new set to the thread, which
alone touches the sampler, and waits until the thread has opened the new nodes' sockets and closed the removed
ones' (a socket keeps its namespace alive)."""
from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from nestbed.plan.hostplan import NodePlan

FAILURES_LOGGED = 3       # a sampler that keeps failing logs its first few tracebacks only


class CounterSampling:
    def __init__(self, nodes: list[NodePlan], store: Any, guest_rows: Callable[[], list[Any]],
                 log: Callable[[str], None], stopping: threading.Event):
        self.store, self.guest_rows, self.log, self.stopping = store, guest_rows, log, stopping
        self._wanted = {n.name: n.netns for n in nodes}
        self._changed = threading.Condition()
        self._asked = 0               # node sets handed over (set_nodes) …
        self._applied = 0             # … and applied by the thread
        self._wake = threading.Event()
        self._running = False

    def set_nodes(self, nodes: list[NodePlan], wait: float = 10.0) -> bool:
        """Sample `nodes` from now on; True once the thread applied it (at once when it has not started or
        has ended: it starts from the new set)."""
        with self._changed:
            self._wanted = {n.name: n.netns for n in nodes}
            self._asked += 1
            asked = self._asked
            if not self._running:
                self._applied = asked
                return True
        self._wake.set()
        with self._changed:
            return self._changed.wait_for(lambda: self._applied >= asked or not self._running, wait)

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        """Sample until `stopping` is set (the body of the agent's "counters" thread)."""
        from nestbed.agent.sampler import Sampler
        interval = float(os.environ.get("NESTBED_COUNTER_INTERVAL") or 1.0)
        with self._changed:
            self._running = True
            wanted, self._applied = dict(self._wanted), self._asked
        try:
            sampler = Sampler(list(wanted.items()))
            self._attack_counters(list(wanted.items()), sampler)
        except Exception:
            self.log(f"counters: cannot start sampling: {traceback.format_exc()}")
            self._stopped()
            return
        failures = 0
        next_time = time.monotonic()
        try:
            while not self.stopping.is_set():
                wanted = self._apply_changes(sampler, wanted)
                try:
                    rows = sampler.sample() + self.guest_rows()
                    self.store.add_counters(time.time(), rows)
                    failures = 0
                except Exception:
                    failures += 1
                    if failures <= FAILURES_LOGGED:
                        self.log(f"counters: {traceback.format_exc()}")
                next_time += interval
                delay = next_time - time.monotonic()
                if delay < 0:
                    next_time = time.monotonic()
                    delay = 0
                self._wake.wait(delay)
                self._wake.clear()
        finally:
            sampler.close()
            self._stopped()

    def _apply_changes(self, sampler: Any, current: dict[str, str]) -> dict[str, str]:
        """The node set handed over since the last turn, applied to the sampler: (node → netns) now sampled."""
        with self._changed:
            if self._applied >= self._asked:
                return current
            wanted, asked = dict(self._wanted), self._asked
        try:
            sampler.remove([n for n, netns in current.items() if wanted.get(n) != netns])
            added = [(n, netns) for n, netns in wanted.items() if current.get(n) != netns]
            if added:
                sampler.add(added)
                self._attack_counters(added, sampler)
            self.log(f"counters: {len(wanted)} nodes sampled now")
        except Exception:
            self.log(f"counters: cannot change the node set: {traceback.format_exc()}")
        with self._changed:
            self._applied = asked
            self._changed.notify_all()
        return wanted

    def _attack_counters(self, nodes: list[tuple[str, str]], sampler: Any) -> None:
        from nestbed.agent.attack_counters import install_attack_counters
        try:        # flood traffic (DSCP 8) counted apart from the start: ~0.1 ms a node
            install_attack_counters(nodes, sampler)
        except Exception:       # noqa: BLE001 — no nf_tables: attack counters stay 0 and counters says why
            self.log(f"counters: attack counters not installed: {traceback.format_exc()}")

    def _stopped(self) -> None:
        with self._changed:
            self._running = False
            self._changed.notify_all()
