"""The virtual topology (vtopo): what the experimenter asked for, parsed and validated, no side effects."""
from nestbed.model.loader import load_topology, load_topology_text, with_exact_lines
from nestbed.model.topology import (
           EmbedSettings,
           Endpoint,
           Experiment,
           Lan,
           Link,
           Node,
           Shaping,
)

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
