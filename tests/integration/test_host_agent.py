"""The host agent: authenticated unix socket, exec/run_many/spawn/stop, mailboxes and nestbed-event, records,
subscribers, and an agent killed with -9 (reported at once; `down` still removes everything)."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from conftest import PREFIX, exec_in, nestbed, our_namespaces
from nestbed import paths
from nestbed.agent import supervision
from nestbed.agent.hostclient import HostAgentClient
from nestbed.agent.store import Store
from nestbed.errors import ExperimentError
from nestbed.realize.state import experiment

LAN50 = """
nodes:
  n: {count: 50}
  a: {}
lans:
  lan0: {members: [n, a]}
"""


@pytest.fixture(scope="module")
def lan50(tmp_path_factory):
    from conftest import Experiments
    exps = Experiments(tmp_path_factory.mktemp("agent"))
    name = exps.up(LAN50)
    yield name
    exps.down_all()


def _gone(pid: int) -> bool:
    """No such process, or a zombie its parent has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _raw(state, hello: dict | None, request: dict) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(supervision.socket_path(state)))
    reader = sock.makefile("rb")
    try:
        if hello is not None:
            sock.sendall(json.dumps(hello).encode() + b"\n")
        sock.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(reader.readline())
    finally:
        reader.close()
        sock.close()


def test_socket_is_root_only_and_credential_is_checked(lan50):
    state = experiment(lan50)
    path = supervision.socket_path(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.credential(state.directory).stat().st_mode) == 0o600
    refused = {"error": "refused: wrong or missing credential"}
    assert _raw(state, None, {"op": "ping"}) == refused                       # the request is no credential
    assert _raw(state, {"credential": "0" * 64}, {"op": "ping"}) == refused
    good = paths.credential(state.directory).read_text().strip()
    assert _raw(state, {"credential": good}, {"op": "ping"})["ok"] is True
    assert supervision.agent_status(state)["alive"] is True
    status = json.loads(nestbed("status", lan50, "--json").stdout)
    if "agent" in status:          # shown once the status view calls supervision.agent_status()
        assert status["agent"]["alive"] is True


def test_exec_and_run_many_over_50_nodes(lan50):
    client = HostAgentClient(lan50)
    rc, out, err = client.run("a", ["sh", "-c", "hostname; echo oops >&2; cat /var/emulab/boot/nickname; exit 3"])
    assert (rc, err) == (3, "oops\n")
    assert out.splitlines() == ["a", f"a.{lan50}.nestbed"]
    assert client.run("a", ["no-such-program"])[0] == 127
    assert client.run("a", ["sleep", "10"], timeout=0.3)[0] != 0
    nodes = [f"n-{k}" for k in range(50)]
    started = time.monotonic()
    results = client.run_many([(node, ["sh", "-c", "hostname; echo $NESTBED_NODE >&2"]) for node in nodes], timeout=30)
    seconds = time.monotonic() - started
    assert [r["node"] for r in results] == nodes
    assert all(r["rc"] == 0 and r["out"] == f"{r['node']}\n" and r["err"] == f"{r['node']}\n" for r in results), results
    assert seconds < 5
    # ping across the LAN from every node at once
    target = client.addresses("a")[0]
    pings = client.run_many([(node, ["ping", "-c1", "-W2", target]) for node in nodes[:10]], timeout=20)
    assert all(r["rc"] == 0 for r in pings), pings


