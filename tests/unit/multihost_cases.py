"""Multi-host compile cases whose every host plan is frozen (tests/unit/data/multihost_golden.json.gz).

The goldens were made by main's compile_plans before it was made near-linear (issue 14):
    PYTHONPATH=/work/main/src:tests/unit python3 tests/unit/multihost_cases.py
and regenerating them is only for a deliberate change of plan content. `normalized` leaves out only what issue 14
changed on purpose: the VNIs of segments (cross-host segments only are numbered now, test_vni.py) and the pins
that number them. Every node is placed with `host:` (the embedder's choices stay out of it), except the vhosts'
packing in "vms".
Imports only what main had too, so the same file runs against either tree.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nestbed.embed import embed
from nestbed.model.cluster import load_cluster_text
from nestbed.model.loader import load_topology_text
from nestbed.plan.multihost import ClusterPlan, HostSite, compile_plans
from nestbed.plan.pins import pins_of

GOLDEN = Path(__file__).parent / "data" / "multihost_golden.json.gz"
NEW_PIN_KEYS = ("vnis", "next_vni")      # issue 14's own numbering of cross-host segments
PREFIX = "g"      # NESTBED_PREFIX while compiling (the whole plan's namespace names carry it)


def ring(hosts: int, per_host: int, lans: int, name: str = "ring") -> str:
    """The benchmark's shape: per host `lans` LANs sharing its nodes, and a link from each host to the next."""
    size = per_host // lans
    lines = [f"name: {name}", "nodes:"]
    lines += [f"  n{h}-{i}: {{host: emu{h}}}" for h in range(hosts) for i in range(per_host)]
    lines.append("lans:")
    for h in range(hosts):
        for k in range(lans):
            members = ", ".join(f"n{h}-{i}" for i in range(k * size, (k + 1) * size))
            lines.append(f"  l{h}-{k}: {{members: [{members}], bandwidth: {10 * (k + 1)}Mbit}}")
    lines.append("links:")
    lines += [f"  - {{name: x{h}, ends: [n{h}-0, n{(h + 1) % hosts}-1], delay: 5ms}}" for h in range(hosts)]
    return "\n".join(lines) + "\n"


SPAN = """
name: span
nodes:
  a: {host: emu0}
  b: {host: emu1, commands: ['sleep 1']}
  c: {host: emu2, kind: physical}
  d: {host: emu0}
  r: {router: true, host: emu1}
  s: {host: emu1, control: true}
lans:
  lan0: {members: [a, b, c, r], bandwidth: 100Mbit}
  lan1: {members: [d, s]}
links:
  - {name: l1, ends: [r, d]}
  - {name: l2, ends: [a, d], loss: 0.01}
  - {name: l3, ends: [c, s]}
"""

VMS = """
name: vmspan
embed: {processes_in: qemu, per_vhost: 2}
nodes:
  p: {count: 4}
  q: {kind: qemu, host: emu1}
  v: {kind: qemu, host: emu0}
lans:
  lan0: {members: [p, q]}
links:
  - {name: l1, ends: [q, v]}
"""

BASE = """\
name: mh
nodes:
  a0: {host: emu0}
  a1: {host: emu0}
  b0: {host: emu1}
  b1: {host: emu1}
  c0: {host: emu2}
lans:
  lan0: {members: [a0, b0, c0]}
  lan1: {members: [a0, a1]}
links:
  - {name: l1, ends: [a1, b1], bandwidth: 10Mbit}
  - {name: l4, ends: [b0, c0]}
"""

# The running BASE changed: a node early in the file, a member more, a link and a LAN gone, a new cross-host link.
EDITED = """\
name: mh
nodes:
  z0: {host: emu2}
  a0: {host: emu0}
  a1: {host: emu0}
  b0: {host: emu1}
  b1: {host: emu1}
  c0: {host: emu2}
lans:
  lan0: {members: [a0, b0, b1, c0, z0]}
links:
  - {name: l1, ends: [a1, b1], bandwidth: 20Mbit}
  - {name: l5, ends: [z0, a1]}
"""


