"""Node kinds by name: the built-in ones, and any a plugin registers.

A leaf on purpose: model, embed and plan look a node's kind up here by its name, and the kind's module (which may
import those layers, it sits above them) is imported on the first lookup, the way entry points load. So the lower
layers never import a kind module, and `nestbed validate` imports only the kinds its topology uses.

    from nestbed.kinds import registry
    registry.get("qemu").demand(node)
"""
from __future__ import annotations

import importlib

from nestbed.errors import NestbedError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.kinds.base import NodeKind

# name → the module whose KIND is that kind, in the order users are told about them
BUILTIN = {
    "process": "nestbed.kinds.process",
    "qemu": "nestbed.kinds.qemu",
    "vhost": "nestbed.kinds.vhost",
    "physical": "nestbed.kinds.physical",
}

VHOST = "vhost"                        # the testbed's own VM kind, holding nested processes
_kinds: dict[str, NodeKind] = {}       # loaded or registered so far


class UnknownKind(NestbedError, LookupError):
    """No kind of that name is built in or registered."""


def register(kind: NodeKind) -> None:
    """Add a kind (a plugin's); a name already taken, built in or registered, is refused."""
    if kind.name in _kinds or kind.name in BUILTIN:
        raise ValueError(f"node kind {kind.name!r} is already registered")
    _kinds[kind.name] = kind


def get(name: str) -> NodeKind:
    """The kind called `name`, importing a built-in one on first use; UnknownKind lists the known ones."""
    kind = _kinds.get(name) if isinstance(name, str) else None      # a YAML list or mapping names no kind
    if kind is None:
        module = BUILTIN.get(name) if isinstance(name, str) else None
        if module is None:
            raise UnknownKind(f"unknown node kind {name!r}; known kinds: {', '.join(names())}")
        kind = _kinds[name] = importlib.import_module(module).KIND
        assert kind.name == name, f"{module}.KIND is called {kind.name!r}, not {name!r}"
    return kind


def names() -> list[str]:
    """The kinds users may write in a topology (not the testbed's own, e.g. vhost), built-in ones first."""
    return [name for name in _all_names() if get(name).user_visible]


def _all_names() -> list[str]:
    return list(BUILTIN) + [name for name in _kinds if name not in BUILTIN]
