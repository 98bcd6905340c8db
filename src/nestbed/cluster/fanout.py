"""ClusterControl: the ExperimentControl of an experiment on several hosts, over each host's own.

Scenario agents, collect and the CLI drive it exactly as one host's: a call naming a node goes to the host the
node runs on; batches (run_many, spawn_many, stop_many) are split per host and sent in parallel; records and
events are every host's, merged in time order; an event published goes to every host (a trigger may wait on any);
a link change goes to every host holding a member of the segment. Spawn handles carry their host ("emu1/h3").
Counters are each host's newest sample, per host (the web view's live rates; a host that cannot answer says why
in its place), or one node's window from its host.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nestbed.cluster.control import ExperimentControl
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan


class ClusterControl:
    def __init__(self, experiment: str, whole: HostPlan, host_of: dict[str, str],
                 controls: dict[str, ExperimentControl]):
        self.experiment = experiment
        self.whole = whole                      # the one-host plan: nodes, addresses, segments
        self.host_of = host_of                  # node → host
        self.controls = controls                # host → that host's control
        self._pool = ThreadPoolExecutor(max(1, len(controls)), thread_name_prefix="cluster")
        self._closed = threading.Event()

    # -- the vtopo, from the whole plan -----------------------------------------------------------------------
    def nodes(self) -> list[str]:
        return [node.name for node in self.whole.nodes]

    def addresses(self, node: str) -> list[str]:
        return [i.address.split("/")[0] for i in self.whole.node(node).interfaces]

    def subnets(self) -> list[str]:
        return [segment.subnet for segment in self.whole.segments]

    # -- one node: its host ----------------------------------------------------------------------------------
    def _control_of(self, node: str) -> ExperimentControl:
        host = self.host_of.get(node)
        if host is None:
            raise ExperimentError(f"experiment {self.experiment!r} has no node {node!r}")
        return self.controls[host]

    def run(self, node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        return self._control_of(node).run(node, argv, timeout)

    def exec(self, node: str, argv: list[str], on_out: Callable[[bytes], Any] | None = None,
             on_err: Callable[[bytes], Any] | None = None, timeout: float | None = None,
             env: dict[str, str] | None = None) -> int:
        return self._control_of(node).exec(node, argv, on_out, on_err, timeout, env)

    def spawn(self, node: str, argv: list[str], name: str) -> str:
        return f"{self.host_of[node]}/{self._control_of(node).spawn(node, argv, name)}"

    def stop(self, handle: str) -> None:
        host, _, own = handle.partition("/")
        if host not in self.controls:
            raise ExperimentError(f"no spawned program {handle!r} in experiment {self.experiment!r}")
        self.controls[host].stop(own)

    # -- batches: split per host, in parallel, answers in the caller's order -----------------------------------
    def _per_host(self, items: list[Any], node_of: Callable[[Any], str],
                  call: Callable[[ExperimentControl, list[Any]], list[Any]]) -> list[Any]:
        groups: dict[str, list[int]] = {}
        for k, item in enumerate(items):
            host = self.host_of.get(node_of(item))
            if host is None:
                raise ExperimentError(f"experiment {self.experiment!r} has no node {node_of(item)!r}")
            groups.setdefault(host, []).append(k)
        answers: list[Any] = [None] * len(items)
        futures = {host: self._pool.submit(call, self.controls[host], [items[k] for k in ks])
                   for host, ks in groups.items()}
        for host, future in futures.items():
            for k, answer in zip(groups[host], future.result()):
                answers[k] = (host, answer)
        return answers

    def run_many(self, items: list[tuple[str, list[str]]], timeout: float | None = None) -> list[Any]:
        def call(control: ExperimentControl, part: list[Any]) -> list[Any]:
            many = getattr(control, "run_many", None)
            if many is not None:
                return list(many(part, timeout))
            return [control.run(node, argv, timeout) for node, argv in part]
        return [answer for _, answer in self._per_host(items, lambda item: item[0], call)]

    def spawn_many(self, items: list[tuple[str, list[str], str]]) -> list[str]:
        def call(control: ExperimentControl, part: list[Any]) -> list[Any]:
            many = getattr(control, "spawn_many", None)
            if many is not None:
                return list(many(part))
            return [control.spawn(node, argv, name) for node, argv, name in part]
        return [f"{host}/{handle}" for host, handle in self._per_host(items, lambda item: item[0], call)]

    def stop_many(self, handles: list[str]) -> None:
        by_host: dict[str, list[str]] = {}
        for handle in handles:
            host, _, own = handle.partition("/")
            by_host.setdefault(host, []).append(own)
        def stop_on(control: ExperimentControl, own: list[str]) -> None:
            many = getattr(control, "stop_many", None)
            if many is not None:
                many(own)
            else:
                for handle in own:
                    control.stop(handle)
        for future in [self._pool.submit(stop_on, self.controls[host], own) for host, own in by_host.items()]:
            future.result()

    # -- records and events: every host's ----------------------------------------------------------------------
    def record(self, agent: str, node: str | None, data: dict[str, Any], kind: str | None = None) -> None:
        host = self.host_of.get(node or "") or next(iter(self.controls))
        self.controls[host].record(agent, node, data, kind)

    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        futures = {host: self._pool.submit(control.records, agent) for host, control in self.controls.items()}
        merged = [{**r, "host": host} for host, future in futures.items() for r in future.result()]
        merged.sort(key=lambda r: (r.get("created") or 0.0))
        return merged

    def event(self, name: str, data: dict[str, Any] | None = None) -> None:
        for future in [self._pool.submit(control.event, name, data) for control in self.controls.values()]:
            future.result()

    def link(self, segment: str, action: str, **shaping: Any) -> None:
        found = [s for s in self.whole.segments if s.name == segment]
        if not found:
            raise ExperimentError(f"experiment {self.experiment!r} has no link or LAN {segment!r}")
        hosts = {self.host_of[node] for node, _, _ in found[0].members}
        for future in [self._pool.submit(self.controls[h].link, segment, action, **shaping) for h in hosts]:
            future.result()

    # -- counters: each host's agent samples its own nodes ------------------------------------------------------
    def counters(self, skip: Collection[str] = ()) -> dict[str, dict[str, Any]]:
        """Every host's newest sample but `skip`'s, host → {"created", "rows"} (the host agent's `counters` op). Kept
        per host: hosts sample at their own moments, and a rate needs each interface's own sample times. A host that
        cannot answer is {"error": why}: one unreachable host must not cost every other host's sample."""
        readers = {host: getattr(control, "counters", None) for host, control in self.controls.items()
                   if host not in skip}
        futures = {host: self._pool.submit(read) for host, read in readers.items() if read is not None}
        answers: dict[str, dict[str, Any]] = {}
        for host, future in futures.items():
            try:
                answers[host] = dict(future.result())
            except Exception as error:
                answers[host] = {"error": str(error) or type(error).__name__}
        return answers

    def counter_window(self, node: str, ifaces: list[str], after: float | None = None, seconds: float = 300.0
                       ) -> dict[str, Any]:
        """One node's samples, from its host's store: {"rows": [{created, node, iface, …}]} (none from a host
        whose control cannot say)."""
        control = self._control_of(node)
        window = getattr(control, "counter_window", None)
        return {"rows": []} if window is None else dict(window(node, ifaces, after, seconds))

    def subscribe(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """Every host's events as they come (`since` is per host; None: from now); ends when one host's does."""
        events: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()

        def pump(control: ExperimentControl) -> None:
            try:
                for event in control.subscribe(since):
                    events.put(event)
                events.put(None)
            except BaseException as error:      # the scenario ends on a host agent gone (not on our own close)
                events.put(None if self._closed.is_set() else error)
        for control in self.controls.values():
            threading.Thread(target=pump, args=(control,), daemon=True).start()
        while True:
            item = events.get()
            if item is None or self._closed.is_set():   # a host agent gone ends the stream, as on one host
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._closed.set()
        for control in self.controls.values():
            control.close()
        self._pool.shutdown(wait=False)
