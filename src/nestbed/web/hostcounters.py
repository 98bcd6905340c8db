"""Where a running experiment's counter samples are, for the web view (the feed's live rates, a node's series).

- one host: its agent's store, `<state>/<exp>/control.sqlite`;
- emulated hosts (a cluster on this machine, `realize.state` status "cluster" without real hosts): each host's
  own store, a file here (`cluster/deploy.host_stores`);
- real hosts: their stores stay where they are (copying a whole store each second is far too slow): each host
  agent's `counters` op gives its newest sample, its `counter_window` op one node's rows, over the cluster's
  control (`cluster/fanout.ClusterControl`), connected once and kept.

Samples stay per host: hosts sample at their own moments, and a rate needs each interface's own sample times.
Stores are opened once and kept, and never created here (their agent makes them): a file that is not SQLite yet
is refused before it is opened, since a connection whose setup failed would linger and hold its lock. Called
from the executor, by the feed and node requests at once: one lock guards what is opened.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nestbed import paths
from nestbed.agent.store import CounterRow, Sent, Store
from nestbed.cluster import deploy, hostcopies
from nestbed.realize.state import ExperimentState

SQLITE_HEADER = b"SQLite format 3\x00"
LOCAL = "local"                     # the host key of a one-host experiment's sample
HostSample = tuple[float | None, list[Sent]]     # (when, (node, iface, tx, attack tx) rows); (None, []) before any
Window = list[tuple[float, CounterRow]]


def open_store(path: Path) -> Store | None:
    """The store at `path` once its agent has made it; None before. Raises ValueError for a file not SQLite."""
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return None
    if len(header) < len(SQLITE_HEADER):
        return None                       # the agent is making it
    if header != SQLITE_HEADER:
        raise ValueError(f"{path} is not an SQLite file")
    return Store(path)


def _rows(answer: dict[str, Any]) -> list[CounterRow]:
    return [CounterRow(**row) for row in answer.get("rows") or []]


def _window(answer: dict[str, Any]) -> Window:
    return [(float(row.pop("created")), CounterRow(**row)) for row in (dict(r) for r in answer.get("rows") or [])]


class HostCounters:
    def __init__(self, state: ExperimentState, control_of: Callable[[str], Any] = deploy.control,
                 stores_of: Callable[[str], dict[str, Path]] = deploy.host_stores):
        self.state = state
        self._control_of = control_of         # the cluster's control (real hosts)
        self._stores_of = stores_of           # emulated hosts' stores (never called with real hosts)
        self._stores: dict[Path, Store] = {}
        self._control: Any = None
        self._lock = threading.Lock()

    def mode(self) -> str:
        """"local", "emulated" or "real" (read each time: cheap, and `up` may still be writing the status)."""
        if not self.state.status().get("cluster"):
            return "local"
        return "real" if hostcopies.real_hosts(self.state) else "emulated"

    # -- stores on this machine -----------------------------------------------------------------------------
    def _store(self, path: Path) -> Store | None:
        with self._lock:
            if path not in self._stores:
                store = open_store(path)
                if store is None:
                    return None
                self._stores[path] = store
            return self._stores[path]

    def local_store(self) -> Store | None:
        """The experiment's own store: a one-host experiment's counters and events; on a cluster `nestbed run`'s
        (the scenario's events)."""
        return self._store(paths.store(self.state.directory))

    def _host_stores(self) -> dict[str, Store]:
        found = {host: self._store(path) for host, path in self._stores_of(self.state.name).items()}
        return {host: store for host, store in found.items() if store is not None}

    # -- the cluster's control (real hosts) -------------------------------------------------------------------
    def _cluster(self) -> Any:
        with self._lock:
            if self._control is None:
                self._control = self._control_of(self.state.name)
            return self._control

    def _asking(self, ask: Callable[[Any], Any]) -> Any:
        """A call on the cluster's control; a failure drops it, so the next call connects again."""
        control = self._cluster()
        try:
            return ask(control)
        except BaseException:
            with self._lock:
                if self._control is control:
                    self._control = None
            control.close()
            raise

    # -- what the web view reads ------------------------------------------------------------------------------
    def latest(self) -> dict[str, HostSample]:
        """Each host's newest sample."""
        mode = self.mode()
        if mode == "local":
            store = self.local_store()
            return {} if store is None else {LOCAL: store.latest_sent()}
        if mode == "emulated":
            return {host: store.latest_sent() for host, store in self._host_stores().items()}
        answers = self._asking(lambda control: control.counters())
        return {host: (answer.get("created"), [(r.node, r.iface, r.tx_bytes, r.attack_tx_bytes)
                                               for r in _rows(answer)]) for host, answer in answers.items()}

    def window(self, node: str, host: str, ifaces: Sequence[str], after: float | None, seconds: float) -> Window:
        """One node's samples of `ifaces` (on `host`), oldest first: after `after`, or the last `seconds`."""
        mode = self.mode()
        if mode == "real":
            return _window(self._asking(lambda control: control.counter_window(node, list(ifaces), after, seconds)))
        store = self.local_store() if mode == "local" else self._host_stores().get(host)
        return [] if store is None else store.counter_window(node, ifaces, after, seconds)

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
            control, self._control = self._control, None
        for store in stores:
            store.close()
        if control is not None:
            control.close()
