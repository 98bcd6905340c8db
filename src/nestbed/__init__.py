"""nestbed: network experiments of processes, qemu VMs and physical machines, embedded on the machines at hand."""
from nestbed.model import Experiment, load_topology, load_topology_text
from nestbed.plan import compile_plan

__all__ = ["Experiment", "load_topology", "load_topology_text", "compile_plan"]
__version__ = "0.1.0"
