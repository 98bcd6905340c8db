"""linktest and shell of an experiment on 3 emulated hosts, as on one host: linktest checks a link crossing hosts
and a LAN spanning all three (reachability both ways, the route end to end, bandwidth and loss) and FAILs the
segment put down with `nestbed link`; `nestbed shell` on a node of a non-first host is an interactive bash over SSH
(driven through a pty here) whose exit status comes back; bad input is one line; `down` leaves nothing."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import NESTBED, nestbed, state_dir

pytestmark = pytest.mark.needs("root", "sshd")

NAME = "xtools"
TOPOLOGY = f"""
name: {NAME}
nodes:
  a: {{host: emu0}}
  b: {{host: emu1}}
  c: {{host: emu2}}
  r: {{router: true, host: emu1}}
  d: {{host: emu2}}
lans:
  lan0: {{members: [a, b, c, r], bandwidth: 100Mbit}}
links:
  - {{name: l1, ends: [r, d], bandwidth: 20Mbit, loss: 1%}}
"""
CLUSTER = "emulate: 3\nunderlay_mtu: 1500\n"


def namespaces_of(name: str) -> list[str]:
    try:
        return [n for n in os.listdir("/run/netns") if f"-{name}." in n]
    except FileNotFoundError:
        return []


def processes_of(directory: Path) -> list[str]:
    """Processes whose command line names the experiment's state directory (sshd, agents, launchers, shells)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                line = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in line:
            found.append(f"{pid}: {line[:120]}")
    return found


@pytest.fixture(scope="module")
def on_three_hosts(tmp_path_factory: pytest.TempPathFactory):
    where = tmp_path_factory.mktemp("xtools")
    (where / "topo.yaml").write_text(TOPOLOGY)
    (where / "lab.yaml").write_text(CLUSTER)
    try:
        up = nestbed("up", str(where / "topo.yaml"), "--cluster", str(where / "lab.yaml"), timeout=180).stdout
        assert "is up on 3 hosts" in " ".join(up.split())
        yield NAME
    finally:
        nestbed("down", NAME, check=False, timeout=180)
    assert namespaces_of(NAME) == [], "namespaces left"
    assert not state_dir(NAME).exists(), f"left {state_dir(NAME)}"
    assert processes_of(state_dir(NAME)) == [], "processes left"


def checks_of(report: dict) -> dict[tuple[str, str], dict]:
    return {(c["kind"], c["segment"]): c for c in report["checks"]}


def test_linktest_checks_segments_across_hosts_and_fails_the_one_set_down(on_three_hosts):
    name = on_three_hosts
    result = nestbed("linktest", name, "--json", check=False, timeout=180)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
    checks = checks_of(report)
    assert checks[("reach", "lan0")]["detail"] == "12/12 pairs answer across emu0, emu1, emu2"
    assert checks[("reach", "l1")]["detail"] == "2/2 pairs answer across emu1, emu2"
    route = checks[("route", "")]                # a (emu0) ↔ d (emu2) through r (emu1): 2 hops, both ways
    assert route["ok"] and "2 hops" in route["detail"]
    assert sorted(c["between"] for c in report["checks"] if c["kind"] == "route") == ["a → d", "d → a"]
    assert checks[("bandwidth", "l1")]["ok"] and checks[("bandwidth", "lan0")]["ok"]   # both measured across
    assert checks[("loss", "l1")]["ok"]

    nestbed("link", name, "l1", "down")
    try:
        failed = nestbed("linktest", name, "--no-bandwidth", check=False, timeout=180)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert re.search(r"│ reach\s+│ l1 .*FAIL", failed.stdout), failed.stdout
        assert re.search(r"│ reach\s+│ lan0 .*│ ok", failed.stdout), failed.stdout
        assert re.search(r"│ route .*FAIL", failed.stdout) and "checks FAILED" in failed.stdout
    finally:
        nestbed("link", name, "l1", "up")


