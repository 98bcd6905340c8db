"""The host agent's counters thread: every NESTBED_COUNTER_INTERVAL seconds (default 1) the interface counters of
this host's process nodes (agent/sampler.py, with the attack counters of agent/attack_counters.py) and of the
nodes in VMs (from their guest agents) go into the store as one sample."""
from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from nestbed.plan.hostplan import NodePlan

FAILURES_LOGGED = 3       # a sampler that keeps failing logs its first few tracebacks only


def sample_counters(nodes: list[NodePlan], store: Any, guest_rows: Callable[[], list[Any]],
                    log: Callable[[str], None], stopping: threading.Event) -> None:
    """Sample until `stopping` is set (the body of the agent's "counters" thread)."""
    from nestbed.agent.attack_counters import install_attack_counters
    from nestbed.agent.sampler import Sampler
    interval = float(os.environ.get("NESTBED_COUNTER_INTERVAL") or 1.0)
    try:
        namespaces = [(n.name, n.netns) for n in nodes]
        sampler = Sampler(namespaces)
        try:        # flood traffic (DSCP 8) counted apart from the start: ~0.1 ms a node
            install_attack_counters(namespaces, sampler)
        except Exception:       # noqa: BLE001 — no nf_tables: attack counters stay 0 and counters says why
            log(f"counters: attack counters not installed: {traceback.format_exc()}")
    except Exception:
        log(f"counters: cannot start sampling: {traceback.format_exc()}")
        return
    failures = 0
    next_time = time.monotonic()
    while not stopping.is_set():
        try:
            rows = sampler.sample() + guest_rows()
            store.add_counters(time.time(), rows)
            failures = 0
        except Exception:
            failures += 1
            if failures <= FAILURES_LOGGED:
                log(f"counters: {traceback.format_exc()}")
        next_time += interval
        delay = next_time - time.monotonic()
        if delay < 0:
            next_time = time.monotonic()
            delay = 0
        stopping.wait(delay)
