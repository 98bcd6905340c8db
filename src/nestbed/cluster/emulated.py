"""Emulated hosts (`emulate: N`): N hosts on this machine, each a network namespace with a real sshd, reached over
SSH exactly as a real host is. They live and die with one experiment.

    cluster = emulated.up("lab", 3, underlay_mtu=1500)     # emu0 … emu2, every sshd listening
    hosts = cluster.transports()                          # SshHost per host (cluster/ssh.py)
    emulated.down("lab")                                  # from the journal alone; idempotent, also after a crash

Per experiment: an underlay namespace `<prefix>-<exp>.ul` with bridge `ul0` (cluster/underlay.py); per host a
namespace `<prefix>-<exp>.emuI` whose `ul0` has 10.250.0.(I+1)/16, and an sshd there (cluster/sshd.py). Files:
`<state>/<exp>/cluster/` (journal, keys, known_hosts, each host's sshd files, hosts.json) and each host's own state
root `<state>/<exp>/hosts/emuI`, where its agent runs with NESTBED_PREFIX `<prefix>I` (host_prefix). Every
namespace, directory, file and process is in the journal before it exists. Nothing is made in the machine's own
namespace: links are created from it directly into their namespaces.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestbed import paths, procs
from nestbed.cluster import sshd, underlay
from nestbed.errors import ExperimentError, PreflightError
from nestbed.model.cluster import DEFAULT_UNDERLAY_MTU, emulated_names
from nestbed.plan.compile import netns_name
from nestbed.realize import namespaces, netlink
from nestbed.realize.journal import Journal
from nestbed.realize.state import make_root

if TYPE_CHECKING:
    from nestbed.cluster.ssh import ConnectInfo, SshHost

JOURNAL = "journal"
HOSTS_FILE = "hosts.json"
CLIENT_KEY = "client_ed25519"
KNOWN_HOSTS = "known_hosts"
READY_SECONDS = 10.0            # every sshd listening
CLEANUP_SECONDS = 120.0         # a host's own cleanup (its experiments, from its journals)
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class EmulatedHost:
    name: str                   # emuI
    index: int
    netns: str                  # <prefix>-<exp>.emuI
    address: str                # on the underlay: 10.250.0.(I+1)
    prefix: str                 # its agent's NESTBED_PREFIX
    state_dir: str              # its agent's NESTBED_STATE_DIR


@dataclass
class EmulatedCluster:
    experiment: str
    directory: Path             # <state>/<exp>/cluster
    underlay_netns: str
    underlay_mtu: int
    python: str                 # the interpreter the hosts' agents run (this machine's, with this nestbed)
    hosts: list[EmulatedHost] = field(default_factory=list)

    @property
    def client_key(self) -> Path:
        return self.directory / CLIENT_KEY

    @property
    def known_hosts(self) -> Path:
        return self.directory / KNOWN_HOSTS

    def host(self, name: str) -> EmulatedHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise ExperimentError(f"experiment {self.experiment!r} has no emulated host {name!r} "
                              f"(it has {', '.join(h.name for h in self.hosts)})")

    def connect_info(self, name: str) -> ConnectInfo:
        from nestbed.cluster.ssh import ConnectInfo
        host = self.host(name)
        return ConnectInfo(address=host.address, netns=self.underlay_netns, client_keys=(str(self.client_key),),
                           known_hosts=str(self.known_hosts), python=self.python, state_dir=host.state_dir,
                           prefix=host.prefix)

    def transports(self) -> list[SshHost]:
        from nestbed.cluster.ssh import SshHost
        return [SshHost(host.name, self.connect_info(host.name)) for host in self.hosts]


@dataclass
class EmulatedTeardown:
    experiment: str
    namespaces: int = 0
    processes: int = 0
    files: int = 0
    host_experiments: int = 0   # experiments the hosts' own cleanup removed (left by a crash or an earlier down)
    seconds: float = 0.0
    left: list[str] = field(default_factory=list)


def host_prefix(prefix: str, index: int) -> str:
    """Host I's object prefix: this installation's and I in base 36 (nb0 … nb9, nba … nbz), within the 3
    characters object names allow (paths.object_prefix): 36 hosts under a 2-letter prefix, 1,296 under one."""
    digits = ""
    n = index
    while True:
        n, k = divmod(n, 36)
        digits = _BASE36[k] + digits
        if n == 0:
            break
    if len(prefix) + len(digits) > 3:
        most = 36 ** (3 - len(prefix)) if len(prefix) < 3 else 0
        raise PreflightError(f"emulated host emu{index} needs an object prefix longer than 3 characters: under "
                             f"NESTBED_PREFIX={prefix} at most {most} emulated hosts fit; use a 1-letter "
                             f"NESTBED_PREFIX for up to 1296")
    return prefix + digits


def cluster_dir(experiment: str) -> Path:
    return paths.experiment_dir(experiment) / "cluster"


def hosts_root(experiment: str) -> Path:
    return paths.experiment_dir(experiment) / "hosts"


# -- up -----------------------------------------------------------------------------------------------------------
def planned_hosts(experiment: str, count: int) -> list[EmulatedHost]:
    """The experiment's emulated hosts as `up` will make them (names, addresses, prefixes), making nothing."""
    if not 1 <= count <= underlay.MAX_HOSTS:
        raise PreflightError(f"emulate {count}: want 1 to {underlay.MAX_HOSTS} emulated hosts")
    prefix = paths.object_prefix()
    return [EmulatedHost(name, i, netns_name(experiment, name), underlay.host_address(i), host_prefix(prefix, i),
                         str(hosts_root(experiment) / name)) for i, name in enumerate(emulated_names(count))]


