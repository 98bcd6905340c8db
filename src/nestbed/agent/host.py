"""The host agent: one daemon per host per experiment, started by `nestbed up`, stopped first by teardown
(agent/supervision.py starts and stops it; agent/hostclient.py is its client).

It lives in the host's namespaces and serves a root-only unix socket `<state>/agent.sock` (0600) with the channel
protocol (channel.py): the first line carries the experiment's credential (`<state>/credential`); then any number
of requests on the same connection, each {"op": …}, dispatched by table (agent/server.py):

    ping                                   → {"ok", "experiment", "host", "pid", "nodes"}
    exec, run_many, spawn, stop, spawn_many, stop_many     programs in nodes (agent/programs.py)
    record, record_many, event, subscribe, counters        the experiment's store (agent/events.py)
    link {segment, action, shaping?}       → {"ok"} (nestbed.realize.links.change, where that exists)
    reload                                 → {"ok", "pid", "added", "removed", "nodes"}: plan.json read again
                                             (a modify in place changed the node set): the launcher, the
                                             counters and the mailbox watcher take the new nodes and drop the
                                             removed ones; programs spawned in nodes that stay keep their
                                             handles. This process is not restarted.

Process nodes are entered by the launcher (launcher.py, agent/launcherclient.py); nodes inside VMs are forwarded
to their VM's guest agent. Mailboxes (mailbox.py) of process nodes are watched here; those of nodes in VMs are
streamed from each guest agent's "mailbox" op (agent/guestrelay.py). Counters are sampled every
NESTBED_COUNTER_INTERVAL seconds (default 1) (agent/sampling.py).

    python -m nestbed.agent.host EXPERIMENT     (stdin: "journaled" once `up` has journaled its pid, then "go"
                                                 once the experiment is realized; EOF instead: it exits)
"""
from __future__ import annotations

import os
import resource
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from nestbed import paths
from nestbed.agent import sampling, server, supervision
from nestbed.agent.events import Events
from nestbed.agent.guestrelay import GuestRelay
from nestbed.agent.launcherclient import Launcher, LauncherClient, SpawnedLauncher
from nestbed.agent.programs import Programs
from nestbed.channel import Connection
from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import HostPlan, NodePlan
from nestbed.realize.state import ExperimentState


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def load_plan(state: ExperimentState) -> HostPlan:
    plan = state.load_plan()
    if plan is None:
        raise ExperimentError(f"experiment {state.name}: no plan")
    return plan


def local_nodes(plan: HostPlan) -> list[NodePlan]:
    """The nodes this host's agent serves itself (those in VMs have guest agents)."""
    return [n for n in plan.nodes if n.vm is None]


