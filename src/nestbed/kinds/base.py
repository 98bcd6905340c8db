"""NodeKind: what a kind of node is, facet by facet. A kind subclasses it and overrides the defaults that differ.

Facets, and who asks them (always by the kind's name, through `nestbed.kinds.registry`):
- validation: `node()` checks a node's keys and values and builds it (model/topology.py);
- the embedder: `demand()` (slots, cpus, memory), `whole_host`, `runs_in_vhost` (embed/);
- the plan: `own_vm` (a VmPlan of its own, whose guest is the node), `cpus()`/`memory()` (its VM's size),
  `has_control()` (an address on the control network) (plan/compile.py);
  `own_vm` also decides a VM's TAP MAC (plan/mechanisms/tap.py: the node's interface MAC, or a vhost uplink's)
  and which VM names resolve to control addresses in the identity files (realize/apply.py);
- views: `label()` and `marker`/`marker_scale` (cli/embed_view.py, cli/partition_png.py);
- realization: `check_realizable()` refuses nodes this version cannot make, in one line, before anything is
  created (realize/preflight.py); `boot_config_on_host` says whether the host compiles the VM's boot
  configuration, so the guest boots without the full agent (realize/bootconfig.py);
- running programs: `runner()`, the NodeRunner of programs placed on it: a process on this host, or any node
  inside a VM of this kind (agent/runners.py asks the placement's kind).
Teardown is no facet on purpose: it is driven by the journal alone and knows no kinds (realize/teardown.py),
since it must work with the plan gone. The guest agent (agent/guest.py) does not ask kinds either: it runs
inside a VM, where importing a kind module costs seconds under emulation, so it reads the same answer off its
plan (a guest whose one node has netns "" is that node).

realize/ and agent/ import only the registry (a leaf), never this module or a kind's.

Kind modules are imported when validation first meets the kind: keep them light (no embedder, no matplotlib).
"""
from __future__ import annotations

from nestbed.embed.demands import Demand
from nestbed.errors import TopologyError
from nestbed.model import units
from nestbed.model.topology import MAX_COUNT, Node, check_name
from nestbed.types import Location

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.agent.launcherclient import Launcher
    from nestbed.agent.runners import NodeRunner
    from nestbed.plan.hostplan import HostPlan, VmPlan
    from nestbed.realize.state import ExperimentState


class NodeKind:
    name: str = ""
    user_visible = True           # users may write `kind: <name>` (vhost is the testbed's own)
    own_vm = False                # the node is a VM of its own: its VmPlan's guest is the node (root namespace)
    runs_in_vhost = False         # with embed.processes_in: qemu it runs inside one of the testbed's vhost VMs
    whole_host = False            # it takes a host of its own: no other node or vhost shares it
    default_cpus = 0.0            # what it asks when it declares no cpus …
    default_memory = 0            # … and no memory (bytes)
    marker = "o"                  # its matplotlib marker in partition drawings …
    marker_scale = 1.6            # … and its size against a process's

    def __repr__(self) -> str:
        return f"<node kind {self.name}>"

    # -- validation -------------------------------------------------------------------------------------
    def node(self, name: str, location: Location, *, router: object = False, commands: object = (),
             host: str | None = None, partition: object = None, control: object = False, cpus: object = None,
             memory: object = None, count: object = None) -> Node:
        """The node of this kind that these keys describe; TopologyError (at `location`) if a value is wrong."""
        for flag, value in (("router", router), ("control", control)):
            if not isinstance(value, bool):
                raise TopologyError(f"node {name!r}: {flag} must be true or false, not {value!r}", location)
        # Copy first: a generator would be used up by the check. A string or mapping is not a list of commands.
        listable = hasattr(commands, "__iter__") and not isinstance(commands, (str, dict))
        command_list = list(commands) if listable else None      # type: ignore[call-overload]
        if command_list is None or not all(isinstance(c, str) and c.strip() for c in command_list):
            raise TopologyError(f"node {name!r}: commands must be a list of command lines", location,
                                'write e.g. commands: ["python3 -m http.server 80"]')
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or not 1 <= count <= MAX_COUNT):
            raise TopologyError(f"node {name!r}: count {count!r} must be an integer from 1 to {MAX_COUNT}",
                                location)
        if host is not None:
            check_name(host, "host", location)
        try:
            return Node(name=name, kind=self.name, router=router, commands=command_list, host=host,  # type: ignore[arg-type]
                        partition=None if partition is None else str(partition), control=control,  # type: ignore[arg-type]
                        cpus=None if cpus is None else units.parse_cpus(cpus),
                        memory=None if memory is None else units.parse_memory(memory),
                        count=count, location=location)
        except ValueError as err:
            raise TopologyError(f"node {name!r}: {err}", location) from None

    # -- the embedder -----------------------------------------------------------------------------------
    def demand(self, node: Node) -> Demand:
        """What the node asks of its host: one container slot (a VM slot too if it is one), cpus, memory."""
        return Demand(containers=1, qemu=int(self.own_vm), processes=int(self.runs_in_vhost),
                      cpus=self.cpus(node), memory=self.memory(node))

    def cpus(self, node: Node | None) -> float:
        """What it declares, else the kind's default (also the size of its VM; None: a VM that is no node)."""
        return node.cpus if node is not None and node.cpus is not None else self.default_cpus

    def memory(self, node: Node | None) -> int:
        return node.memory if node is not None and node.memory is not None else self.default_memory

    # -- the plan ---------------------------------------------------------------------------------------
    def has_control(self, node: Node) -> bool:
        """Whether the node has its own address on the experiment's control network."""
        return False

    # -- views ------------------------------------------------------------------------------------------
    def label(self, name: str) -> str:
        """The node's name in lists of nodes, tagged with its kind."""
        return f"{name} [{self.name}]"

    # -- realization ------------------------------------------------------------------------------------
    boot_config_on_host = False   # its VM boots from a configuration the host compiled (own_vm kinds)

    def check_realizable(self, nodes: list[str]) -> None:
        """Raise PreflightError (one line: which nodes, what to do) if this version cannot realize these nodes
        of this kind; asked before anything is created."""

    # -- running programs -------------------------------------------------------------------------------
    def runner(self, state: ExperimentState, plan: HostPlan, vm: VmPlan | None,
               launcher: Launcher | None = None) -> NodeRunner:
        """The runner of programs placed on this kind: in `vm` (a VM of this kind), else in a node of this
        kind on this host; `launcher`: the host agent's, which then runs them. Imports agent modules here, so
        that looking a kind up stays light."""
        from nestbed.errors import ExperimentError
        raise ExperimentError(f"nodes of kind {self.name} cannot run programs")
