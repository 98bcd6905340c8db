"""`nestbed cluster check` without hosts: the verdict from fake answers (cluster/checkreport.py), the path-MTU search
and the ICMP it sends and reads (agent/pathmtu.py), the clock estimate, the orchestration over fake transports
(cluster/check.py), the agent's `check` and `probe_mtu` ops, what a host says of KVM, and bad input as one line."""
from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nestbed import __version__
from nestbed.agent import hostcheck, pathmtu, remote
from nestbed.cli import main as cli_main
from nestbed.cluster import check
from nestbed.cluster.checkreport import (
    ClockEstimate,
    ClockSample,
    HostCheck,
    PathProbe,
    assess,
    estimate_clock,
    pair_mtus,
)
from nestbed.errors import ExperimentError

GOOD = {name: {"ok": True, "detail": f"{name} works"} for name in ("netem", "htb", "vxlan", "nftables", "kvm")}


def answer(version: str = __version__, **features: Any) -> dict[str, Any]:
    return {"version": version, "python": "3.11.2", "kernel": "6.1.0-test", "host": "h",
            "features": {**GOOD, **features}, "addresses": ["10.250.0.1/16"], "ssh_address": None, "time": 0.0}


def host(name: str, clock: ClockEstimate | None = ClockEstimate(0.0, 0.001), **kwargs: Any) -> HostCheck:
    kwargs.setdefault("answer", answer())
    return HostCheck(name, f"{name}.lab", clock=clock, **kwargs)


def mesh(names: list[str], mtu: int | dict[tuple[str, str], int | None]) -> list[PathProbe]:
    """Both directions of every pair, at one MTU or per direction."""
    probes = []
    for a in names:
        for b in names:
            if a != b:
                value = mtu if isinstance(mtu, int) else mtu.get((a, b), 9000)
                probes.append(PathProbe(a, b, value, why=None if value else "no echo reply"))
    return probes


def levels(report) -> list[tuple[str, str]]:
    return [(f.level, f.text) for f in report.findings]


# -- the verdict ------------------------------------------------------------------------------------------------
def test_three_good_hosts_on_a_jumbo_underlay_are_ok_with_nothing_to_say():
    names = ["emu0", "emu1", "emu2"]
    report = assess(__version__, [host(n) for n in names], mesh(names, 9000), underlay_mtu=9000)
    assert report.findings == [] and report.verdict == "ok" and report.exit_code == 0
    assert [(p.hosts, p.mtu) for p in report.pairs] == [(("emu0", "emu1"), 9000), (("emu0", "emu2"), 9000),
                                                        (("emu1", "emu2"), 9000)]
    json.dumps(report.to_json())


def test_a_1500_underlay_warns_that_crossing_segments_run_at_1450_naming_every_pair():
    names = ["emu0", "emu1", "emu2"]
    report = assess(__version__, [host(n) for n in names], mesh(names, 1500), underlay_mtu=1500)
    assert report.verdict == "warnings" and report.exit_code == 0
    assert levels(report) == [("warning", "underlay path MTU 1500 between emu0–emu1, emu0–emu2, emu1–emu2 "
                                          "(< 1550): cross-host segments there run at MTU 1450")]


def test_many_hosts_or_pairs_alike_are_said_in_a_few_words():
    names = [f"emu{i}" for i in range(8)]
    no_netem = answer(netem={"ok": False, "detail": "no netem qdisc"})
    report = assess(__version__, [host(n, answer=no_netem) for n in names], mesh(names, 1500))
    assert levels(report) == [("warning", "netem on every host (8): no netem qdisc"),
                              ("warning", "underlay path MTU 1500 between every pair (28) (< 1550): cross-host "
                                          "segments there run at MTU 1450")]
    report = assess(__version__, [host(n, answer=no_netem if n != "emu7" else answer()) for n in names],
                    mesh(names, 9000))
    assert levels(report)[0] == ("warning", "netem on emu0, emu1, emu2, emu3, emu4, emu5 and 1 more: no netem qdisc")