def tree() -> str:
    """A LAN past a bridge's ports on emu0 (a tree of bridges) that crosses to emu1."""
    nodes = [f"  t{i}: {{host: emu{0 if i < 1010 else 1}}}" for i in range(1030)]
    members = ", ".join(f"t{i}" for i in range(1030))
    return ("name: tree\nembed: {per_host: 2000}\nnodes:\n" + "\n".join(nodes)
            + f"\nlans:\n  big: {{members: [{members}]}}\nlinks:\n  - {{name: tl, ends: [t0, t1020]}}\n")


def sites(hosts: int, mtu: int = 9000, netns: bool = False) -> dict[str, HostSite]:
    return {f"emu{i}": HostSite(prefix=f"g{i}", address=f"10.250.{i // 250}.{i % 250 + 1}", underlay="ul0", mtu=mtu,
                                netns=f"gh-{i}" if netns else None) for i in range(hosts)}


def compiled(text: str, hosts: int, mtu: int = 9000, netns: bool = False, cluster_extra: str = "",
             running: ClusterPlan | None = None) -> ClusterPlan:
    exp = load_topology_text(text, "golden.yaml")
    cluster = load_cluster_text(f"emulate: {hosts}\n{cluster_extra}", "lab.yaml")
    pins = pins_of(running.whole) if running is not None else None
    return compile_plans(exp, embed(exp, cluster), sites(hosts, mtu, netns), pins)


def _modified() -> ClusterPlan:
    return compiled(EDITED, 3, running=compiled(BASE, 3))


def _modified_twice() -> ClusterPlan:
    first = compiled(BASE, 3)
    return compiled(BASE, 3, running=compiled(EDITED, 3, running=first))


VMS_CLUSTER = "hosts: {emu0: {max_vms: 3}, emu1: {max_vms: 3}}\n"

# name → (the compile, whether the golden keeps the whole JSON or only its hash)
CASES: dict[str, tuple[Callable[[], ClusterPlan], bool]] = {
    "ring": (lambda: compiled(ring(4, 20, 2), 4), True),
    "ring-short-underlay": (lambda: compiled(ring(3, 12, 3), 3, mtu=1500), True),
    "span": (lambda: compiled(SPAN, 3), True),
    "span-emulated-netns": (lambda: compiled(SPAN, 3, netns=True), True),
    "vms": (lambda: compiled(VMS, 2, mtu=1400, cluster_extra=VMS_CLUSTER), True),
    "modify": (_modified, True),
    "modify-back": (_modified_twice, True),
    "ring-12x100": (lambda: compiled(ring(12, 100, 5), 12), False),
    "tree": (lambda: compiled(tree(), 2), False),
}


def normalized(planned: ClusterPlan) -> dict[str, Any]:
    """Every host plan's JSON and the whole plan's, without the VNIs of segments and the pins that number them."""
    out: dict[str, Any] = {"notes": list(planned.notes)}
    for host, plan in [*planned.plans.items(), ("(whole)", planned.whole)]:
        data = json.loads(plan.to_json())
        for vxlan in data["vxlans"]:
            vxlan["vni"] = None
        for key in NEW_PIN_KEYS:
            data["pins"].pop(key, None)
        _without_member_shaping(data)
        out[host] = data
    return out


def _without_member_shaping(data: dict[str, Any]) -> None:
    """Fields added after the goldens (per-member shaping), left out while empty: none of the cases has any."""
    if data.get("port_shaping") == []:
        del data["port_shaping"]
    for node in data["nodes"] + data.get("others", []):
        for iface in node["interfaces"]:
            if iface.get("ingress", 0) is None:
                del iface["ingress"]
    for vm in data.get("vms", []):
        if vm.get("guest"):
            _without_member_shaping(vm["guest"])


def digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def generate() -> dict[str, Any]:
    return {name: (normalized(run()) if whole else digest(normalized(run()))) for name, (run, whole) in CASES.items()}


def load() -> dict[str, Any]:
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))


if __name__ == "__main__":
    os.environ["NESTBED_PREFIX"] = PREFIX
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_bytes(gzip.compress(json.dumps(generate(), sort_keys=True).encode(), 9, mtime=0))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)", file=sys.stderr)
