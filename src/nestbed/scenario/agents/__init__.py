"""Agents a scenario can name: MAGI's built-in ones, and a user's own Python modules.

An AAL agent's `path` names its code by its last component (`/share/magi/modules/http_client/http_client.tar.gz`,
`http_client` and `./agents/http_client.py` all name `http_client`): a built-in agent of that name (BUILTIN), else
a Python module of that name.

A user's module (the tiny convention). The module is imported after putting on sys.path the directory holding
`path` when that exists (relative to the AAL file), and the AAL file's directory. It provides one of:

1. a class `Agent` — or a factory `getAgent(runner, agent_name, nodes, execargs)`, MAGI's name — built like
   the built-in agents: `Agent(runner, agent_name, nodes, execargs)`; each AAL method is a method taking the
   event's args as keyword arguments, called once per event for the whole group, returning {node: value} or one
   value for every node. `runner` is a nestbed.cluster.control.ExperimentControl (run/spawn/stop/record/event/link);
2. module-level functions `METHOD(runner, node, **args)`, called once per node of the group (in parallel
   threads), each returning that node's value.

    # agents/greeter.py                               # scenario.aal
    def hello(runner, node, text="hi"):                #   agents: {greet: {group: g, path: agents/greeter.py}}
        code, out, err = runner.run(node, ["echo", text])
        return code == 0
"""
from __future__ import annotations

import importlib
import inspect
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from nestbed.cluster.control import ExperimentControl
from nestbed.scenario.agents.base import PARALLEL, AgentError, BuiltinAgent
from nestbed.scenario.agents.control import LinkUpDown, RunShell
from nestbed.scenario.agents.http import HttpClient, HttpServer
from nestbed.scenario.agents.irc import Botmaster, IrcServer, Q9Bot
from nestbed.scenario.agents.measure import NodeStats, PktCounters, Tcpdump
from nestbed.scenario.agents.traffic import Flooder, Iperf

BUILTIN: dict[str, type[BuiltinAgent]] = {
    "http_client": HttpClient, "http_server": HttpServer, "apache": HttpServer, "iperf": Iperf,
    "flooder": Flooder, "pktcounters": PktCounters, "runshell": RunShell, "runcmd": RunShell,
    "link_up_down": LinkUpDown, "tcpdump": Tcpdump, "nodeStats": NodeStats,
    "ircd": IrcServer, "ngircd": IrcServer, "q9bot": Q9Bot, "botmaster": Botmaster,
}
_BY_LOWER = {name.lower(): name for name in BUILTIN}
SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".py")

__all__ = ["BUILTIN", "AgentError", "BuiltinAgent", "agent_kind", "builtin_of", "import_user_module",
           "user_methods", "instantiate"]


def agent_kind(path: str) -> str:
    """The agent name a path gives: its last component without archive or .py suffixes."""
    last = str(path).rstrip("/").rsplit("/", 1)[-1]
    for suffix in SUFFIXES:
        if last.endswith(suffix) and len(last) > len(suffix):
            return last[: -len(suffix)]
    return last


def builtin_of(kind: str) -> type[BuiltinAgent] | None:
    name = _BY_LOWER.get(kind.lower().replace("-", "_"))
    return BUILTIN[name] if name else None


def import_user_module(path: str, kind: str, base: Path) -> ModuleType | None:
    """The user's module for an agent path, or None when there is none to import (errors in it propagate)."""
    candidates = []
    given = Path(path) if Path(path).is_absolute() else base / path
    if given.exists():
        candidates.append(given.parent)
    candidates.append(base)
    for directory in candidates:
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    if not kind.isidentifier():
        return None
    try:
        return importlib.import_module(kind)
    except ModuleNotFoundError as error:
        if error.name == kind:
            return None
        raise


def user_methods(module: ModuleType) -> list[str] | None:
    """The methods a user module offers (None: a getAgent factory, known only once it runs)."""
    cls = getattr(module, "Agent", None)
    if inspect.isclass(cls):
        return [n for n, v in inspect.getmembers(cls, callable) if not n.startswith("_")]
    if callable(getattr(module, "getAgent", None)):
        return None
    return [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
            and v.__module__ == module.__name__]


class _FunctionAgent:
    """Module-level functions METHOD(runner, node, **args), called once per node."""

    def __init__(self, module: ModuleType, runner: ExperimentControl, nodes: list[str]):
        self.module, self.runner, self.nodes = module, runner, nodes

    def __getattr__(self, method: str) -> Any:
        function = getattr(self.module, method)

        def call(**args: Any) -> dict[str, Any]:
            with ThreadPoolExecutor(max(1, min(PARALLEL, len(self.nodes)))) as pool:
                values = pool.map(lambda node: function(self.runner, node, **args), self.nodes)
                return dict(zip(self.nodes, values))
        return call


def instantiate(kind: str, builtin: bool, runner: ExperimentControl, agent_name: str, nodes: list[str],
                execargs: dict[str, Any], base: Path) -> Any:
    if builtin:
        cls = builtin_of(kind)
        assert cls is not None
        return cls(runner, agent_name, nodes, execargs, base=base)
    module = importlib.import_module(kind)          # the parser found it (and set sys.path)
    if inspect.isclass(getattr(module, "Agent", None)):
        return module.Agent(runner, agent_name, nodes, execargs)
    if callable(getattr(module, "getAgent", None)):
        return module.getAgent(runner, agent_name, nodes, execargs)
    return _FunctionAgent(module, runner, nodes)