def test_pairs_are_grouped_by_mtu_and_the_smaller_direction_counts():
    names = ["a", "b", "c"]
    probes = mesh(names, {("a", "b"): 1500, ("b", "a"): 1400, ("a", "c"): 9000, ("c", "a"): 9000,
                          ("b", "c"): 1500, ("c", "b"): 1500})
    report = assess(__version__, [host(n) for n in names], probes)
    assert {p.hosts: p.mtu for p in report.pairs} == {("a", "b"): 1400, ("a", "c"): 9000, ("b", "c"): 1500}
    texts = [t for _, t in levels(report)]
    assert "underlay path MTU 1400 between a–b (< 1550): cross-host segments there run at MTU 1350" in texts
    assert "underlay path MTU 1500 between b–c (< 1550): cross-host segments there run at MTU 1450" in texts
    assert any(level == "note" and "differs by direction: 1500 to b, 1400 to a" in text
               for level, text in levels(report))
    assert report.peers_of("b") == [("a", 1400), ("c", 1500)]


def test_an_underlay_too_small_for_any_crossing_segment_is_unusable():
    report = assess(__version__, [host("a"), host("b")], mesh(["a", "b"], 600))
    assert report.verdict == "unusable" and report.exit_code == 1
    assert "leaves 550 bytes" in report.findings[0].text


def test_no_path_between_two_hosts_is_unusable_and_says_from_where():
    probes = mesh(["a", "b"], {("a", "b"): None, ("b", "a"): 1500})
    report = assess(__version__, [host("a"), host("b")], probes)
    assert report.verdict == "unusable"
    assert levels(report)[0] == ("unusable", "no underlay path between a and b (from a: no echo reply): segments "
                                             "cannot cross these hosts")
    assert report.to_json()["pairs"][0]["why"] == "from a: no echo reply"


def test_a_measured_mtu_below_the_cluster_files_underlay_mtu_is_a_warning():
    report = assess(__version__, [host("a"), host("b")], mesh(["a", "b"], 1400), underlay_mtu=9000)
    assert any(level == "warning" and "underlay_mtu 9000 is more than the path carries between a–b (down to "
               "1400): plans made for 9000 would lose frames above 1350" in text for level, text in levels(report))


def test_a_probe_that_ran_out_of_time_is_a_lower_bound_and_says_so():
    probes = [PathProbe("a", "b", 8000, exact=False), PathProbe("b", "a", 9000)]
    report = assess(__version__, [host("a"), host("b")], probes)
    assert levels(report) == [("note", "path MTU between a and b: at least 8000 (the probe ran out of time before "
                                       "it was exact)")]
    assert report.verdict == "ok"


def test_an_unreachable_host_is_unusable_in_one_line_and_is_left_out_of_the_pairs():
    hosts = [host("a"), host("b"), HostCheck("c", "root@192.0.2.3", error="is unreachable: no answer in 10 s")]
    report = assess(__version__, hosts, mesh(["a", "b"], 9000))
    assert report.verdict == "unusable"
    assert levels(report) == [("unusable", "host c (root@192.0.2.3): is unreachable: no answer in 10 s")]
    assert [p.hosts for p in report.pairs] == [("a", "b")]
    assert report.to_json()["hosts"][2] == {"name": "c", "where": "root@192.0.2.3", "emulated": False,
                                            "reached": False, "error": "is unreachable: no answer in 10 s",
                                            "version": None, "python": None, "kernel": None, "features": None,
                                            "addresses": None, "ssh_address": None, "clock": None}


def test_another_nestbed_version_is_refused_naming_both():
    report = assess("1.2.0", [host("a", answer=answer("1.1.0")), host("b", answer=answer("1.2.0"))],
                    mesh(["a", "b"], 9000))
    assert report.verdict == "unusable"
    assert levels(report) == [("unusable", "host a runs nestbed 1.1.0, this controller runs nestbed 1.2.0: install "
                                           "nestbed 1.2.0 there")]


def test_missing_kernel_features_are_graded_and_grouped_by_host():
    off = {"ok": False, "detail": "no netem qdisc (sch_netem)"}
    hosts = [host("a", answer=answer(netem=off, kvm={"ok": None, "detail": "not probed"})),
             host("b", answer=answer(netem=off, nftables={"ok": False, "detail": "nft: not found"}))]
    report = assess(__version__, hosts, mesh(["a", "b"], 9000))
    assert levels(report) == [("warning", "netem on a, b: no netem qdisc (sch_netem)"),
                              ("warning", "nftables on b: nft: not found"),
                              ("note", "kvm on a: not probed")]
    assert report.verdict == "warnings"