def _read_until(fd: int, wanted: str, seconds: float, seen: bytearray) -> bool:
    """Read the pty into `seen` until `wanted` shows (True) or the time is up or it ends (False)."""
    deadline = time.monotonic() + seconds
    while wanted.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        try:
            data = os.read(fd, 4096)
        except OSError:              # EIO: every holder of the pty's other end is gone
            return False
        if not data:
            return False
        seen.extend(data)
    return True


def shell_session(argv: list[str], prompt: str, typed: bytes, env: dict | None = None,
                  while_open: Any = None) -> tuple[int, str]:
    """`nestbed shell` on a pty: wait for its prompt, type, read to the end; (exit status, what it showed)."""
    main, other = pty.openpty()
    child = subprocess.Popen(argv, stdin=other, stdout=other, stderr=other, start_new_session=True, close_fds=True,
                             env=env)
    os.close(other)
    seen = bytearray()
    try:
        assert _read_until(main, prompt, 30, seen), seen.decode(errors="replace")
        if while_open is not None:
            while_open()
        os.write(main, typed)
        _read_until(main, "\0never", 30, seen)   # to the end
        rc = child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(main)
    return rc, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace").replace("\r", ""))  # modes


def test_shell_on_a_node_of_another_host_is_interactive_and_its_exit_status_comes_back(on_three_hosts):
    from nestbed.realize.state import experiment
    name = on_three_hosts
    node = experiment(name).load_plan().node("c")
    assert node.host == "emu2"                  # the last host, not the controller's first
    address = node.interfaces[0].address.split("/")[0]

    def nothing_here() -> None:                 # the client's connection is in the underlay namespace
        ours = subprocess.run(["ss", "-Htn"], capture_output=True, text=True, check=True).stdout
        assert "10.250." not in ours
    rc, text = shell_session(NESTBED + ["shell", name, "c"], f"[{name}:c]", b"hostname; ip -o addr; exit 3\n",
                             while_open=nothing_here)
    assert rc == 3, text
    assert re.search(r"^c$", text, re.M), text
    assert re.search(rf"\beth0\s+inet {re.escape(address)}/", text), text


def test_on_real_hosts_linktest_and_shell_work_as_well(tmp_path_factory: pytest.TempPathFactory):
    """Hosts named by `ssh:` (nestbed brought there, the user's key and known_hosts): test_real_hosts.py's lab."""
    from test_real_hosts import Lab

    lab = Lab(tmp_path_factory.mktemp("real"))
    name = "xtreal"
    try:
        topology = lab.home.parent / "t.yaml"
        topology.write_text(f"name: {name}\nnodes:\n  a: {{host: r0}}\n  b: {{host: r1}}\n  c: {{host: r2}}\n"
                            f"lans:\n  lan0: {{members: [a, b, c]}}\nlinks:\n  - {{name: l1, ends: [b, c]}}\n")
        lab.nestbed("up", str(topology), "--cluster", str(lab.cluster))
        try:
            result = lab.nestbed("linktest", name, "--json", "--no-bandwidth", check=False)
            report = json.loads(result.stdout)
            assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
            assert checks_of(report)[("reach", "lan0")]["detail"] == "6/6 pairs answer across r0, r1, r2"
            assert checks_of(report)[("reach", "l1")]["detail"] == "2/2 pairs answer across r1, r2"
            as_user = ["ip", "netns", "exec", lab.hosts.underlay_netns, *NESTBED, "shell", name, "b"]
            rc, text = shell_session(as_user, f"[{name}:b]", b"hostname; exit 4\n",
                                     env={**os.environ, "HOME": str(lab.home)})
            assert rc == 4 and re.search(r"^b$", text, re.M), text
        finally:
            lab.nestbed("down", name, check=False)
        assert namespaces_of(name) == [] and not state_dir(name).exists()
    finally:
        lab.close()
    assert namespaces_of(lab.name) == []


def test_bad_input_is_one_line(on_three_hosts):
    name = on_three_hosts
    for args in (["shell", name, "nosuch"], ["shell", "absent-xt", "c"], ["linktest", "absent-xt"]):
        result = nestbed(*args, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no node 'nosuch'" in nestbed("shell", name, "nosuch", check=False).stderr
