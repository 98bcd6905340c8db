"""nestbed: network experiments of processes, qemu VMs and physical machines, embedded on the machines at hand.

The names below load on first use (PEP 562): the guest agent imports nestbed inside VMs under software emulation,
where pulling in the model, the planner and numpy would cost seconds of boot.
"""
from __future__ import annotations

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Experiment", "load_topology", "load_topology_text", "compile_plan"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Experiment", "load_topology", "load_topology_text"):
        from nestbed import model
        return getattr(model, name)
    if name == "compile_plan":
        from nestbed.plan.compile import compile_plan
        return compile_plan
    raise AttributeError(f"module 'nestbed' has no attribute {name!r}")
