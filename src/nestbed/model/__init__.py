"""The virtual topology (vtopo): what the experimenter asked for, parsed and validated, no side effects.

The names below load on first use (PEP 562): node kinds import `nestbed.model.topology` alone, and the host agent
looks kinds up, so importing this package must not pull in the YAML readers (PyYAML, rapidyaml).
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.model.loader import load_topology, load_topology_text, with_exact_lines
    from nestbed.model.topology import EmbedSettings, Endpoint, Experiment, Lan, Link, Node, Shaping

__all__ = [
    "EmbedSettings",
    "Endpoint",
    "Experiment",
    "Lan",
    "Link",
    "Node",
    "Shaping",
    "load_topology",
    "load_topology_text",
    "with_exact_lines",
]

_HOME = {"load_topology": "loader", "load_topology_text": "loader", "with_exact_lines": "loader",
         "EmbedSettings": "topology", "Endpoint": "topology", "Experiment": "topology", "Lan": "topology",
         "Link": "topology", "Node": "topology", "Shaping": "topology"}


def __getattr__(name: str) -> object:
    if name in _HOME:
        import importlib
        return getattr(importlib.import_module(f"nestbed.model.{_HOME[name]}"), name)
    raise AttributeError(f"module 'nestbed.model' has no attribute {name!r}")