def test_kvm_alone_is_a_note_and_vxlan_is_fatal_only_across_hosts():
    no_kvm = answer(kvm={"ok": False, "detail": "/dev/kvm: No such file or directory"})
    assert assess(__version__, [host("a", answer=no_kvm)]).verdict == "ok"
    no_vxlan = answer(vxlan={"ok": False, "detail": "no VXLAN devices"})
    assert assess(__version__, [host("a", answer=no_vxlan)]).verdict == "ok"
    two = assess(__version__, [host("a", answer=no_vxlan), host("b")], mesh(["a", "b"], 9000))
    assert levels(two) == [("unusable", "vxlan on a: no VXLAN devices")]


def test_a_feature_an_older_agent_does_not_report_is_not_taken_as_working():
    old = answer()
    del old["features"]["htb"]
    report = assess(__version__, [host("a", answer=old)])
    assert levels(report) == [("warning", "htb on a: not reported (an older agent?)")]


def test_a_clock_off_by_more_than_half_a_second_is_a_warning_unless_the_round_trip_blurs_it():
    hosts = [host("a", clock=ClockEstimate(0.82, 0.001)), host("b", clock=ClockEstimate(-0.3, 0.001)),
             host("c", clock=ClockEstimate(0.6, 0.2)), host("d", clock=None)]
    report = assess(__version__, hosts, mesh(["a", "b", "c", "d"], 9000))
    assert levels(report) == [("warning", "host a's clock is +0.820 s (± 0.001 s) off this controller's, more "
                                          "than 0.5 s: records' times and reports use the hosts' clocks; "
                                          "synchronize it (NTP, chrony)")]


def test_findings_come_worst_first():
    hosts = [host("a", clock=ClockEstimate(3.0, 0.0), answer=answer(kvm={"ok": False, "detail": "no"})),
             HostCheck("b", "b.lab", error="refused our key")]
    assert [f.level for f in assess(__version__, hosts).findings] == ["unusable", "warning", "note"]


def test_pair_mtus_of_a_direction_not_probed_is_none():
    pairs = pair_mtus(["a", "b"], [PathProbe("a", "b", 1500)])
    assert pairs[0].mtu is None and pairs[0].why == "not probed"


# -- the clock --------------------------------------------------------------------------------------------------
def test_the_clock_offset_takes_the_hosts_work_out_of_the_round_trip():
    # sent at 100.000, answered at 100.010; the host worked 4 ms, so the network took 6 ms: the host read its
    # clock 3 ms before the answer came, at 100.007 here; its clock said 102.007
    estimate = estimate_clock([ClockSample(100.0, 100.010, 102.007, busy=0.004)])
    assert estimate is not None
    assert estimate.offset == pytest.approx(2.0) and estimate.uncertainty == pytest.approx(0.003)


def test_the_clock_offset_comes_from_the_shortest_round_trip():
    samples = [ClockSample(0.0, 0.2, 0.7, busy=0.0),        # slow: 0.6 ± 0.1
               ClockSample(1.0, 1.002, 1.501, busy=0.0)]     # fast: 0.5 ± 0.001
    estimate = estimate_clock(samples)
    assert estimate is not None
    assert estimate.offset == pytest.approx(0.5) and estimate.uncertainty == pytest.approx(0.001)
    assert estimate_clock([]) is None


# -- the path MTU search ----------------------------------------------------------------------------------------
def path(mtu: int | None, asked: list[list[int]] | None = None):
    def answered(sizes: list[int]) -> set[int]:
        if asked is not None:
            asked.append(list(sizes))
        return {s for s in sizes if mtu is not None and s <= mtu}
    return answered


def test_the_routes_mtu_is_confirmed_in_one_round():
    asked: list[list[int]] = []
    found = pathmtu.search(path(1500, asked), high=1500)
    assert (found.mtu, found.exact, found.rounds) == (1500, True, 1)
    assert 1500 in asked[0] and pathmtu.MIN_SIZE in asked[0] and len(asked[0]) <= pathmtu.WIDTH


@pytest.mark.parametrize("high", [1500, 9000, 65535])
def test_a_smaller_mtu_further_on_is_found_exactly_in_a_few_rounds(high):
    for mtu in sorted({68, 69, 575, 576, 1279, 1400, 1450, 1499, high - 1, high} | set(range(100, high, 997))):
        found = pathmtu.search(path(mtu), high=high)
        assert (found.mtu, found.exact) == (mtu, True), (high, mtu)
        assert found.rounds <= 5