def test_run_many_edge_cases(lan50):
    """One launcher batch: missing programs, unknown nodes, a timeout, long output, default signal handling."""
    client = HostAgentClient(lan50)
    big = 300_000                        # several reply datagrams
    started = time.monotonic()
    results = client.run_many([
        ("n-1", ["no-such-program"]),
        ("nobody", ["true"]),
        ("n-2", ["sleep", "30"]),
        ("n-3", ["sh", "-c", f"head -c {big} /dev/zero | tr '\\0' x"]),
        ("n-4", ["sh", "-c", "yes | head -1"]),            # yes ends by SIGPIPE, quietly, as in a terminal
        ("n-5", ["sh", "-c", "echo out; echo err >&2; exit 7"]),
        ("n-8", ["head", "-c", "200000", "/dev/urandom"]),  # binary: ~6 bytes a byte once JSON-escaped
    ], timeout=1.5)
    seconds = time.monotonic() - started
    missing, unknown, slow, long, piped, plain, binary = results
    assert binary["rc"] == 0 and len(binary["out"]) > 100_000 and binary["err"] == ""
    assert missing["rc"] == 127 and "no-such-program: command not found in node n-1" in missing["err"]
    assert unknown["rc"] == -1 and "no node 'nobody'" in unknown["err"]
    assert slow.get("timeout") is True and slow["rc"] != 0 and seconds < 5
    assert long["rc"] == 0 and long["out"] == "x" * big
    assert (piped["rc"], piped["out"], piped["err"]) == (0, "y\n", "")
    assert (plain["rc"], plain["out"], plain["err"]) == (7, "out\n", "err\n")
    # and the same pipe from `nestbed exec`
    result = exec_in(lan50, "a", "sh", "-c", "yes | head -1")
    assert (result.stdout, result.stderr) == ("y\n", "")
    # programs get their stdin, stdout and stderr, nothing else of the agent's or the launcher's
    for fds in (client.run("a", ["ls", "/proc/self/fd"])[1],
                client.run_many([("n-6", ["ls", "/proc/self/fd"])])[0]["out"]):
        assert sorted(fds.split()) == ["0", "1", "2", "3"], fds      # 3: ls's own view of the directory


def test_collect_files_as_each_node_sees_them(lan50, tmp_path):
    out = tmp_path / "files"
    result = nestbed("collect", lan50, "/var/emulab/boot/nickname", "/no/such/file", "--node", "a", "-n", "n-7",
                     "-o", str(out))
    assert result.returncode == 0, result.stderr
    for node in ("a", "n-7"):                     # each node's own identity file, not the host's
        assert (out / node / "var/emulab/boot/nickname").read_text().strip() == f"{node}.{lan50}.nestbed"
    assert "missing: /no/such/file" in result.stdout and "2 files from 2 of 2 nodes" in result.stdout
    assert not (out / "n-1").exists()
    bad = nestbed("collect", lan50, "relative.txt", "-o", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 1 and "must be absolute" in bad.stderr and "\n" not in bad.stderr.strip()
    assert not (tmp_path / "bad").exists()                 # nothing made for bad input


def test_spawn_and_stop(lan50):
    client = HostAgentClient(lan50)
    state = experiment(lan50)
    handle = client.spawn("n-3", ["sh", "-c", "echo started; exec sleep 300"], "sleeper")
    pid = int(handle.rsplit("/", 1)[1])
    log = state.log_dir / "n-3-sleeper.log"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "started" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.02)
    assert "started" in log.read_text()
    assert os.path.exists(f"/proc/{pid}")
    assert any(e.get("t") == "pid" and e.get("pid") == pid and e.get("start") for e in state.journal.entries())
    client.stop(handle)
    assert _gone(pid)
    client.stop(handle)          # safe to repeat
    handles = client.spawn_many([(f"n-{k}", ["sleep", "300"], "many") for k in range(20)])
    pids = [int(h.rsplit("/", 1)[1]) for h in handles]
    assert all(not _gone(pid) for pid in pids)
    client.stop_many(handles)
    assert all(_gone(pid) for pid in pids)


