"""ExperimentControl: what the controller (scenario agents, collect, the CLI) may do with a running experiment.

A host transport hands one out per experiment (`HostTransport.control`); for this machine it is the host
agent's client (`nestbed.agent.hostclient.HostAgentClient`); tests use fakes (tests/unit/fake_runner.py).
Built-in scenario agents (nestbed.scenario.agents) are written against this protocol only.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol


class ExperimentControl(Protocol):
    experiment: str

    def nodes(self) -> list[str]:
        """Every node of the experiment."""

    def addresses(self, node: str) -> list[str]:
        """The node's experiment addresses (without prefix), in interface order."""

    def subnets(self) -> list[str]:
        """The experiment's segment subnets (e.g. 10.0.1.0/24): flooders refuse targets outside them."""

    def run(self, node: str, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        """Run a program in a node to completion: (exit code, stdout, stderr)."""

    def exec(self, node: str, argv: list[str], on_out: Callable[[bytes], Any] | None = None,
             on_err: Callable[[bytes], Any] | None = None, timeout: float | None = None,
             env: dict[str, str] | None = None) -> int:
        """Run a program in a node, its output to the callbacks as it comes; returns its exit code."""

    def spawn(self, node: str, argv: list[str], name: str) -> str:
        """Start a long-running program in a node (output to <state>/logs/<node>-<name>.log); returns a handle."""

    def stop(self, handle: str) -> None:
        """Stop a spawned program (SIGTERM, then SIGKILL); safe to repeat."""

    def record(self, agent: str, node: str | None, data: dict[str, Any], kind: str | None = None) -> None:
        """Store what an agent measured (nestbed records NAME): agent is the scenario's name for it, kind its
        module (`client_agent`, `http_client`). Implementations may also offer
        record_many(agent, [(node, data), …], kind=None), as they may offer run_many, spawn_many and stop_many."""

    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        """What has been recorded so far, oldest first ({id, created, agent, kind, host, node, data}); with
        `agent`, the records whose agent or kind it is. Scenario agents wait on what their programs record."""

    def event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Publish an event (it can satisfy scenario triggers)."""

    def link(self, segment: str, action: str, **shaping: Any) -> None:
        """Runtime link change: action 'up', 'down' or 'set' (bandwidth=…, delay=…, loss=…)."""

    def subscribe(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """Events as they happen (after event id `since` first, when given)."""

    def close(self) -> None:
        """Let go of the connection to the experiment."""
