"""Planning: from a validated vtopo to per-host plans (pure data, no kernel access)."""
from nestbed.plan.compile import compile_plan, netns_name, switch_netns_name
from nestbed.plan.hostplan import HostPlan

__all__ = ["compile_plan", "netns_name", "switch_netns_name", "HostPlan"]
