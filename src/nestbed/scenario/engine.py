"""Run a Scenario: streams concurrently (asyncio), items in order, triggers from agents' returns and from nodes.

    engine = Engine(scenario, runner, store=store, events=runner.subscribe(), progress=callback)
    outcome = engine.run(timeout=None)          # Outcome: reached_exit, reason, message, counts, seconds

- `type: event`: the agent's method runs once for its whole group in a worker thread (built-in agents batch the
  nodes through the runner), the stream goes on when every node has returned; with `trigger: NAME` the per-node
  return values fire NAME.
- `type: trigger`: the stream waits until one of its entries holds, the first in list order winning; a target
  starts that stream instead of going on (the running instance of it, if any, is replaced) or ends the scenario.
- Fired triggers are kept for the whole run (scenario/triggers.py says when a trigger holds): a stream that
  waits on a trigger fired earlier goes on at once. Events from nodes (`events`: dicts {name, data, source,
  created}, e.g. the host agent's subscribe()) fire triggers too; waiters wake on the fire itself (no polling),
  well within 100 ms.
- Every event sent, trigger fired, trigger satisfied and stream start/end is stored (Store.add_event, source
  "scenario"). The scenario ends at an exit target, when no stream is left, on an error (an agent failing, the
  host agent gone: `events` raising or ending), on `timeout`, or when every stream waits on triggers nothing can
  fire any more (only without an event source). Programs the agents started are stopped unless keep_running.
"""
from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestbed.errors import ExperimentError, NestbedError
from nestbed.scenario import agents as agent_registry
from nestbed.scenario.model import EXIT, EventItem, Scenario, Trigger, WaitItem
from nestbed.scenario.triggers import TriggerCache, has_timeout, next_deadline, truthy

SOURCE = "scenario"


@dataclass
class StreamState:
    name: str
    state: str = "pending"        # running | waiting | done
    item: int = 0
    total: int = 0
    doing: str = ""


@dataclass
class Status:
    """What the engine is doing, updated in place; the progress callback receives it."""
    streams: dict[str, StreamState]
    started: float = field(default_factory=time.time)
    events: int = 0               # event items sent
    calls: int = 0                # node calls (events × nodes)
    fired: int = 0                # triggers fired (event returns and node events)
    satisfied: int = 0            # trigger items that ended their wait
    log: deque[str] = field(default_factory=lambda: deque(maxlen=8))


@dataclass
class Outcome:
    reached_exit: bool
    reason: str                   # exit | ended | error | timeout | stuck | interrupted
    message: str
    seconds: float
    events: int
    calls: int
    fired: int
    satisfied: int
    latencies: list[float] = field(default_factory=list)   # per satisfied event trigger: fire → satisfied (s)


class _End(Exception):
    def __init__(self, reason: str, message: str, reached_exit: bool = False):
        super().__init__(message)
        self.reason, self.message, self.reached_exit = reason, message, reached_exit


def _node_of(event: dict[str, Any]) -> str:
    data = event.get("data")
    if isinstance(data, dict) and isinstance(data.get("node"), str):
        return data["node"]
    source = str(event.get("source") or "external")
    return source.split(":", 1)[1] if ":" in source else source


