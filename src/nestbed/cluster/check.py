"""`nestbed cluster check`: can these hosts run experiments together? Ask every host, conclude (checkreport.py).

    report = check.run(load_cluster("lab.yaml"))      # CheckReport: hosts, pairs' path MTUs, findings, verdict

Every host is reached as `up` reaches it (SshHost: one connection, its remote agent) and asked, all at once:
`check` (its nestbed, Python, kernel, kernel features, addresses and clock; then a few cheap `check`s more for the
clock), and `probe_mtu` to every other reached host (the underlay's path MTU with DF set, both directions).
A host that cannot be reached, or runs another nestbed, is a one-line finding, never an exception.

Emulated hosts (`emulate: N`) exist only with an experiment: the check brings them up under a throwaway name of
its own, `check-<pid>`, and always takes them down afterwards (their journal, as `down` does), also on ^C or
SIGTERM; what could not be removed is a finding.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from nestbed import __version__, paths
from nestbed.cluster import emulated, real
from nestbed.cluster.checkreport import (
    CheckReport,
    ClockSample,
    Finding,
    HostCheck,
    PathProbe,
    assess,
    estimate_clock,
)
from nestbed.cluster.ssh import SshHost
from nestbed.errors import ExperimentError, NestbedError, PreflightError, TopologyError
from nestbed.model.cluster import Cluster

CLOCK_SAMPLES = 3           # cheap `check`s per host after the full one; the shortest round trip counts
CHECK_SECONDS = 60.0        # a host's answer to `check` (its feature probes fork and run nft)
PROBE_SECONDS = 5.0         # a host's `probe_mtu` bound (agent/pathmtu.py), plus MARGIN for the channel
MARGIN = 10.0
PARALLEL = 64               # requests in flight from here (each waits in a thread)


@dataclass
class Target:
    """A host to check: how to reach it, or why it cannot be."""
    name: str
    where: str
    transport: SshHost | None
    address: str | None = None      # its underlay address, the peers' probe target (None: from its answer)
    error: str | None = None
    emulated: bool = False


def run(cluster: Cluster, progress: Callable[[str], None] | None = None) -> CheckReport:
    """Check every host of the cluster file (bringing its emulated hosts up and down around it)."""
    say = progress or (lambda _: None)
    real = [name for name in cluster.hosts if not cluster.is_emulated(name)]
    if not cluster.emulate:
        return check_targets([real_target(cluster, name) for name in real], say=say)
    with emulated_hosts(cluster, say) as (hosts, teardown):
        report = check_targets(emulated_targets(hosts) + [real_target(cluster, name) for name in real],
                               underlay_mtu=cluster.underlay_mtu, say=say)
    report.findings += [Finding("warning", f"left after the check: {line}") for line in teardown.left]
    return report


def emulated_targets(hosts: emulated.EmulatedCluster) -> list[Target]:
    return [Target(h.name, h.address, SshHost(h.name, hosts.connect_info(h.name)), address=h.address,
                   emulated=True) for h in hosts.hosts]


def real_target(cluster: Cluster, name: str) -> Target:
    """A real host as `up` reaches it (nestbed brought there unless the cluster file names its python)."""
    spec = cluster.hosts[name]
    if spec.ssh is None:
        return Target(name, "-", None, error="has no ssh: destination in the cluster file (and is not emulated)")
    try:
        host = real.host_of(cluster, name)
    except NestbedError as error:
        return Target(name, spec.ssh, None, error=error.message if isinstance(error, TopologyError) else str(error))
    return Target(name, spec.ssh, host.transport(), address=spec.address)


@dataclass
class _Teardown:
    left: list[str]


@contextlib.contextmanager
def emulated_hosts(cluster: Cluster, say: Callable[[str], None]) -> Iterator[tuple[emulated.EmulatedCluster,
                                                                                    _Teardown]]:
    """The cluster's emulated hosts under a throwaway experiment name, down again whatever happens inside."""
    if os.geteuid() != 0:
        raise PreflightError(f"emulated hosts (emulate: {cluster.emulate}) are network namespaces: checking them "
                             f"needs root (e.g. sudo nestbed cluster check ...)")
    name = f"check-{os.getpid()}"
    if paths.experiment_dir(name).exists():
        raise ExperimentError(f"{paths.experiment_dir(name)} exists (a check of an earlier process {name[6:]} "
                              f"that did not finish?): run 'nestbed down {name}' first")
    teardown = _Teardown([])
    with _terminate_as_interrupt():
        say(f"bringing up {cluster.emulate} emulated hosts ({name})")
        hosts = emulated.up(name, cluster.emulate, underlay_mtu=cluster.underlay_mtu)
        try:
            yield hosts, teardown
        finally:
            say("taking the emulated hosts down")
            gone = emulated.down(name)
            teardown.left = list(gone.left) if gone is not None else []


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the check as ^C does, through the `finally` that takes the emulated hosts down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_targets(targets: list[Target], underlay_mtu: int | None = None,
                  say: Callable[[str], None] = lambda _: None) -> CheckReport:
    """Ask every target, probe every pair of those that answered, conclude. Closes the transports."""
    checks = {t.name: HostCheck(t.name, t.where, error=t.error, emulated=t.emulated) for t in targets}
    reachable = [t for t in targets if t.transport is not None and t.error is None]
    try:
        with ThreadPoolExecutor(max(1, min(PARALLEL, len(targets) * 2))) as pool:
            say(f"asking {len(reachable)} hosts")
            for target, (error, answer, clock) in zip(reachable, pool.map(_ask, reachable)):
                checks[target.name].error, checks[target.name].answer = error, answer
                checks[target.name].clock = clock
            answered = [t for t in reachable if checks[t.name].reached]
            addresses = {t.name: t.address or (checks[t.name].answer or {}).get("ssh_address") for t in answered}
            pairs = [(a, b) for a, b in itertools.permutations(answered, 2)]
            if pairs:
                say(f"probing the underlay's path MTU of {len(pairs) // 2} pairs")
            probes = list(pool.map(lambda pair: _probe(pair[0], pair[1], addresses[pair[1].name]), pairs))
    finally:
        with ThreadPoolExecutor(max(1, min(PARALLEL, len(reachable)))) as pool:
            list(pool.map(_close, reachable))
    return assess(__version__, list(checks.values()), probes, underlay_mtu=underlay_mtu)