def up(experiment: str, count: int, underlay_mtu: int = DEFAULT_UNDERLAY_MTU, python: str = sys.executable,
       ready_seconds: float = READY_SECONDS) -> EmulatedCluster:
    """Bring up `count` emulated hosts for the experiment, every sshd listening when it returns. On any failure
    everything made so far is removed (from the journal) and the error raised."""
    hosts = planned_hosts(experiment, count)
    sshd.check_installed()
    cluster = EmulatedCluster(experiment, cluster_dir(experiment), netns_name(experiment, "ul"), underlay_mtu,
                              python, hosts)
    make_root()
    top = paths.experiment_dir(experiment)
    made_top = not top.exists()
    top.mkdir(mode=0o700, exist_ok=True)
    try:
        cluster.directory.mkdir(mode=0o700)
    except FileExistsError:
        raise ExperimentError(f"experiment {experiment!r} has emulated hosts already (or a crash left them); "
                              f"run 'nestbed down {experiment}' or 'nestbed cleanup' first") from None
    lock = _lock(cluster.directory, blocking=True)
    assert lock is not None
    try:
        Journal(cluster.directory / JOURNAL).record([top_entry(top, made_top),
                                                     {"t": "dir", "path": str(cluster.directory)}])
        try:
            _create(cluster, ready_seconds)
        except BaseException:
            _teardown(experiment, cluster.directory)
            raise
        return cluster
    finally:
        os.close(lock)


def top_entry(top: Path, made: bool) -> dict[str, Any]:
    """The experiment's directory in the hosts' journal: ours when `up` made it; else the controller's (its state
    made it first), removed with the hosts only when it is empty — nothing of the controller left in it, as when
    a crash left the controller's files removed and the hosts' not."""
    return {"t": "dir", "path": str(top)} if made else {"t": "dir", "path": str(top), "if_empty": True}


def _create(cluster: EmulatedCluster, ready_seconds: float) -> None:
    journal = Journal(cluster.directory / JOURNAL)
    host_dirs = [cluster.directory / host.name for host in cluster.hosts]
    host_keys = [d / "host_ed25519" for d in host_dirs]
    key_files = [k for key in [cluster.client_key, *host_keys] for k in (key, key.with_name(key.name + ".pub"))]
    sshd_files = [d / name for d in host_dirs for name in ("sshd_config", "sshd.pid", "sshd.log")]
    roots = hosts_root(cluster.experiment)
    journal.record(
        [{"t": "netns", "name": name} for name in [cluster.underlay_netns, *(h.netns for h in cluster.hosts)]]
        + [{"t": "dir", "path": str(d)} for d in host_dirs]
        + [{"t": "file", "path": str(f)} for f in [*key_files, *sshd_files, cluster.known_hosts,
                                                    cluster.directory / HOSTS_FILE]]
        + [{"t": "dir", "path": str(roots)}] + [{"t": "dir", "path": h.state_dir} for h in cluster.hosts]
        + [{"t": "hoststate", "host": h.name, "dir": h.state_dir, "prefix": h.prefix, "netns": h.netns,
            "python": cluster.python} for h in cluster.hosts])
    for directory in host_dirs:
        directory.mkdir(mode=0o700)
    for root in [roots, *(Path(h.state_dir) for h in cluster.hosts)]:
        root.mkdir(mode=0o711, exist_ok=True)       # as realize.state.make_root makes a state root
    errors: list[BaseException] = []
    keygen = threading.Thread(target=_keys, args=([cluster.client_key, *host_keys], errors))
    keygen.start()                  # ssh-keygen runs while the kernel makes the namespaces and links
    try:
        _underlay(cluster)
    finally:
        keygen.join()
    if errors:
        raise errors[0]
    cluster.known_hosts.write_text("".join(sshd.known_hosts_line(h.address, k.with_name(k.name + ".pub"))
                                           for h, k in zip(cluster.hosts, host_keys)))
    for host, directory, key in zip(cluster.hosts, host_dirs, host_keys):
        (directory / "sshd_config").write_text(sshd.config(host.address, key, cluster.client_key.with_name(
            CLIENT_KEY + ".pub"), directory / "sshd.pid"))
    sshd.ensure_privsep_dir()
    children = []
    for host, directory in zip(cluster.hosts, host_dirs):
        child = sshd.start(host.netns, directory / "sshd_config", directory / "sshd.log")
        children.append(child)
        journal.record([{"t": "pid", "pid": child.pid, "start": procs.start_time(child.pid), "role": "sshd",
                         "host": host.name}])
    _wait_listening(cluster, children, host_dirs, ready_seconds)
    (cluster.directory / HOSTS_FILE).write_text(json.dumps(
        {"experiment": cluster.experiment, "underlay_netns": cluster.underlay_netns,
         "underlay_mtu": cluster.underlay_mtu, "python": cluster.python,
         "hosts": [asdict(h) for h in cluster.hosts]}, indent=1))


