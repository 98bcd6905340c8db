"""A fake ExperimentControl for tests: nothing runs; every call is remembered, results are scripted."""
from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Any


class FakeRunner:
    def __init__(self, nodes: list[str], experiment: str = "fake", delay: float = 0.0):
        self.experiment = experiment
        self._nodes = list(nodes)
        self.delay = delay
        self.calls: list[tuple[Any, ...]] = []
        self.records: list[tuple[str, str | None, dict[str, Any]]] = []
        self.kinds: list[str | None] = []          # the kind given with each record, in order
        self.links: list[tuple[str, str, dict[str, Any]]] = []
        self.spawned: dict[str, tuple[str, list[str]]] = {}
        self.stopped: list[str] = []
        self.result = lambda node, argv: (0, "", "")
        self.fail: Exception | None = None
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.inbox: queue.Queue[dict[str, Any] | None | Exception] = queue.Queue()

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def addresses(self, node: str) -> list[str]:
        return [f"10.0.0.{self._nodes.index(node) + 2}"] if node in self._nodes else []

    def subnets(self) -> list[str]:
        return ["10.0.0.0/16"]

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail
        if self.delay:
            time.sleep(self.delay)

    def run(self, node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        self._check()
        with self._lock:
            self.calls.append(("run", node, argv))
        return self.result(node, argv)

    def run_many(self, items: list[tuple[str, list[str]]], timeout: float | None = None) -> list[dict[str, Any]]:
        """As the host agent's client answers: {"node", "rc", "out", "err"} in item order."""
        self._check()
        with self._lock:
            self.calls.extend(("run", node, argv) for node, argv in items)
        results = [self.result(node, argv) for node, argv in items]
        return [{"node": node, "rc": rc, "out": out, "err": err} for (node, _), (rc, out, err) in zip(items, results)]

    def spawn(self, node: str, argv: list[str], name: str) -> str:
        self._check()
        with self._lock:
            handle = f"h{next(self._ids)}"
            self.spawned[handle] = (node, argv)
            self.calls.append(("spawn", node, argv))
        return handle

    def stop(self, handle: str) -> None:
        with self._lock:
            self.stopped.append(handle)

    def record(self, agent: str, node: str | None, data: dict[str, Any], kind: str | None = None) -> None:
        self.records.append((agent, node, data))
        self.kinds.append(kind)

    def event(self, name: str, data: dict[str, Any] | None = None) -> None:
        self.send(name, data)

    def link(self, segment: str, action: str, **shaping: Any) -> None:
        self._check()
        self.links.append((segment, action, shaping))

    # node events, as the host agent's subscribe() gives them
    def send(self, name: str, data: Any = None, source: str = "mailbox:a") -> None:
        self.inbox.put({"name": name, "data": data, "source": source, "created": time.time()})

    def subscribe(self):
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item
