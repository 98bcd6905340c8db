"""The virtual topology (vtopo): what the experimenter asked for, parsed and validated, no side effects."""
from nestbed.model.topology import Endpoint, Experiment, Lan, Link, Node, Shaping, EmbedSettings
from nestbed.model.loader import load_topology, load_topology_text

__all__ = ["Endpoint", "Experiment", "Lan", "Link", "Node", "Shaping", "EmbedSettings",
           "load_topology", "load_topology_text"]
