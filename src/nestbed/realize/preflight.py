"""Check that this machine can realize a plan before anything is created (CORE's `_validate_env`).

Kernel features are probed for real, in a throwaway network namespace inside a child process, so the probe
leaves nothing behind and a missing module is found whatever the kernel config says.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

from nestbed.errors import PreflightError
from nestbed.kinds import registry
from nestbed.plan.hostplan import HostPlan
from nestbed.realize import namespaces, netlink, shaping, syscalls


def _in_child_netns(check: functools.partial[bool]) -> bool:
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            syscalls.unshare(syscalls.CLONE_NEWNET)
            ok = check()
        except BaseException:
            ok = False
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _tc_works(kind: str, params: tuple[tuple[str, object], ...]) -> bool:
    sock = netlink.open_socket()
    batch = netlink.Batch()
    batch.add(netlink.tc("add", kind, 1, params), kind)
    try:
        netlink.send(sock, batch, "probe")
        return True
    except netlink.NetlinkError:
        return False


def _iptables_statistic_works() -> bool:
    rules = "*filter\n-A OUTPUT -o lo -m statistic --mode random --probability 0.5 -j DROP\nCOMMIT\n"
    result = subprocess.run(["iptables-restore", "-w"], input=rules, text=True, capture_output=True)
    return result.returncode == 0


@functools.cache
def has_qdisc(kind: str) -> bool:
    params = {"netem": (("handle", shaping.ROOT), ("parent", shaping.TC_H_ROOT), ("delay", 1000)),
              "htb": (("handle", shaping.ROOT), ("parent", shaping.TC_H_ROOT), ("default", 1))}[kind]
    return _in_child_netns(functools.partial(_tc_works, kind, params))


def _vxlan_works() -> bool:
    """The device realize makes for a segment crossing hosts (netlink.vxlan), on this namespace's lo."""
    sock = netlink.open_socket()
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    batch = netlink.Batch()
    batch.add(netlink.vxlan("vxprobe", 0, fd, vni=1, local="127.0.0.1", underlay=1, port=4789, mtu=1450,
                            master=0), "vxlan")
    try:
        netlink.send(sock, batch, "probe")
        return True
    except netlink.NetlinkError:
        return False


@functools.cache
def has_vxlan() -> bool:
    """Whether this kernel makes VXLAN devices (the vxlan module): cross-host segments need them."""
    return _in_child_netns(functools.partial(_vxlan_works))


@functools.cache
def nftables_problem() -> str | None:
    """Why the control network's firewall cannot be made here (None: it can): its very ruleset, loaded by nft in a
    throwaway namespace, then listed with its mark as teardown reads it."""
    from nestbed.realize import firewall

    def alone() -> None:
        syscalls.unshare(syscalls.CLONE_NEWNET)
    mark = "nestbed:probe:00000000"
    script = firewall.ruleset("nestbed-probe", mark, "nbprobe", ["nbprobe.*"], "172.30.0.0/24", "172.30.0.1")
    script += "list table inet nestbed-probe\n"
    code, listing, error = firewall.nft(["-a", "-f", "-"], script, preexec=alone)
    if code == 127:
        return error
    if code != 0:
        return f"nft cannot load the control network's firewall: {error or f'nft exited with {code}'}"
    if firewall.parse_listing(listing, "inet", "nestbed-probe")[1] != mark:
        return "nft does not keep table comments (nftables 0.9.7 or later is needed)"
    return None


@functools.cache
def has_iptables_statistic() -> bool:
    if shutil.which("iptables-restore") is None:
        return False
    return _in_child_netns(functools.partial(_iptables_statistic_works))


def check(plan: HostPlan) -> dict[str, bool]:
    """Raise PreflightError naming what is missing; return the features the realizer should use."""
    if os.geteuid() != 0:
        raise PreflightError("nestbed up needs root to create network namespaces; run it as root (e.g. sudo)")
    if not os.path.exists("/proc/self/ns/net"):
        raise PreflightError("this kernel has no network namespaces (CONFIG_NET_NS)")
    by_kind: dict[str, list[str]] = {}
    for node in plan.nodes:
        if not node.host_netns:         # a node in its host's own namespace (a physical node) is there already
            by_kind.setdefault(node.kind, []).append(node.name)
    for kind in sorted(by_kind):               # each kind says whether this version can realize its nodes
        registry.get(kind).check_realizable(by_kind[kind])
    in_host_netns = [node for node in plan.local_nodes if node.host_netns]
    if in_host_netns:
        from nestbed.realize import hostnetns
        hostnetns.check(in_host_netns)
    taken = [name for name in plan.netns_names if namespaces.exists(name)]
    if taken:
        raise PreflightError(f"network namespace(s) {name_list(taken)} exist already but belong to no nestbed "
                             f"experiment here; remove them (ip netns del NAME) or rename the experiment")

    if plan.control is not None:               # the control network is guarded by an nftables table
        problem = nftables_problem()
        if problem:
            raise PreflightError(f"the control network of {plan.experiment} needs nftables: {problem}")

    # Shaping happens on each member's own interface: only this host's namespaces need this kernel's qdiscs
    # (VMs shape with their guest kernel, which has netem). A member's own settings are in its interface's shaping
    # (egress) and in its bridge port's or TAP's (ingress, on the switch side: this host's kernel).
    shaped = [(i.segment, i.shaping) for n in plan.local_nodes for i in n.interfaces if i.shaping is not None]
    shaped = list({(name, s): None for name, s in shaped})       # one of each, in order: 10⁵ members share one
    ports = [(f"{p.segment} (ingress of {p.node})", p.shaping) for p in plan.port_shaping]
    shaped += ports
    features = {"netem": False, "iptables_loss": False}
    if any(s.bandwidth for _, s in shaped) and not has_qdisc("htb"):
        needs_htb = _once([n for n, s in shaped if s.bandwidth])
        raise PreflightError(f"the kernel has no htb qdisc (sch_htb), needed for bandwidth on "
                             f"{name_list(needs_htb)}; load sch_htb or drop bandwidth")
    needs_netem = _once([n for n, s in shaped if s.delay or s.jitter])
    lossy = _once([n for n, s in shaped if s.loss])
    if needs_netem or lossy:
        features["netem"] = has_qdisc("netem")
    if needs_netem and not features["netem"]:
        raise PreflightError(f"delay/jitter on {name_list(needs_netem)} needs the netem qdisc, which this kernel "
                             f"lacks (sch_netem); remove delay/jitter from them or run on a kernel with netem "
                             f"(qemu nodes will have it)")
    lossy_ports = [n for n, s in ports if s.loss]
    if lossy_ports and not features["netem"]:
        raise PreflightError(f"loss on {name_list(lossy_ports)} needs the netem qdisc, which this kernel lacks "
                             f"(bridged frames pass no iptables); remove that loss or run on a kernel with netem")
    if lossy and not features["netem"]:
        if not has_iptables_statistic():
            raise PreflightError(f"loss on {name_list(lossy)} needs netem or iptables' statistic match; neither "
                                 f"works here (install iptables, or remove loss)")
        features["iptables_loss"] = True
    if plan.vms:
        from nestbed.realize import guestkit
        from nestbed.realize.guestkit.kernel import guest_kernel
        from nestbed.realize.qemu import accelprobe
        accelprobe.accelerator()               # qemu installed, and which accelerator works (cached)
        guestkit.ensure_kit(kernel=guest_kernel())      # the guest kernel and initramfs (built once, cached)
    return features


def _once(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def name_list(names: list[str], limit: int = 5) -> str:
    """The first few names, and how many more: for one-line errors."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
