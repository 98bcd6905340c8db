"""realize.teardown against a fake kernel: from the journal alone, exactly what it names, any number of times."""
from __future__ import annotations

import os

import pytest
from fake_kernel import FakeKernel
from test_realize_apply import plan_of, realized

from nestbed.realize.teardown import teardown


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    return tmp_path


def foreign(kernel: FakeKernel) -> set:
    """Another experiment's namespace with a link, a process in it and a process of nobody's."""
    kernel.create_namespaces(["nb-other.x"], lambda name: None, lambda n: None)
    kernel.namespaces["nb-other.x"].links[2] = type(kernel.namespaces[""].links[1])("eth0", "dummy")
    kernel.spawn("nb-other.x")
    kernel.spawn(None)
    return kernel.objects()


def test_teardown_from_the_journal_alone_removes_exactly_what_it_names(root):
    kernel = FakeKernel()
    before = foreign(kernel)
    plan = plan_of()
    state = realized(kernel, plan)
    inside = kernel.spawn(plan.local_nodes[0].netns)                   # found by its namespace
    left = kernel.spawn(None)                                          # left its namespace: found by the journal
    recycled = kernel.spawn(None)                                      # a journaled pid now another process
    state.journal.record([{"t": "pid", "pid": left, "start": kernel.process_start_time(left)},
                          {"t": "pid", "pid": recycled, "start": 1}])
    state.plan_path.unlink(missing_ok=True)
    assert state.load_plan() is None
    assert {("process", inside), ("process", left), ("process", recycled)} <= kernel.objects()

    report = teardown(state, kernel)
    assert kernel.objects() == before | {("process", recycled)}
    assert report.namespaces == len(plan.netns_names) and report.processes == 2
    assert os.listdir(root) == []

    again = teardown(state, kernel)
    assert kernel.objects() == before | {("process", recycled)}
    assert (again.namespaces, again.processes, again.left) == (0, 0, [])


def test_teardown_twice_after_a_crash_mid_apply(root):
    kernel = FakeKernel(fail_at=30)
    before = foreign(kernel)
    with pytest.raises(OSError):
        realized(kernel, plan_of())
    from nestbed.realize.state import experiment
    state = experiment("fk")
    first = teardown(state, kernel)
    assert kernel.objects() == before
    second = teardown(state, kernel)
    assert kernel.objects() == before and second.namespaces == 0 and first.namespaces > 0


def test_a_mechanism_names_what_teardown_deletes_outside_the_namespaces(root, monkeypatch):
    """Links that do not go with an experiment namespace (a VXLAN in the host's own, say) are deleted by what the
    mechanism of their journal entry says, and only those."""
    from types import SimpleNamespace

    from nestbed.plan import mechanisms
    from nestbed.plan.mechanisms.specs import DeleteLink
    kernel = FakeKernel()
    host = kernel.namespaces[""]
    link_type = type(host.links[1])
    host.links[40] = link_type("nbx-fk0", "vxlan")
    host.links[41] = link_type("nbx-other", "vxlan")                  # not the experiment's: stays
    tunnel = SimpleNamespace(remove=lambda entry: [DeleteLink("", entry["name"])])
    monkeypatch.setitem(mechanisms.BY_ENTRY, "tunnel", tunnel)
    state = realized(kernel, plan_of())
    state.journal.record([{"t": "tunnel", "name": "nbx-fk0"}])
    teardown(state, kernel)
    assert [link.name for link in host.links.values()] == [host.links[1].name, "nbx-other"]