def test_nestbed_event_in_a_node_reaches_store_and_subscriber(lan50):
    client = HostAgentClient(lan50)
    received: list[tuple[float, dict]] = []
    subscribed = threading.Event()

    def listen() -> None:
        events = client.subscribe()
        subscribed.set()
        for event in events:
            received.append((time.monotonic(), event))
            if event["name"] == "ready":
                return
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert subscribed.wait(5)
    time.sleep(0.2)
    exec_in(lan50, "a", "nestbed-event", "ready", '{"x":1}')
    written = time.monotonic()        # nestbed-event has appended its line by now
    thread.join(5)
    assert received, "no event reached the subscriber"
    arrived, event = received[-1]
    assert (event["name"], event["source"], event["data"]) == ("ready", "a", {"x": 1})
    assert arrived - written < 0.2
    store = Store(experiment(lan50).directory / "control.sqlite")
    assert any(e["name"] == "ready" and e["source"] == "a" and e["data"] == {"x": 1} for e in store.events())
    # the FIFO, and a record through the mailbox
    result = exec_in(lan50, "n-1", "sh", "-c",
                     'echo fifo-event > $NESTBED_MAILBOX/events.fifo; '
                     'echo \'{"record": "probe", "data": {"ok": true}}\' >> $NESTBED_MAILBOX/events.jsonl')
    assert result.returncode == 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not (
            any(e["name"] == "fifo-event" for e in store.events()) and store.records("probe")):
        time.sleep(0.02)
    assert any(e["name"] == "fifo-event" and e["source"] == "n-1" for e in store.events())
    assert store.records("probe")[0]["node"] == "n-1"


def test_nestbed_event_outside_a_node_is_one_line():
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NESTBED_MAILBOX"}
    result = subprocess.run([sys.executable, "-m", "nestbed.agent.mailbox", "ready"], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "not inside a nestbed node" in result.stderr


def test_record_lands_with_agent_host_created(lan50):
    client = HostAgentClient(lan50)
    before = time.time()
    client.record("http_client", "a", {"bytes": 1000, "seconds": 0.01})
    client.event("phase", {"n": 2})
    store = Store(experiment(lan50).directory / "control.sqlite")
    record = store.records("http_client")[-1]
    assert (record["agent"], record["host"], record["node"], record["data"]) == \
        ("http_client", "local", "a", {"bytes": 1000, "seconds": 0.01})
    assert before - 1 <= record["created"] <= time.time() + 1
    assert store.events()[-1]["name"] == "phase"


def test_killed_agent_is_reported_and_down_cleans_everything(experiments):
    name = experiments.up("""
        nodes:
          a: {commands: ["sleep 1000"]}
          b: {}
        links:
          - {ends: [a, b]}
    """)
    state = experiment(name)
    client = HostAgentClient(name)
    handle = client.spawn("b", ["sleep", "1000"], "sl")
    spawned = int(handle.rsplit("/", 1)[1])
    pid = supervision.agent_status(state)["pid"]
    events = client.subscribe()
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(ExperimentError) as caught:
        next(events)
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert message == (f"the host agent of {name} died (pid {pid}); see {state.log_dir / 'agent.log'}; "
                       f"run 'nestbed down {name}'")
    started = time.monotonic()
    with pytest.raises(ExperimentError, match="died"):
        HostAgentClient(name).run("a", ["true"])
    assert time.monotonic() - started < 2
    assert supervision.agent_status(state)["alive"] is False
    cli = nestbed("exec", name, "a", "--", "true")       # exec from the CLI does not need the agent
    assert cli.returncode == 0

    nestbed("down", name)
    assert not state.directory.exists()
    assert not our_namespaces(name)
    assert _gone(spawned)
    leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if name in line]
    assert leftovers == []
    import subprocess
    for program in ("nestbed.agent.host", "nestbed.agent.launcher"):
        assert subprocess.run(["pgrep", "-f", f"{program} {name}"], capture_output=True).returncode == 1
    assert not Path(f"/var/nestbed/mailbox/.nestbed-{PREFIX}-{name}").exists()
    assert not Path(f"/var/nestbed/.nestbed-{PREFIX}-{name}").exists()
