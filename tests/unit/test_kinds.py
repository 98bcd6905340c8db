"""Node kinds: the registry (lazy, duplicates refused, unknown kinds named) and each built-in kind's facets."""
from __future__ import annotations

import subprocess
import sys

import pytest

from nestbed.embed.demands import QEMU_CPUS, QEMU_MEMORY, VHOST_CPUS, VHOST_MEMORY, Demand
from nestbed.errors import PreflightError, TopologyError
from nestbed.kinds import registry
from nestbed.kinds.base import NodeKind
from nestbed.model import Experiment, load_topology_text
from nestbed.model.topology import Node
from nestbed.plan import compile_plan

GIB = 2**30


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kinds a test registers vanish with it."""
    monkeypatch.setattr(registry, "_kinds", dict(registry._kinds))


class Docker(NodeKind):
    name = "docker"

    def node(self, name: str, location: str, **options: object) -> Node:
        if options.get("commands"):
            raise TopologyError(f"node {name!r}: a docker node runs its image, not commands", location)
        return super().node(name, location, **options)      # type: ignore[arg-type]


# -- the registry ---------------------------------------------------------------------------------------------

def test_built_in_kinds_load_on_first_lookup_only() -> None:
    code = ("import sys\nfrom nestbed.kinds import registry\n"
            "assert 'nestbed.kinds.qemu' not in sys.modules\n"
            "kind = registry.get('qemu')\n"
            "assert 'nestbed.kinds.qemu' in sys.modules and kind.name == 'qemu'\n"
            "assert registry.get('qemu') is kind\n"
            "assert 'nestbed.kinds.physical' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_validation_imports_no_embedder() -> None:
    """Kind modules are imported by `nestbed validate`: they must stay light (no numpy, no METIS)."""
    code = ("import sys\nfrom nestbed.model import load_topology_text\n"
            "load_topology_text('name: x\\nnodes:\\n  a: {}\\n  q: {kind: qemu}\\n  p: {kind: physical}\\n'"
            ").validate()\n"
            "heavy = [m for m in ('numpy', 'nestbed.embed.embedder', 'nestbed.plan.compile') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(registry.UnknownKind, match="unknown node kind 'docker'; known kinds: process, qemu, "
                                                   "physical$"):      # vhost is the testbed's own
        registry.get("docker")
    with pytest.raises(registry.UnknownKind):
        registry.get(["a"])          # type: ignore[arg-type]  # a YAML list is no kind's name


def test_names_are_the_kinds_users_write() -> None:
    assert registry.names() == ["process", "qemu", "physical"]
    assert not registry.get("vhost").user_visible


@pytest.mark.usefixtures("scratch_registry")
def test_register_refuses_a_taken_name() -> None:
    class Fake(NodeKind):
        name = "process"

    with pytest.raises(ValueError, match="'process' is already registered"):
        registry.register(Fake())
    registry.register(Docker())
    with pytest.raises(ValueError, match="'docker' is already registered"):
        registry.register(Docker())


@pytest.mark.usefixtures("scratch_registry")
def test_a_registered_kind_is_usable_and_validates_its_nodes() -> None:
    registry.register(Docker())
    assert registry.names() == ["process", "qemu", "physical", "docker"]
    exp = Experiment("plug")
    assert exp.node("d", "docker").kind == "docker"
    with pytest.raises(TopologyError, match="a docker node runs its image"):
        exp.node("e", "docker", commands=["true"])


# -- validation through the kind ------------------------------------------------------------------------------

def test_unknown_or_internal_kind_in_a_file_is_one_line_with_its_place() -> None:
    for kind in ("docker", "vhost"):
        with pytest.raises(TopologyError) as err:
            load_topology_text(f"name: bad\nnodes:\n  c1: {{kind: {kind}}}\n", "t.yaml")
        assert str(err.value) == (f"t.yaml:3: node 'c1' has unknown kind '{kind}'; "
                                  "use one of process, qemu, physical")


@pytest.mark.parametrize("kind", ["process", "qemu", "physical"])
def test_every_kind_checks_the_shared_keys(kind: str) -> None:
    exp = Experiment("keys")
    node = exp.node("n", kind, cpus=2, memory="1GiB", commands=("true",))
    assert (node.kind, node.cpus, node.memory, node.commands) == (kind, 2.0, GIB, ["true"])
    with pytest.raises(TopologyError, match="router must be true or false"):
        exp.node("m", kind, router="yes")      # type: ignore[arg-type]
    with pytest.raises(TopologyError, match="commands must be a list"):
        exp.node("m", kind, commands="true")


# -- each kind's facets ----------------------------------------------------------------------------------------

def _node(kind: str, **options: object) -> Node:
    return Experiment("facets").node("n", kind, **options)  # type: ignore[arg-type]


def test_process() -> None:
    kind = registry.get("process")
    assert kind.demand(_node("process")) == Demand(1, 0, 1, 0.0, 0)
    assert kind.demand(_node("process", cpus=0.5, memory="1GiB")) == Demand(1, 0, 1, 0.5, GIB)
    assert (kind.own_vm, kind.runs_in_vhost, kind.whole_host) == (False, True, False)
    assert not kind.has_control(_node("process")) and kind.has_control(_node("process", control=True))
    assert kind.label("a") == "a"


def test_qemu() -> None:
    kind = registry.get("qemu")
    assert kind.demand(_node("qemu")) == Demand(1, 1, 0, QEMU_CPUS, QEMU_MEMORY)
    assert kind.demand(_node("qemu", cpus=2, memory="1GiB")) == Demand(1, 1, 0, 2.0, GIB)
    assert (kind.own_vm, kind.runs_in_vhost, kind.whole_host) == (True, False, False)
    assert kind.has_control(_node("qemu"))
    assert kind.label("q") == "q [qemu]"


def test_physical() -> None:
    kind = registry.get("physical")
    assert kind.demand(_node("physical")) == Demand(0, 0, 0, 0.0, 0)
    assert kind.demand(_node("physical", cpus=4, memory="1GiB")) == Demand(0, 0, 0, 4.0, GIB)
    assert (kind.own_vm, kind.runs_in_vhost, kind.whole_host) == (False, False, True)
    assert not kind.has_control(_node("physical", control=True))
    assert kind.label("p") == "p [physical]"


def test_vhost_is_the_testbeds_vm() -> None:
    kind = registry.get(registry.VHOST)
    assert (kind.cpus(None), kind.memory(None)) == (VHOST_CPUS, VHOST_MEMORY)
    assert not kind.own_vm and not kind.user_visible


# -- realization facets -----------------------------------------------------------------------------------------

def test_physical_nodes_are_refused_in_one_line_that_names_them_and_says_what_to_do() -> None:
    with pytest.raises(PreflightError) as err:
        registry.get("physical").check_realizable(["p1", "p2"])
    assert str(err.value) == ("node(s) p1, p2 are of kind physical: each takes a host of its own; realize it on a "
                              "cluster (nestbed up TOPO --cluster C, e.g. emulate: N), or use kind: process on one "
                              "host")
    for kind in ("process", "qemu", registry.VHOST):
        registry.get(kind).check_realizable(["n1"])          # accepted: no error


def test_preflight_asks_each_kind_before_anything_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    from nestbed.realize import namespaces, preflight
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 0)
    looked: list[str] = []
    monkeypatch.setattr(namespaces, "exists", lambda name: looked.append(name) or False)
    exp = load_topology_text("name: mixed\nnodes:\n  a: {}\n  p1: {kind: physical}\nlinks:\n"
                             "  - {ends: [a, p1]}\n", "t.yaml")
    with pytest.raises(PreflightError, match=r"^node\(s\) p1 are of kind physical: .* kind: process on one host$"):
        preflight.check(compile_plan(exp))
    assert looked == []                                       # refused before the namespaces are even looked at


def test_the_host_compiles_a_boot_config_for_qemu_vms_only() -> None:
    assert registry.get("qemu").boot_config_on_host
    assert not registry.get(registry.VHOST).boot_config_on_host
    assert not registry.get("process").boot_config_on_host and not registry.get("physical").boot_config_on_host


def test_identity_files_resolve_a_qemu_vm_by_its_name_but_no_vhost() -> None:
    from nestbed.realize import apply
    exp = load_topology_text("name: ctl\nnodes:\n  a: {}\n  b: {}\n  vm1: {kind: qemu}\nlans:\n"
                             "  lan0: {members: [a, b, vm1]}\nembed: {processes_in: qemu}\n", "t.yaml")
    plan = compile_plan(exp)
    assert {vm.kind for vm in plan.vms} == {"qemu", "vhost"}
    info = apply.control_info(plan)
    assert info is not None and "vm1" in info.addresses
    assert not any(vm.name in info.addresses for vm in plan.vms if vm.kind == "vhost")
