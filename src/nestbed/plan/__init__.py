"""Planning: from a validated vtopo to per-host plans (pure data, no kernel access).

`compile_plan` loads on first use: `nestbed.plan.hostplan` alone is what realizers and guest agents need."""
from __future__ import annotations

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from typing import Any

from nestbed.plan.hostplan import HostPlan

__all__ = ["compile_plan", "netns_name", "switch_netns_name", "HostPlan"]


def __getattr__(name: str) -> Any:
    if name in ("compile_plan", "netns_name", "switch_netns_name"):
        from nestbed.plan import compile as compiler
        return getattr(compiler, name)
    raise AttributeError(f"module 'nestbed.plan' has no attribute {name!r}")
