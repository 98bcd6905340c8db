"""gRPC's fork handlers are off before grpc loads, whichever module of the etcd engine is imported first (an agent
started by systemd or Kubernetes has no controller's environment that turned them off: its preflight probes,
which fork, then failed every plan with a bandwidth)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

WATCH = """
import builtins, os, sys
seen = []
real = builtins.__import__
def hook(name, *args, **kwargs):
    if name == "grpc" and "grpc" not in sys.modules:
        seen.append(os.environ.get("GRPC_ENABLE_FORK_SUPPORT"))
    return real(name, *args, **kwargs)
builtins.__import__ = hook
import {module}
print(seen[0] if seen else "not loaded")
"""


@pytest.mark.parametrize("module", ["nestbed.cluster.etcd.agent", "nestbed.cluster.etcd.client",
                                    "nestbed.cluster.etcd.publish", "nestbed.cli.cmd_agent"])
def test_fork_support_is_off_when_grpc_loads(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run([sys.executable, "-c", WATCH.format(module=module)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = done.stdout.strip()
    assert seen in ("false", "not loaded"), f"grpc loaded with GRPC_ENABLE_FORK_SUPPORT={seen}"
    if module != "nestbed.cli.cmd_agent":
        assert seen == "false"
