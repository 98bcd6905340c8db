"""HostAgentClient: ExperimentControl (cluster/control.py) over the experiment's host agent.

    client = HostAgentClient("lab")               # or an ExperimentState
    rc, out, err = client.run("a", ["ping", "-c1", "b"])
    results = client.run_many([("a", ["hostname"]), ("b", ["hostname"])], timeout=5)
    handle = client.spawn("b", ["python3", "-m", "http.server", "80"], "http"); client.stop(handle)
    client.event("serverReady", {"node": "b"}); client.record("http_client", "a", {"bytes": 1000})
    for event in client.subscribe(): ...          # {"id", "created", "source", "name", "data"}

One persistent connection carries one-shot requests; exec streams and subscriptions get connections of their
own. When the agent is gone, every call raises ExperimentError with one line naming its pid and log, at once
(a refused connect or an EOF is checked against the journaled pid).
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from nestbed.agent import supervision
from nestbed.channel import decode
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan
from nestbed.realize.state import ExperimentState, require


class HostAgentClient:
    def __init__(self, state_or_name: ExperimentState | str):
        self.state = require(state_or_name) if isinstance(state_or_name, str) else state_or_name
        self.experiment = self.state.name
        plan = self.state.load_plan()
        if plan is None:
            raise ExperimentError(f"experiment {self.experiment!r} is not up; see 'nestbed status {self.experiment}'")
        self.plan: HostPlan = plan
        self._conn: supervision.HostAgentConnection | None = None
        self._lock = threading.Lock()

    # -- connections ----------------------------------------------------------------------------------------
    def _receive(self, conn: supervision.HostAgentConnection) -> dict[str, Any]:
        """The agent's next message; a broken or closed connection becomes the one-line reason (agent died …)."""
        try:
            message = conn.conn.receive()
        except (OSError, ValueError) as error:
            raise self._failure(error) from None
        if message is None:
            raise self._failure()
        return message

    def _failure(self, error: BaseException | None = None) -> ExperimentError:
        status = supervision.agent_status(self.state)
        # A killed process closes its sockets before it becomes a zombie: give a dying agent a moment to show it.
        deadline = time.monotonic() + 0.5
        while status is not None and status["alive"] and time.monotonic() < deadline:
            time.sleep(0.02)
            status = supervision.agent_status(self.state)
        if status is None:
            return ExperimentError(f"experiment {self.experiment!r} has no host agent (made by an older nestbed?); "
                                   f"run 'nestbed down {self.experiment}' and 'nestbed up' again")
        if not status["alive"]:
            return ExperimentError(supervision.died_message(self.state, status["pid"]))
        detail = f": {error}" if error is not None else ""
        return ExperimentError(f"cannot talk to the host agent of {self.experiment} (pid {status['pid']}){detail}; "
                               f"see {supervision.log_path(self.state)}")

    def connect(self, timeout: float | None = None) -> supervision.HostAgentConnection:
        try:
            return supervision.HostAgentConnection(self.state, timeout)
        except OSError as error:
            raise self._failure(error) from None

    def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        """A one-shot request on the persistent connection (re-made once if it broke)."""
        failure: BaseException | None = None
        with self._lock:
            for attempt in (0, 1):
                if self._conn is None:
                    self._conn = self.connect()
                try:
                    self._conn.conn.send({"op": op, **arguments})
                    answer = self._conn.conn.receive()
                except (OSError, ValueError) as error:
                    answer, failure = None, error
                else:
                    failure = None
                if answer is None:
                    self._drop()
                    status = supervision.agent_status(self.state)
                    if attempt == 0 and status is not None and status["alive"]:
                        continue         # a connection that broke while the agent lives: once more, anew
                    raise self._failure(failure)
                if "error" in answer:
                    raise ExperimentError(answer["error"])
                return answer
        raise self._failure()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> HostAgentClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- running programs ---------------------------------------------------------------------------------
    def nodes(self) -> list[str]:
        return [n.name for n in self.plan.nodes]

    def addresses(self, node: str) -> list[str]:
        try:
            return [i.address.split("/")[0] for i in self.plan.node(node).interfaces]
        except KeyError:
            raise ExperimentError(f"experiment {self.experiment!r} has no node {node!r}") from None

    def subnets(self) -> list[str]:
        return [s.subnet for s in self.plan.segments]

    def ping(self) -> dict[str, Any]:
        return self.request("ping")

    def run(self, node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        out, err = bytearray(), bytearray()
        rc = self.exec(node, argv, out.extend, err.extend, timeout=timeout)
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def exec(self, node: str, argv: list[str], on_out: Any = None, on_err: Any = None, timeout: float | None = None,
             env: dict[str, str] | None = None) -> int:
        """Run argv in a node, output to the callbacks as it comes (bytes); returns the exit code (-9 when the
        timeout killed it)."""
        conn = self.connect()
        try:
            conn.conn.send({"op": "exec", "node": node, "argv": list(argv), "env": env or {},
                            **({"timeout": timeout} if timeout else {})})
            while True:
                message = self._receive(conn)
                if "o" in message:
                    if on_out:
                        on_out(decode(message["o"]))
                elif "e" in message:
                    if on_err:
                        on_err(decode(message["e"]))
                elif "rc" in message:
                    return int(message["rc"])
                elif "error" in message:
                    raise ExperimentError(message["error"])
        finally:
            conn.close()

    def run_many(self, items: list[tuple[str, list[str]]] | list[dict[str, Any]], timeout: float | None = None
                 ) -> list[dict[str, Any]]:
        """Run many programs at once (each to completion); results in item order:
        {"node", "rc", "out", "err"} (+ "timeout": True for those the timeout killed)."""
        normalized = [item if isinstance(item, dict) else {"node": item[0], "argv": list(item[1])} for item in items]
        conn = self.connect()
        try:
            try:
                conn.conn.send({"op": "run_many", "items": normalized, **({"timeout": timeout} if timeout else {})})
            except OSError as error:
                raise self._failure(error) from None
            answer = self._receive(conn)
            if "error" in answer:
                raise ExperimentError(answer["error"])
            return list(answer["results"])
        finally:
            conn.close()

    def spawn(self, node: str, argv: list[str], name: str) -> str:
        return str(self.request("spawn", node=node, argv=list(argv), name=name)["handle"])

    def stop(self, handle: str) -> None:
        self.request("stop", handle=handle)

    def record(self, agent: str, node: str | None, data: dict[str, Any], kind: str | None = None) -> None:
        self.request("record", agent=agent, node=node, data=data, **({"kind": kind} if kind else {}))

    def record_many(self, agent: str, items: list[tuple[str | None, dict[str, Any]]], kind: str | None = None
                    ) -> None:
        """record() for many nodes in one request (one store transaction)."""
        self.request("record_many", agent=agent, items=[{"node": node, "data": data} for node, data in items],
                     **({"kind": kind} if kind else {}))

    def event(self, name: str, data: dict[str, Any] | None = None, source: str = "controller") -> None:
        self.request("event", name=name, data=data, source=source)

    def link(self, segment: str, action: str, **shaping: Any) -> None:
        self.request("link", segment=segment, action=action, shaping=shaping)

    def counters(self) -> dict[str, Any]:
        return self.request("counters")

    def counter_window(self, node: str, ifaces: list[str], after: float | None = None, seconds: float = 300.0
                       ) -> dict[str, Any]:
        return self.request("counter_window", node=node, ifaces=list(ifaces), after=after, seconds=seconds)

    def spawn_many(self, items: list[tuple[str, list[str], str]]) -> list[str]:
        """spawn() on many nodes in one request: handles in item order."""
        answer = self.request("spawn_many", items=[{"node": n, "argv": list(a), "name": name} for n, a, name in items])
        return [str(h) for h in answer["handles"]]

    def stop_many(self, handles: list[str]) -> None:
        self.request("stop_many", handles=list(handles))

    def subscribe(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """Events as they happen (after event id `since` from the store first, when given). Subscribed when this
        returns; iterate until done; raises ExperimentError (one line) as soon as the agent dies."""
        conn = self.connect()
        try:
            conn.conn.send({"op": "subscribe", **({"since": since} if since is not None else {})})
            first = self._receive(conn)
        except BaseException:
            conn.close()
            raise
        if "error" in first:
            conn.close()
            raise ExperimentError(first["error"])
        conn.sock.settimeout(None)
        return self._events(conn)

    def _events(self, conn: supervision.HostAgentConnection) -> Iterator[dict[str, Any]]:
        try:
            while True:
                message = self._receive(conn)
                if "event" in message:
                    yield message["event"]
        finally:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