def test_a_peer_that_answers_no_size_has_no_mtu():
    asked: list[list[int]] = []
    found = pathmtu.search(path(None, asked), high=9000)
    assert found.mtu is None and len(asked) == 1


def test_out_of_time_the_search_gives_a_lower_bound():
    rounds = iter([True, False])
    found = pathmtu.search(path(4321), high=9000, time_left=lambda: next(rounds))
    assert not found.exact and found.mtu is not None and found.mtu <= 4321 and found.rounds == 2


def test_sizes_between_are_strictly_inside_and_spread():
    assert pathmtu._between(10, 15, 16) == [11, 12, 13, 14]
    spread = pathmtu._between(1000, 9000, 16)
    assert len(spread) == 16 and all(1000 < s < 9000 for s in spread) and spread == sorted(spread)
    assert pathmtu._between(10, 11, 16) == []


# -- the packets ------------------------------------------------------------------------------------------------
def ip_header(source: str, destination: str, length: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 0, 0x4000, 64, 1, 0, socket.inet_aton(source),
                       socket.inet_aton(destination))


def test_an_echo_request_has_a_valid_checksum_and_the_size_asked():
    packet = pathmtu.echo_request(0x1234, 7, 1500 - pathmtu.HEADERS)
    assert len(packet) + 20 == 1500
    assert pathmtu.checksum(packet) == 0
    assert struct.unpack("!BBHHH", packet[:8])[0::3] == (8, 0x1234) and packet[6:8] == b"\x00\x07"


def test_replies_are_ours_only_with_our_identifier_from_our_peer():
    reply = bytearray(pathmtu.echo_request(0x1234, 9, 32))
    reply[0] = pathmtu.ICMP_ECHO_REPLY
    packet = ip_header("10.250.0.2", "10.250.0.1", 20 + len(reply)) + bytes(reply)
    assert pathmtu.reply_of(packet, 0x1234, "10.250.0.2") == (pathmtu.ICMP_ECHO_REPLY, 9)
    assert pathmtu.reply_of(packet, 0x4321, "10.250.0.2") == (None, None)       # another probe's
    assert pathmtu.reply_of(packet, 0x1234, "10.250.0.3") == (None, None)       # another peer's
    request = ip_header("10.250.0.2", "10.250.0.1", 60) + pathmtu.echo_request(0x1234, 9, 32)
    assert pathmtu.reply_of(request, 0x1234, "10.250.0.2") == (None, None)      # a request is no reply
    assert pathmtu.reply_of(b"\x45", 0x1234, "10.250.0.2") == (None, None)


def test_an_unreachable_quoting_our_request_ends_the_wait_for_that_size():
    quoted = ip_header("10.250.0.1", "10.250.0.2", 1500) + pathmtu.echo_request(0x1234, 5, 0)
    unreachable = bytes([pathmtu.ICMP_UNREACHABLE, 4, 0, 0, 0, 0, 0x05, 0x78]) + quoted
    packet = ip_header("10.250.0.9", "10.250.0.1", 20 + len(unreachable)) + unreachable
    assert pathmtu.reply_of(packet, 0x1234, "10.250.0.2") == (pathmtu.ICMP_UNREACHABLE, 5)
    assert pathmtu.reply_of(packet, 0x1235, "10.250.0.2") == (None, None)


# -- what a host says of KVM ------------------------------------------------------------------------------------
@pytest.fixture
def qemu(monkeypatch):
    from nestbed.realize.qemu import accelprobe
    state: dict[str, Any] = {"which": "/usr/bin/qemu-system-x86_64", "ioctl": None, "remembered": None}
    monkeypatch.setattr("shutil.which", lambda name: state["which"])
    monkeypatch.setattr(accelprobe, "kvm_ioctl_problem", lambda: state["ioctl"])
    monkeypatch.setattr(accelprobe, "remembered", lambda: state["remembered"])
    return state


