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
    monkeypatch.setattr(supervision, "spawn_agent", lambda state: FakeAgent(lambda: started.append(state.name)))
    monkeypatch.setattr(supervision, "agent_status", lambda state: {"pid": 4242, "alive": bool(started)})
    return LocalHost(FakeKernel())


class FakeAgent:
    """Stands for supervision.SpawnedAgent: `start` runs `on_start` and answers a pid."""

    def __init__(self, on_start) -> None:
        self.on_start = on_start

    def start(self) -> int:
        self.on_start()
        return 4242


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
    monkeypatch.setattr(supervision, "spawn_agent", lambda state: FakeAgent(lambda: None))
    host = LocalHost(FakeKernel(fail_at=3))
    with pytest.raises(OSError):
        host.apply(plan())
    assert host.status("tl")["state"] == "absent" and list(tmp_path.iterdir()) == []


def test_a_second_up_of_one_name_is_refused_in_one_line_and_the_first_goes_on(host: LocalHost, tmp_path,
                                                                               monkeypatch) -> None:
    import threading

    from nestbed.errors import ExperimentError
    entered, release = threading.Event(), threading.Event()

    def slow_start() -> None:           # the first `up` is in the middle of its work
        entered.set()
        release.wait(10)
    monkeypatch.setattr(supervision, "spawn_agent", lambda state: FakeAgent(slow_start))
    first = threading.Thread(target=host.apply, args=(plan(),))
    first.start()
    assert entered.wait(10)
    with pytest.raises(ExperimentError) as refused:
        host.apply(plan())
    assert "already being created or removed" in str(refused.value) and "\n" not in str(refused.value)
    release.set()
    first.join(10)
    assert host.status("tl")["state"] == "up"
    assert {"nb-tl.a", "nb-tl.b"} <= set(host.kernel.namespaces)        # type: ignore[attr-defined]
    assert host.remove("tl") is not None and not (tmp_path / "tl").exists()
    assert list(tmp_path.iterdir()) == []                               # no claim left behind


def test_the_claim_is_atomic_the_loser_leaves_nothing(host: LocalHost, tmp_path) -> None:
    import os

    from nestbed.agent import lifecycle
    from nestbed.errors import ExperimentError
    from nestbed.realize.state import experiment
    state = experiment("tl")
    lock = lifecycle._claim(state)              # the winner: the directory appears already locked
    try:
        assert state.is_busy()
        with pytest.raises(ExperimentError, match="already being created or up"):
            lifecycle._claim(state)             # the loser of a race past the exists() check
        assert [p.name for p in tmp_path.iterdir()] == ["tl"]          # the winner's files, none of the loser's
        assert sorted(p.name for p in state.directory.iterdir()) == ["journal.jsonl", "lock", "plan.json",
                                                                      "status.json"]
    finally:
        os.close(lock)
    with pytest.raises(ExperimentError, match="left half-made"):      # nobody holds it: a crashed run's
        host.apply(plan())