class Engine:
    def __init__(self, scenario: Scenario, runner: Any, store: Any = None,
                 events: Iterable[dict[str, Any]] | None = None,
                 progress: Callable[[Status, str | None], None] | None = None, keep_running: bool = False,
                 workers: int = 16):
        self.scenario = scenario
        self.runner = runner
        self.store = store
        self.events = events
        self.progress = progress
        self.keep_running = keep_running
        self.status = Status({name: StreamState(name, total=len(s.items)) for name, s in scenario.streams.items()})
        self.triggers = TriggerCache()
        self.agents: dict[str, Any] = {}
        self.latencies: list[float] = []
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="scenario")
        self.base = Path(scenario.path).resolve().parent

    # -- public ---------------------------------------------------------------------------------------------
    def run(self, timeout: float | None = None) -> Outcome:
        return asyncio.run(self.run_async(timeout))

    async def run_async(self, timeout: float | None = None) -> Outcome:
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.ended: asyncio.Future[_End] = self.loop.create_future()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.waiters: dict[str, asyncio.Event] = {}
        self.busy = 0
        self.runner_failed = False
        timer = self.loop.call_later(timeout, self._end, _End("timeout", f"no exit after {timeout:g} s")) \
            if timeout else None
        try:
            nodes = await self.loop.run_in_executor(self.pool, self.runner.nodes)
            self.scenario.resolve_nodes(list(nodes))
            await self._instantiate()
            if self.events is not None:
                threading.Thread(target=self._pump, args=(self.events,), daemon=True,    # it may block for good
                                 name="scenario-events").start()
            for name in self.scenario.streamstarts:
                self._start(name)
            end = await self.ended
        except _End as failed:
            end = failed
        except NestbedError as error:                  # nodes not in the experiment, the runner gone
            end = self._failure(error, "")
        except asyncio.CancelledError:
            end = _End("interrupted", "interrupted")
        finally:
            if timer is not None:
                timer.cancel()
            for task in list(self.tasks.values()):
                task.cancel()
        await self._finish(end)
        return Outcome(end.reached_exit, end.reason, end.message, self.loop.time() - self.t0, self.status.events,
                       self.status.calls, self.status.fired, self.status.satisfied, self.latencies)

    def fire(self, name: str, values: dict[str, Any], external: bool = False) -> None:
        """Fire trigger NAME (loop thread only): per-node values, from an event item's returns or a node."""
        self.triggers.fire(name, values, external, self.loop.time())
        self.status.fired += 1
        for waiter in self.waiters.values():
            waiter.set()

    # -- plumbing -------------------------------------------------------------------------------------------
    def _note(self, line: str | None, store: tuple[str, dict[str, Any]] | None = None) -> None:
        if line:
            self.status.log.append(f"{self.loop.time() - self.t0:7.2f}s {line}")
        if store is not None and self.store is not None:
            self.store.add_event(SOURCE, store[0], store[1])
        if self.progress is not None:
            self.progress(self.status, line)

    def _end(self, end: _End) -> None:
        if not self.ended.done():
            self.ended.set_result(end)

    def _warn(self, message: str) -> None:
        self.loop.call_soon_threadsafe(self._note, f"warning: {message}", ("warning", {"kind": "warning",
                                                                                      "message": message}))

    async def _instantiate(self) -> None:
        for name, agent in self.scenario.agents.items():
            nodes = self.scenario.groups[agent.group]
            make = functools.partial(agent_registry.instantiate, agent.kind, agent.builtin, self.runner, name, nodes,
                                     agent.execargs, self.base)
            try:
                instance = await self.loop.run_in_executor(self.pool, make)
            except NestbedError as error:
                raise self._failure(error, f"{agent.location}: agent {name!r}") from None
            except Exception as error:
                raise _End("error", f"{agent.location}: agent {name!r} failed to start: "
                                    f"{type(error).__name__}: {error}") from None
            if isinstance(instance, agent_registry.BuiltinAgent):
                instance.warn = self._warn
            self.agents[name] = instance

    def _failure(self, error: NestbedError, where: str) -> _End:
        if isinstance(error, ExperimentError):
            self.runner_failed = True
        return _End("error", f"{where}: {error}" if where else str(error))

    def _pump(self, events: Iterable[dict[str, Any]]) -> None:
        """Worker thread: forward node events into the loop; the source failing or ending stops the scenario."""
        try:
            for event in events:
                if self.ended.done():
                    return
                if event.get("source") != SOURCE and event.get("name"):
                    self.loop.call_soon_threadsafe(self._external, event)
            failure: _End = _End("error", "the host agent's event stream ended: the host agent is gone")
        except NestbedError as error:
            failure = _End("error", str(error))
        except Exception as error:
            failure = _End("error", f"the host agent's event stream failed: {type(error).__name__}: {error}")
        self.runner_failed = True
        try:
            self.loop.call_soon_threadsafe(self._end, failure)
        except RuntimeError:              # the loop is closed: the scenario ended before the stream did
            pass

    def _external(self, event: dict[str, Any]) -> None:
        node, data = _node_of(event), event.get("data")
        self.fire(str(event["name"]), {node: True if data is None else data}, external=True)
        self._note(f"node event {event['name']} from {node}")

    # -- streams --------------------------------------------------------------------------------------------
    def _start(self, name: str) -> None:
        old = self.tasks.get(name)
        if old is not None and not old.done():
            old.cancel()
        task = self.loop.create_task(self._stream(name))
        self.tasks[name] = task
        task.add_done_callback(functools.partial(self._stream_done, name))

    def _stream_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(name) is task:
            del self.tasks[name]
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self._end(error if isinstance(error, _End) else
                      _End("error", f"stream {name!r}: {type(error).__name__}: {error}"))
        elif not self.tasks and not self.ended.done():
            self._end(_End("ended", "every stream ended without reaching exit"))
        else:
            self._check_stuck()

    async def _stream(self, name: str) -> None:
        stream = self.scenario.streams[name]
        state = self.status.streams[name]
        state.state, state.item = "running", 0
        self._note(f"stream {name} started", (f"stream {name} started", {"kind": "stream-start", "stream": name}))
        how = "ended"
        try:
            for item in stream.items:
                state.item, state.doing = item.index, item.describe()
                if isinstance(item, EventItem):
                    state.state = "running"
                    self._note(None)
                    await self._event(name, item)
                    continue
                state.state = "waiting"
                self._note(None)
                trigger = await self._wait(name, item)
                if trigger.target == EXIT:
                    how = "exit"
                    self._end(_End("exit", f"stream {name!r} item {item.index}: {trigger.describe()}",
                                   reached_exit=True))
                    return
                if trigger.target is not None:
                    how = f"→ {trigger.target}"
                    self.loop.call_soon(self._start, trigger.target)
                    return
        finally:
            if how == "ended" and asyncio.current_task().cancelling():     # type: ignore[union-attr]
                how = "stopped"
            state.state, state.doing = "done", how
            self._note(f"stream {name} {how}", (f"stream {name} {how}", {"kind": "stream-end", "stream": name,
                                                                           "how": how}))

    async def _event(self, stream: str, item: EventItem) -> None:
        agent = self.agents[item.agent]
        nodes = self.scenario.nodes_of(item.agent)
        where = f"{item.location}: stream {stream!r} item {item.index}: {item.agent}.{item.method}"
        method = getattr(agent, item.method, None)
        if method is None:
            raise _End("error", f"{where}: the agent has no such method")
        started = self.loop.time()
        self.busy += 1
        try:
            result = await self.loop.run_in_executor(self.pool, functools.partial(method, **item.args))
        except NestbedError as error:
            raise self._failure(error, where) from None
        except Exception as error:
            raise _End("error", f"{where} failed: {type(error).__name__}: {error}") from None
        finally:
            self.busy -= 1
        if isinstance(result, dict) and result and set(result) <= set(nodes):
            values = {node: result.get(node) for node in nodes}
        else:
            values = {node: result for node in nodes}
        true = sum(1 for v in values.values() if truthy(v))
        self.status.events += 1
        self.status.calls += len(nodes)
        seconds = self.loop.time() - started
        self._note(f"{item.agent}.{item.method} on {len(nodes)} node(s): {true} true ({seconds:.2f} s)",
                   (f"{item.agent}.{item.method}", {"kind": "event", "stream": stream, "item": item.index,
                                                    "agent": item.agent, "method": item.method, "args": item.args,
                                                    "nodes": len(nodes), "true": true, "seconds": seconds}))
        if item.trigger:
            self.fire(item.trigger, values)
            failed = sorted(n for n, v in values.items() if not truthy(v))[:20]
            self._note(f"trigger {item.trigger} fired ({true}/{len(nodes)} true)",
                       (item.trigger, {"kind": "trigger", "stream": stream, "item": item.index, "nodes": len(nodes),
                                       "true": true, "failed": failed}))

    async def _wait(self, stream: str, item: WaitItem) -> Trigger:
        started = self.loop.time()
        waiter = asyncio.Event()
        self.waiters[stream] = waiter
        self._check_stuck()
        try:
            while True:
                waiter.clear()
                now = self.loop.time()
                for trigger in item.triggers:
                    if self.triggers.holds(trigger, started, now):
                        self._satisfied(stream, item, trigger, now)
                        return trigger
                deadline = next_deadline(item.triggers, started, now)
                try:
                    await asyncio.wait_for(waiter.wait(), None if deadline is None else max(0.0, deadline - now))
                except TimeoutError:
                    pass
        finally:
            if self.waiters.get(stream) is waiter:
                del self.waiters[stream]

    def _satisfied(self, stream: str, item: WaitItem, trigger: Trigger, now: float) -> None:
        fired = self.triggers.last_fired(trigger)
        if trigger.kind != "timeout" and fired is not None:
            self.latencies.append(now - fired)
        self.status.satisfied += 1
        text = f"stream {stream} item {item.index}: {trigger.describe()}"
        self._note(text, (f"{trigger.describe()}", {"kind": "satisfied", "stream": stream, "item": item.index,
                                                    "target": trigger.target, "waited": now - self.t0}))

    def _check_stuck(self) -> None:
        """Without a source of node events, every live stream waiting with no timeout ahead can never go on."""
        if self.events is not None or self.busy or self.ended.done() or not self.tasks:
            return
        if set(self.waiters) != set(self.tasks):
            return
        self.loop.call_later(0.05, self._confirm_stuck, self.status.fired)

    def _confirm_stuck(self, fired: int) -> None:
        if self.ended.done() or self.busy or self.status.fired != fired or set(self.waiters) != set(self.tasks):
            return
        for name in self.tasks:
            item = self.scenario.streams[name].items[self.status.streams[name].item - 1]
            if isinstance(item, WaitItem) and any(has_timeout(t) for t in item.triggers):
                return                         # a timeout will move it on
        waiting = ", ".join(f"{n} ({self.status.streams[n].doing})" for n in sorted(self.tasks))
        self._end(_End("stuck", f"every stream waits on triggers nothing will fire: {waiting}"))

    async def _finish(self, end: _End) -> None:
        what = {"kind": "end", "reason": end.reason, "message": end.message, "reached_exit": end.reached_exit,
                "events": self.status.events, "fired": self.status.fired}
        self._note(f"scenario {end.reason}: {end.message}", ("scenario " + end.reason, what))
        if not self.keep_running and not self.runner_failed:
            cleanups = [a.cleanup for a in self.agents.values() if callable(getattr(a, "cleanup", None))]
            jobs = [self.loop.run_in_executor(self.pool, c) for c in cleanups]
            if jobs:
                done = await asyncio.wait(jobs, timeout=10)
                for job in done[0]:
                    if job.exception() is not None:
                        self._note(f"warning: stopping agents' programs: {job.exception()}")
        self.pool.shutdown(wait=False, cancel_futures=True)
