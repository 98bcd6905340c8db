"""The local host transport over a fake kernel: apply realizes and reports up, status follows the experiment,
a failed apply leaves nothing, remove takes everything away (no root; the host agent is faked)."""
from __future__ import annotations

import textwrap

import pytest
from fake_kernel import FakeKernel

from nestbed.agent import supervision
from nestbed.cluster.local import LocalHost
from nestbed.cluster.transport import HostTransport
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan

TOPOLOGY = """\
name: tl
nodes:
  a: {}
  b: {}
links:
  - {ends: [a, b], bandwidth: 10Mbit}
"""


@pytest.fixture
def host(tmp_path, monkeypatch) -> LocalHost:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    started: list[str] = []
    monkeypatch.setattr(supervision, "start_agent", lambda plan, state: started.append(plan.experiment) or 4242)
    monkeypatch.setattr(supervision, "agent_status", lambda state: {"pid": 4242, "alive": bool(started)})
    return LocalHost(FakeKernel())


def plan():
    return compile_plan(load_topology_text(textwrap.dedent(TOPOLOGY), "t.yaml"))


def test_it_is_a_host_transport(host: LocalHost) -> None:
    transport: HostTransport = host
    assert transport.name == "local"


def test_apply_status_remove(host: LocalHost, tmp_path) -> None:
    assert host.status("tl")["state"] == "absent"
    host.apply(plan())
    status = host.status("tl")
    assert status["state"] == "up" and status["agent"] == {"pid": 4242, "alive": True}
    assert {"nb-tl.a", "nb-tl.b"} <= set(host.kernel.namespaces)        # type: ignore[attr-defined]
    report = host.remove("tl")
    assert report is not None and report.namespaces == 2
    assert host.status("tl")["state"] == "absent" and not (tmp_path / "tl").exists()
    assert list(host.kernel.namespaces) == [""]      # type: ignore[attr-defined]  # only the host's own is left
    assert host.remove("tl") is None                                   # nothing to do, said so


def test_a_failed_apply_leaves_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    host = LocalHost(FakeKernel(fail_at=3))
    with pytest.raises(OSError):
        host.apply(plan())
    assert host.status("tl")["state"] == "absent" and list(tmp_path.iterdir()) == []