def test_kvm_as_a_host_reports_it(qemu):
    assert hostcheck.kvm()["ok"] is None                       # /dev/kvm works; no guest booted yet this boot
    qemu["remembered"] = ("kvm", "KVM boots a test guest")
    assert hostcheck.kvm() == {"ok": True, "detail": "KVM boots a test guest"}
    qemu["remembered"] = ("tcg", "KVM unusable (a test guest did not reach its init in 6 s under KVM)")
    assert hostcheck.kvm()["ok"] is False
    qemu["ioctl"] = "/dev/kvm: No such file or directory"
    assert hostcheck.kvm() == {"ok": False, "detail": "/dev/kvm: No such file or directory: VMs run under TCG "
                                                      "(software emulation)"}
    qemu["which"] = None
    assert hostcheck.kvm()["ok"] is False and "not installed" in hostcheck.kvm()["detail"]


# -- the agent's ops --------------------------------------------------------------------------------------------
@pytest.fixture
def agent():
    ours, theirs = socket.socketpair()
    server = remote.RemoteAgent(theirs.makefile("rb"), theirs.makefile("wb"), remote.HostOps())
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    reader = ours.makefile("rb")
    assert "hello" in json.loads(reader.readline())

    def ask(message: dict[str, Any]) -> dict[str, Any]:
        ours.sendall(json.dumps(message).encode() + b"\n")
        return json.loads(reader.readline())
    yield ask
    ours.shutdown(socket.SHUT_RDWR)
    thread.join(5)


def test_the_agents_cheap_check_answers_its_versions_and_clock(agent, monkeypatch):
    monkeypatch.setattr(hostcheck, "kernel_features", lambda: pytest.fail("the cheap check probes nothing"))
    reply = agent({"id": 1, "op": "check", "features": False})["ok"]
    assert reply["version"] == __version__ and reply["kernel"] and reply["python"].count(".") == 2
    assert reply["time"] > 1e9 and 0 <= reply["busy"] < 5 and "features" not in reply


def test_the_agents_full_check_has_features_and_addresses(agent, monkeypatch):
    monkeypatch.setattr(hostcheck, "kernel_features", lambda: GOOD)
    monkeypatch.setattr(hostcheck, "addresses", lambda: ["10.250.0.1/16"])
    monkeypatch.setenv("SSH_CONNECTION", "10.250.255.254 50000 10.250.0.1 22")
    reply = agent({"id": 2, "op": "check"})["ok"]
    assert reply["features"] == GOOD and reply["addresses"] == ["10.250.0.1/16"]
    assert reply["ssh_address"] == "10.250.0.1"


def test_probe_mtu_takes_an_ipv4_address_only(agent):
    reply = agent({"id": 3, "op": "probe_mtu", "peer": "emu1; rm -rf /"})
    assert reply["id"] == 3 and reply["error"].startswith("bad 'probe_mtu' request: AddressValueError")
    assert "\n" not in reply["error"]


# -- the orchestration over fake transports ---------------------------------------------------------------------
class FakeCall:
    def __init__(self, reply: dict[str, Any] | None, error: str | None = None):
        import queue
        self.id, self.reply, self.error = 1, reply, error
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        if reply is not None or error is not None:
            self.lines.put({"ok": reply} if error is None else {"error": error})

    def wait(self) -> dict[str, Any]:
        line = self.lines.get()
        if "ok" in line:
            return line["ok"]
        raise ExperimentError(f"host x: {line['error']}")


class FakeHost:
    """A transport whose agent answers check, and probe_mtu from `mtus` (peer address → MTU)."""

    def __init__(self, name: str, mtus: dict[str, int], refuse: str | None = None, hang: bool = False):
        self.name, self.mtus, self.refuse, self.hang = name, mtus, refuse, hang
        self.label = f"host {name} ({name}.lab)"
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def connect(self) -> dict[str, Any]:
        if self.refuse:
            raise ExperimentError(f"{self.label} {self.refuse}")
        return {"version": __version__}

    def call(self, op: str, **args: Any) -> FakeCall:
        self.asked.append((op, args))
        if self.hang:
            return FakeCall(None)
        if op == "check":
            now = time.time()        # the same clock as the controller's
            return FakeCall({**answer(), "ssh_address": f"192.0.2.{self.name[-1]}", "time": now}
                            if args["features"] else {"version": __version__, "time": now, "busy": 0.0})
        mtu = self.mtus.get(args["peer"])
        return FakeCall({"peer": args["peer"], "mtu": mtu, "exact": True, "why": None if mtu else "no reply"})

    def close(self) -> None:
        self.closed = True