class Agent:
    """The daemon's parts: programs, the store's events, the guest relay, and the server dispatching to them."""

    def __init__(self, state: ExperimentState,
                 launcher_for: Callable[[ExperimentState, list[NodePlan]], Launcher] = LauncherClient,
                 plan: HostPlan | None = None):
        from nestbed.agent.store import Store
        self.state = state
        plan = plan or load_plan(state)
        self.plan: HostPlan = plan
        self.host = plan.host or "local"
        self.local = local_nodes(plan)
        raise_open_files(len(self.local))           # before the launcher starts: it inherits the limit
        credential = paths.credential(state.directory).read_text().strip()
        self.events = Events(Store(paths.store(state.directory)), self.host)
        self.launcher_for = launcher_for
        self.launcher: Launcher | None = launcher_for(state, self.local) if self.local else None
        self.programs = Programs(state, plan, self.launcher)
        self.stopping = threading.Event()
        self.guests = GuestRelay(state, plan, self.events.deliver, log, self.stopping)
        self.counters = sampling.CounterSampling(self.local, self.events.store, self.guests.counters, log,
                                                 self.stopping)
        self.watcher: Any = None
        self._node_set = threading.Lock()      # reload against the background's start, and one reload at a time
        self._started = False                  # start_background ran
        ops = server.table(self.programs.handlers(), self.events.handlers(),
                           {"ping": self._ping, "link": self._link, "reload": self._reload})
        self.server = server.Server(credential, ops, log, takes_over=("subscribe",))
        self.listener: socketserver.ThreadingUnixStreamServer | None = None

    def _ping(self, conn: Connection, request: server.Request) -> dict[str, Any]:
        return {"ok": True, "experiment": self.state.name, "host": self.host, "pid": os.getpid(),
                "nodes": len(self.plan.nodes)}

    def _link(self, conn: Connection, request: server.Request) -> dict[str, Any]:
        from nestbed.realize import links
        links.change(self.state, self.plan, str(request.get("segment")), str(request.get("action")),
                     **dict(request.get("shaping") or {}))
        return {"ok": True}

    def _reload(self, conn: Connection, request: server.Request) -> dict[str, Any]:
        return self.reload()

    def reload(self) -> dict[str, Any]:
        """Serve the node set plan.json now holds (lifecycle.reconcile wrote it, after realizing the change)."""
        with self._node_set:
            new = load_plan(self.state)
            old_local = {n.name: n for n in self.local}
            new_local = {n.name: n for n in local_nodes(new)}
            removed = [name for name, n in old_local.items() if new_local.get(name, n).netns != n.netns
                       or name not in new_local]
            added = [n for name, n in new_local.items() if name not in old_local or name in removed]
            if added or removed:
                raise_open_files(len(new_local))
                if self.launcher is None and added:
                    self.launcher = self.launcher_for(self.state, added)
                elif self.launcher is not None:
                    self.launcher.change_nodes(added, removed)
            self.programs.reload(new, removed, self.launcher)
            self.plan, self.host, self.local = new, new.host or "local", list(new_local.values())
            sampled = self.counters.set_nodes(self.local)
            if self.watcher is not None:
                self.watcher.change(self._mailboxes(added), removed)
            elif self._started:
                self._watch_mailboxes(self._mailboxes(self.local))
        log(f"reloaded: {len(added)} nodes added, {len(removed)} removed ({len(self.plan.nodes)} nodes)"
            + ("" if sampled else "; the counters thread has not taken the change yet"))
        return {"ok": True, "pid": os.getpid(), "added": [n.name for n in added], "removed": removed,
                "nodes": len(self.plan.nodes)}

    def _mailboxes(self, nodes: list[NodePlan]) -> dict[str, str]:
        return {n.name: str(paths.mailbox_dir(self.state.directory, n.name)) for n in nodes
                if paths.mailbox_dir(self.state.directory, n.name).is_dir()}

    def _watch_mailboxes(self, boxes: dict[str, str]) -> None:
        from nestbed.agent import mailbox
        if not boxes:
            return
        self.watcher = mailbox.Watcher(boxes, self.events.deliver, lambda node, msg: log(f"mailbox {node}: {msg}"))
        self.watcher.start()
        log(f"watching {len(boxes)} mailboxes ({self.watcher.mode})")

    def serve(self) -> None:
        """Serve the agent's socket until shutdown(), the background work (start_background) starting beside it:
        `up` waits for our first answer, not for a thousand mailboxes to be watched (the watcher reads what was
        written before it watched) nor for the counters' sockets to open."""
        path = supervision.socket_path(self.state)
        self.listener = server.listen(path, self.server)
        log(f"serving {path} ({len(self.plan.nodes)} nodes, {len(self.local)} on this host)")
        threading.Thread(target=self.start_background, name="background", daemon=True).start()
        if not self.stopping.is_set():
            self.listener.serve_forever(poll_interval=3600)     # shutdown() wakes it: no idle polling

    def shutdown(self) -> None:
        """Stop serving (from a signal handler too: the work is done in a thread)."""
        self.stopping.set()
        self.counters.wake()
        if self.listener is not None:
            threading.Thread(target=self._stop_listener, args=(self.listener,), daemon=True).start()

    def _stop_listener(self, listener: socketserver.ThreadingUnixStreamServer) -> None:
        # serve_forever looks at its stop flag only when its (hourly) select returns: connect until it has
        stopped = threading.Thread(target=listener.shutdown, daemon=True)
        stopped.start()
        while stopped.is_alive():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as waker:
                    waker.connect(str(supervision.socket_path(self.state)))
            except OSError:
                pass
            stopped.join(0.05)

    def start_background(self) -> None:
        """Mailbox watching (here and in VMs) and counters sampling, until `stopping` is set."""
        with self._node_set:
            self._watch_mailboxes(self._mailboxes(self.local))
            self._started = True
        self.guests.start()
        threading.Thread(target=self.counters.run, name="counters", daemon=True).start()


FDS_PER_NODE = 4          # here a FIFO and a netlink socket per node, in the launcher three namespace fds
FDS_SPARE = 4096


def raise_open_files(nodes: int) -> None:
    """Open files for `nodes` process nodes, here and in the launcher (it inherits the limit): the hard limit,
    raised when 10,000 nodes need more than it (often 20,000), which root may do up to fs.nr_open."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FDS_PER_NODE * nodes + FDS_SPARE
    if hard != resource.RLIM_INFINITY and wanted > hard:
        try:
            with open("/proc/sys/fs/nr_open") as nr_open:
                wanted = min(wanted, int(nr_open.read()))
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (OSError, ValueError):
            pass                 # not root: what we may
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m nestbed.agent.host EXPERIMENT", file=sys.stderr)
        return 2
    if sys.stdin.readline().strip() != "journaled":    # `up` writes it once our pid is in the journal
        return 1
    from nestbed.realize.state import experiment
    state = experiment(sys.argv[1])
    # Before "go" (`up` is still realizing): what does not need the experiment made. The plan was written before
    # we were started; the launcher's process starts (journaled) and waits for its node table.
    plan = load_plan(state)
    local = local_nodes(plan)
    raise_open_files(len(local))                  # before the launcher starts: it inherits the limit
    spawned = SpawnedLauncher(state) if local else None
    if sys.stdin.readline().strip() != "go":      # `up` writes it once the experiment is realized
        return 1
    agent = Agent(state, lambda state, nodes: LauncherClient(state, nodes, spawned), plan)

    def stop(*_: Any) -> None:
        agent.shutdown()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.serve()
    log("stopped")
    supervision.socket_path(state).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