def _ask(target: Target) -> tuple[str | None, dict[str, Any] | None, Any]:
    """(why not, the `check` answer, the clock estimate)."""
    transport = target.transport
    assert transport is not None
    try:
        transport.connect()
        samples = []
        answer: dict[str, Any] | None = None
        for features in [True] + [False] * CLOCK_SAMPLES:
            reply, sent, received = _timed(transport, CHECK_SECONDS, "check", features=features)
            samples.append(ClockSample(sent, received, float(reply["time"]), float(reply.get("busy", 0.0))))
            answer = reply if features else answer
        return None, answer, estimate_clock(samples)
    except ExperimentError as error:
        return _unlabelled(str(error), transport.label), None, None


def _probe(source: Target, target: Target, address: str | None) -> PathProbe:
    assert source.transport is not None
    if address is None:
        return PathProbe(source.name, target.name, None, why=f"no underlay address of {target.name} known")
    try:
        answer = _bounded(source.transport, PROBE_SECONDS + MARGIN, "probe_mtu", peer=address,
                          seconds=PROBE_SECONDS)
    except ExperimentError as error:
        return PathProbe(source.name, target.name, None, why=_unlabelled(str(error), source.transport.label))
    return PathProbe.from_answer(source.name, target.name, answer)


def _unlabelled(text: str, label: str) -> str:
    """An SshHost error without its "host NAME (ADDRESS)" opening: the finding names the host already."""
    return text[len(label):].lstrip(": ") if text.startswith(label) else text


def _bounded(transport: SshHost, limit: float, op: str, **args: Any) -> dict[str, Any]:
    return _timed(transport, limit, op, **args)[0]


def _timed(transport: SshHost, limit: float, op: str, **args: Any) -> tuple[dict[str, Any], float, float]:
    """A request with a time limit (an agent that hangs is a finding, not a hung check): its answer, when it was
    sent and when the answer arrived (time.time(), read in the thread the answer wakes, for the clock)."""
    def answered() -> tuple[dict[str, Any], float]:
        answer = call.wait()
        return answer, time.time()
    sent = time.time()
    call = transport.call(op, **args)
    with ThreadPoolExecutor(1) as waiter:
        future = waiter.submit(answered)
        try:
            answer, received = future.result(timeout=limit)
            return answer, sent, received
        except FutureTimeout:
            raise ExperimentError(f"{transport.label}: no answer to {op} in {limit:g} s") from None
        finally:
            if not future.done():
                call.lines.put({"id": call.id, "error": "given up"})     # frees the waiting thread


def _close(target: Target) -> None:
    if target.transport is not None:
        try:
            target.transport.close()
        except Exception:       # a host gone mid-check: its connection is dropped all the same
            pass