def test_every_ordered_pair_of_answering_hosts_is_probed_at_its_underlay_address():
    hosts = {n: FakeHost(n, {"192.0.2.1": 1500, "192.0.2.2": 9000, "192.0.2.3": 9000}) for n in ("h1", "h2", "h3")}
    targets = [check.Target("h1", "h1.lab", hosts["h1"], address="192.0.2.1"),
               check.Target("h2", "h2.lab", hosts["h2"]),
               check.Target("h3", "h3.lab", hosts["h3"])]
    report = check.check_targets(targets)
    probed = {(name, args["peer"]) for name, h in hosts.items() for op, args in h.asked if op == "probe_mtu"}
    assert probed == {("h1", "192.0.2.2"), ("h1", "192.0.2.3"), ("h2", "192.0.2.1"), ("h2", "192.0.2.3"),
                      ("h3", "192.0.2.1"), ("h3", "192.0.2.2")}       # h2's and h3's from their ssh_address
    assert {p.hosts: p.mtu for p in report.pairs} == {("h1", "h2"): 1500, ("h1", "h3"): 1500, ("h2", "h3"): 9000}
    assert all(h.closed for h in hosts.values())
    assert sum(1 for op, args in hosts["h1"].asked if op == "check") == 1 + check.CLOCK_SAMPLES
    assert all(h.clock is not None and abs(h.clock.offset) < 0.5 for h in report.hosts)
    assert [f.text for f in report.findings if f.level == "warning"] == [
        "underlay path MTU 1500 between h1–h2, h1–h3 (< 1550): cross-host segments there run at MTU 1450"]
    assert sum(1 for f in report.findings if "differs by direction: 9000 to h2, 1500 to h1" in f.text) == 1


def test_a_host_that_refuses_or_hangs_is_a_finding_and_the_others_are_still_checked(monkeypatch):
    monkeypatch.setattr(check, "CHECK_SECONDS", 0.2)
    hosts = [FakeHost("h1", {}), FakeHost("h2", {}, refuse="runs nestbed 0.0.1, this controller runs nestbed "
                                                           f"{__version__}: install nestbed {__version__} there"),
             FakeHost("h3", {}, hang=True)]
    report = check.check_targets([check.Target(h.name, f"{h.name}.lab", h) for h in hosts])
    assert report.verdict == "unusable"
    assert [(f.level, f.text) for f in report.findings] == [
        ("unusable", f"host h2 (h2.lab): runs nestbed 0.0.1, this controller runs nestbed {__version__}: install "
                     f"nestbed {__version__} there"),
        ("unusable", "host h3 (h3.lab): no answer to check in 0.2 s")]
    assert report.pairs == [] and all(h.closed for h in hosts)


def test_a_host_without_ssh_that_is_not_emulated_cannot_be_reached():
    from nestbed.model.cluster import load_cluster_text
    cluster = load_cluster_text("hosts:\n  h1: {cpus: 4}\n  h2: {ssh: 'root@:22'}\n")
    targets = [check.real_target(cluster, "h1"), check.real_target(cluster, "h2")]
    assert targets[0].transport is None and "has no ssh: destination" in (targets[0].error or "")
    assert targets[1].transport is None and "has no host" in (targets[1].error or "")
    report = check.run(cluster)
    assert report.verdict == "unusable" and len(report.findings) == 2


# -- bad input --------------------------------------------------------------------------------------------------
def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["nestbed", *args])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return int(exited.value.code or 0), err.strip()


@pytest.mark.parametrize("text, said", [
    (None, "does not exist"),
    ("emulate: 3\nunderlay_mtu: 100\n", "underlay_mtu 100 must be an integer from 576 to 65535"),
    ("emulate: 3\nhostz: {}\n", "unknown key 'hostz'"),
    ("emulate: [3]\n", "emulate [3] must be an integer"),
    ("", "the cluster file is empty"),
])
def test_a_bad_cluster_file_is_one_line(tmp_path: Path, capsys, monkeypatch, text, said):
    path = tmp_path / "lab.yaml"
    if text is not None:
        path.write_text(text)
    code, err = run_main(capsys, monkeypatch, "cluster", "check", "--cluster", str(path))
    assert code != 0 and said in err


def test_emulated_hosts_without_root_are_one_line(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    (tmp_path / "lab.yaml").write_text("emulate: 2\n")
    code, err = run_main(capsys, monkeypatch, "cluster", "check", "--cluster", str(tmp_path / "lab.yaml"))
    assert code != 0 and "needs root" in err
