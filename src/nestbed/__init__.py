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


def _compiled_part() -> None:
    """Run from a bundle brought to a host (cluster/bundle.py): its compiled packages for this interpreter's ABI,
    when they came, go on the path (run with -S, no site module reads .pth files). Elsewhere: one failed stat."""
    import os
    import sys
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    compiled = os.path.join(here, "compiled", f"{sys.implementation.cache_tag}-{os.uname().machine}")
    if os.path.isfile(os.path.join(compiled, ".complete")) and compiled not in sys.path:
        sys.path.append(compiled)


_compiled_part()


def __getattr__(name: str) -> Any:
    if name in ("Experiment", "load_topology", "load_topology_text"):
        from nestbed import model
        return getattr(model, name)
    if name == "compile_plan":
        from nestbed.plan.compile import compile_plan
        return compile_plan
    raise AttributeError(f"module 'nestbed' has no attribute {name!r}")