def _keys(paths_: list[Path], errors: list[BaseException]) -> None:
    try:
        sshd.generate_keys(paths_)
    except BaseException as error:       # re-raised by the creating thread
        errors.append(error)


def _underlay(cluster: EmulatedCluster) -> None:
    names = [cluster.underlay_netns, *(h.netns for h in cluster.hosts)]
    namespaces.create(names)
    fds = [os.open(namespaces.netns_path(name), os.O_RDONLY) for name in names]
    try:
        sock = netlink.open_socket()
        try:
            netlink.send(sock, underlay.links(len(cluster.hosts), cluster.underlay_mtu, fds[0], fds[1:]),
                         "the emulated hosts' underlay")
        finally:
            sock.close()
    finally:
        for fd in fds:
            os.close(fd)
    for name, batch in [(cluster.underlay_netns, underlay.bridge_setup()),
                        *((h.netns, underlay.host_setup(h.index)) for h in cluster.hosts)]:
        sock = netlink.open_socket(name)
        try:
            netlink.send(sock, batch, name)
        finally:
            sock.close()


def _wait_listening(cluster: EmulatedCluster, children: list[subprocess.Popen[bytes]], host_dirs: list[Path],
                    seconds: float) -> None:
    waiting = list(range(len(children)))
    deadline = time.monotonic() + seconds
    while waiting:
        for k in list(waiting):
            if children[k].poll() is not None:
                host = cluster.hosts[k]
                log = host_dirs[k] / "sshd.log"
                raise PreflightError(f"sshd of emulated host {host.name} exited at start ({children[k].returncode}):"
                                     f" {sshd.first_line(log)}")      # (its log goes with the rollback)
            if underlay.is_listening(children[k].pid, sshd.PORT):
                waiting.remove(k)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(cluster.hosts[k].name for k in waiting)
            raise PreflightError(f"sshd of emulated hosts {names} not listening after {seconds:g} s")
        if waiting:
            time.sleep(0.005)


# -- what is there ------------------------------------------------------------------------------------------------
def load(experiment: str) -> EmulatedCluster | None:
    """The experiment's emulated hosts as `up` made them (None when it has none, or their `up` did not finish)."""
    directory = cluster_dir(experiment)
    try:
        data = json.loads((directory / HOSTS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return EmulatedCluster(experiment, directory, data["underlay_netns"], data["underlay_mtu"], data["python"],
                           [EmulatedHost(**h) for h in data["hosts"]])


def with_emulated_hosts() -> list[str]:
    """Experiments of this state root that have (or a crash left) emulated hosts."""
    root = paths.state_root()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / "cluster" / JOURNAL).exists())


# -- down ---------------------------------------------------------------------------------------------------------
def down(experiment: str) -> EmulatedTeardown | None:
    """Remove the experiment's emulated hosts from their journal (None when it has none). What their agents left
    (an experiment not removed over SSH first, a crash) is removed by each host's own cleanup on the way."""
    directory = cluster_dir(experiment)
    if not (directory / JOURNAL).exists():
        return None
    lock = _lock(directory, blocking=False)
    if lock is None:
        raise ExperimentError(f"the emulated hosts of {experiment!r} are busy (being made or removed); wait for it")
    try:
        return _teardown(experiment, directory)
    finally:
        os.close(lock)


def cleanup(everything: bool = False) -> list[EmulatedTeardown]:
    """Remove the emulated hosts that a crash left (those whose `up` never finished), or with `everything` those
    of every experiment; busy ones (an `up` or `down` at work) are skipped."""
    reports = []
    for experiment in with_emulated_hosts():
        if not everything and load(experiment) is not None:
            continue
        try:
            report = down(experiment)
        except ExperimentError:
            continue
        if report is not None:
            reports.append(report)
    return reports


