"""Where a running experiment's counter samples are, for the web view (the feed's live rates, a node's series).

- one host: its agent's store, `<state>/<exp>/control.sqlite`;
- emulated hosts (a cluster on this machine, `realize.state` status "cluster" without real hosts): each host's
  own store, a file here (`cluster/deploy.host_stores`);
- real hosts: their stores stay where they are (copying a whole store each second is far too slow): each host
  agent's `counters` op gives its newest sample, its `counter_window` op one node's rows, over the cluster's
  control (`cluster/fanout.ClusterControl`), connected once and kept (web/sharedcontrol.py). A host that cannot
  answer is left out (its links go to gaps once its frame is stale), said once, and asked again only every
  `RETRY_SECONDS` (its SSH host connects again when asked; an unreachable one costs a connect timeout); only a
  control broken as a whole (every host failing) is made again, and no more than once every `RETRY_SECONDS`.

Samples stay per host: hosts sample at their own moments, and a rate needs each interface's own sample times.
Each host's sample is stamped with this controller's monotonic clock when it changes (`seen_at`): hosts' own
clocks need not agree with ours or with each other's, so staleness is judged by when we saw a new sample.
Stores are opened once and kept, and never created here (their agent makes them): a file that is not SQLite yet
is refused before it is opened, since a connection whose setup failed would linger and hold its lock. Called
from the executor, by the feed and node requests at once: one lock guards what is opened.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nestbed import paths
from nestbed.agent.store import CounterRow, Sent, Store
from nestbed.cluster import deploy, hostcopies
from nestbed.realize.state import ExperimentState
from nestbed.web.sharedcontrol import RETRY_SECONDS, SharedControl

SQLITE_HEADER = b"SQLite format 3\x00"
LOCAL = "local"                     # the host key of a one-host experiment's sample
HostSample = tuple[float | None, list[Sent]]     # (when, (node, iface, tx, attack tx) rows); (None, []) before any
Window = list[tuple[float, CounterRow]]
CLUSTER = "the cluster"             # the failure key of the control as a whole
log = logging.getLogger(__name__)


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


def _sent(answer: dict[str, Any]) -> HostSample:
    return answer.get("created"), [(r.node, r.iface, r.tx_bytes, r.attack_tx_bytes) for r in _rows(answer)]


def _window(answer: dict[str, Any]) -> Window:
    return [(float(row.pop("created")), CounterRow(**row)) for row in (dict(r) for r in answer.get("rows") or [])]


class HostCounters:
    def __init__(self, state: ExperimentState, control_of: Callable[[str], Any] = deploy.control,
                 stores_of: Callable[[str], dict[str, Path]] = deploy.host_stores,
                 clock: Callable[[], float] = time.monotonic):
        self.state = state
        self.control = SharedControl(lambda: control_of(state.name), clock)    # the cluster's (real hosts)
        self._stores_of = stores_of           # emulated hosts' stores (never called with real hosts)
        self._stores: dict[Path, Store] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._seen: dict[str, tuple[float | None, float]] = {}   # host → (its newest created, our clock then)
        self._failing: dict[str, float] = {}  # host (or CLUSTER) → when it last failed (latest() only)

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
    def _failed(self, key: str, why: str) -> None:
        if key not in self._failing:
            log.warning("web view: no counters from %s: %s", key, why)
        self._failing[key] = self._clock()

    def _answered(self, key: str) -> None:
        if self._failing.pop(key, None) is not None:
            log.info("web view: counters from %s again", key)

    def _asked(self) -> dict[str, HostSample]:
        """Each real host's newest sample; the hosts that cannot say are left out (and said once)."""
        now = self._clock()
        skip = [host for host, failed in self._failing.items() if host != CLUSTER and now < failed + RETRY_SECONDS]
        try:
            with self.control.using() as control:
                try:
                    answers = control.counters(skip) if skip else control.counters()
                except Exception as error:
                    self.control.broken(control, f"{type(error).__name__}: {error}")
                    raise
                if answers and all("error" in answer for answer in answers.values()):
                    self.control.broken(control, "no host answers")
        except Exception as error:
            self._failed(CLUSTER, str(error) or type(error).__name__)
            return {}
        self._answered(CLUSTER)
        samples: dict[str, HostSample] = {}
        for host, answer in answers.items():
            if "error" in answer:
                self._failed(host, str(answer["error"]))
                continue
            try:
                samples[host] = _sent(answer)
            except (TypeError, ValueError, KeyError, AttributeError) as error:     # another agent version's rows
                self._failed(host, f"its answer does not fit ({type(error).__name__}: {error})")
                continue
            self._answered(host)
        return samples

    def _stamped(self, samples: dict[str, HostSample]) -> dict[str, HostSample]:
        now = self._clock()
        for host, (created, _) in samples.items():
            if created is not None and self._seen.get(host, (None, 0.0))[0] != created:
                self._seen[host] = (created, now)
        return samples

    def seen_at(self, hosts: Sequence[str]) -> list[float]:
        """When (this controller's monotonic clock) each host's newest sample was first seen by `latest`."""
        return [self._seen[host][1] if host in self._seen else float("-inf") for host in hosts]

    # -- what the web view reads ------------------------------------------------------------------------------
    def latest(self) -> dict[str, HostSample]:
        """Each host's newest sample."""
        mode = self.mode()
        if mode == "local":
            store = self.local_store()
            return self._stamped({} if store is None else {LOCAL: store.latest_sent()})
        if mode == "emulated":
            return self._stamped({host: store.latest_sent() for host, store in self._host_stores().items()})
        return self._stamped(self._asked())

    def window(self, node: str, host: str, ifaces: Sequence[str], after: float | None, seconds: float) -> Window:
        """One node's samples of `ifaces` (on `host`), oldest first: after `after`, or the last `seconds`."""
        mode = self.mode()
        if mode == "real":              # one host's failure is that request's (its SSH host connects again itself)
            with self.control.using() as control:
                return _window(control.counter_window(node, list(ifaces), after, seconds))
        store = self.local_store() if mode == "local" else self._host_stores().get(host)
        return [] if store is None else store.counter_window(node, ifaces, after, seconds)

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()
        self.control.close()