def _lock(directory: Path, blocking: bool) -> int | None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _teardown(experiment: str, directory: Path) -> EmulatedTeardown:
    """Processes, then what the hosts' agents left, then namespaces, files and directories. The journal and its
    directory stay when anything is left, so a later `cleanup` finishes the job."""
    started = time.monotonic()
    report = EmulatedTeardown(experiment)
    journal = Journal(directory / JOURNAL)
    entries = journal.entries()
    netns = [e["name"] for e in entries if e["t"] == "netns"]
    report.processes = _kill(netns, entries, report)
    report.host_experiments = _clean_hosts([e for e in entries if e["t"] == "hoststate"], report)
    report.namespaces = sum(1 for name in reversed(netns) if namespaces.remove(name))
    for entry in reversed(entries):
        path = Path(entry.get("path", ""))
        if entry["t"] == "file":
            try:
                path.unlink()
                report.files += 1
            except FileNotFoundError:
                pass
        elif entry["t"] == "dir" and path not in (directory, directory.parent):
            _rmdir(path, report)
    if not report.left:          # the journal's own directory, and the experiment's when `up` made it, last
        journal.path.unlink(missing_ok=True)
        _rmdir(directory, report)
        top = next((e for e in entries if e["t"] == "dir" and Path(e["path"]) == directory.parent), None)
        if top is not None and top.get("if_empty"):
            _rmdir_if_empty(directory.parent)
        elif top is not None:
            _rmdir(directory.parent, report)
    report.seconds = time.monotonic() - started
    return report


def _kill(netns: list[str], entries: list[dict[str, Any]], report: EmulatedTeardown) -> int:
    """Every process in the hosts' namespaces (sshd, sessions, remote and host agents), and journaled ones."""
    ids = {nsid for nsid in map(namespaces.namespace_id, netns) if nsid is not None}
    pids = set(namespaces.processes_in(ids)) if ids else set()
    pids |= {e["pid"] for e in entries if e["t"] == "pid" and procs.is_same(e["pid"], e.get("start"))}
    pids.discard(os.getpid())
    if not pids:
        return 0
    starts = {pid: procs.start_time(pid) for pid in pids}
    procs.kill_all(sorted(pids))
    report.left += [f"process {pid}: still there after SIGKILL" for pid in procs.wait_gone(starts, procs.GONE_SECONDS)]
    return len(pids)


def _clean_hosts(hoststates: list[dict[str, Any]], report: EmulatedTeardown) -> int:
    """Each host with experiments left in its state root runs its own cleanup (`nestbed.agent.remote --cleanup`,
    with its state root and prefix), inside its namespace while that exists, all hosts at once."""
    work = [e for e in hoststates if _has_experiments(Path(e["dir"]))]
    children = []
    for entry in work:
        env = {**os.environ, "NESTBED_STATE_DIR": entry["dir"], "NESTBED_PREFIX": entry["prefix"]}
        argv = [entry.get("python") or sys.executable, "-m", "nestbed.agent.remote", "--cleanup"]
        kwargs: dict[str, Any] = {"env": env, "stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE,
                                  "stderr": subprocess.PIPE, "cwd": "/"}
        if namespaces.exists(entry["netns"]):
            with namespaces.entered(entry["netns"]):
                children.append(subprocess.Popen(argv, **kwargs))
        else:       # its namespace is gone: what is left has names and marks of its own (journals say which)
            children.append(subprocess.Popen(argv, **kwargs))
    removed = 0
    for entry, child in zip(work, children):
        try:
            out, err = child.communicate(timeout=CLEANUP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        try:
            answer = json.loads(out.decode().strip().splitlines()[-1])
            removed += len(answer["reports"])
            report.left += [f"{entry['host']}: {line}" for line in answer.get("left", [])]
        except (IndexError, ValueError, KeyError):
            lines = err.decode(errors="replace").strip().splitlines() or [f"exit code {child.returncode}"]
            report.left.append(f"{entry['host']}: its cleanup failed: {lines[-1]}")
    return removed


def _has_experiments(root: Path) -> bool:
    try:
        return any(d.is_dir() for d in root.iterdir())
    except FileNotFoundError:
        return False


def _rmdir_if_empty(path: Path) -> None:
    """A directory the controller shares with the hosts: it goes when nothing is left in it, else it stays (the
    controller's files are the controller's business)."""
    try:
        path.rmdir()
    except OSError:
        pass


def _rmdir(path: Path, report: EmulatedTeardown) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        report.left.append(f"{path}: holds files nestbed did not make")
