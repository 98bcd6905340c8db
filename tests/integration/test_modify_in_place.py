"""Changing a running experiment in place (`nestbed up` of an edited file): a node and a link added, a LAN member
removed and a bandwidth changed, while a long-running program in an untouched node keeps its pid; the same file
again changes nothing (not one journal line); down leaves nothing."""
from __future__ import annotations

import os

from conftest import exec_in, nestbed, our_namespaces, state_dir
from nestbed import procs
from nestbed.plan.compile import netns_name

BEFORE = """\
nodes:
  a: {commands: ["sleep 3600"]}
  b: {}
  c: {}
  r: {router: true}
links:
  - {name: l1, ends: [r, a], bandwidth: 10Mbit}
lans:
  lan0: {members: [a, b, c]}
"""
# x (new, at the top) on a link of its own to b; c leaves lan0; l1 at 20Mbit
AFTER = """\
nodes:
  x: {}
  a: {commands: ["sleep 3600"]}
  b: {}
  c: {}
  r: {router: true}
links:
  - {name: l2, ends: [x, b]}
  - {name: l1, ends: [r, a], bandwidth: 20Mbit}
lans:
  lan0: {members: [a, b]}
"""


def _sleep_pid(name: str) -> int:
    """The start command's process in node a (its namespace's only `sleep`)."""
    inode = os.stat(f"/run/netns/{netns_name(name, 'a')}").st_ino
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode and open(f"/proc/{pid}/comm").read().strip() == "sleep":
                return int(pid)
        except OSError:
            continue
    raise AssertionError("no sleep in node a")


def _rate(name: str, node: str, dev: str) -> str:
    out = exec_in(name, node, "tc", "class", "show", "dev", dev).stdout
    return out.split(" rate ")[1].split()[0]


def _address(name: str, node: str, dev: str) -> str:
    out = exec_in(name, node, "ip", "-4", "-o", "addr", "show", "dev", dev).stdout
    return out.split()[3].split("/")[0]


def test_modify_in_place(experiments) -> None:
    name, path = experiments.write(BEFORE)
    nestbed("up", str(path))
    pid = _sleep_pid(name)
    a_lan0 = _address(name, "a", "eth1")          # links come first in the file: a's eth0 is l1
    assert exec_in(name, "c", "ping", "-c1", "-W2", a_lan0, check=False).returncode == 0
    assert _rate(name, "a", "eth0") == "10Mbit"
    a_links = exec_in(name, "a", "ip", "-o", "link").stdout

    path.write_text(f"name: {name}\n" + AFTER)
    dry = nestbed("up", str(path), "--dry-run").stdout
    assert "node x added" in dry and "nothing changed" in dry
    journal = state_dir(name) / "journal.jsonl"
    changed = nestbed("up", str(path)).stdout
    for line in ("node x added", "link l2 added (x, b)", "lan0: member c removed", "l1: bandwidth 10Mbit → 20Mbit"):
        assert line in changed, changed

    assert _sleep_pid(name) == pid                                     # the untouched node kept its program
    assert exec_in(name, "a", "ip", "-o", "link").stdout == a_links      # and its links, ifindexes, MACs
    assert _rate(name, "a", "eth0") == "20Mbit" and _rate(name, "r", "eth0") == "20Mbit"
    assert exec_in(name, "x", "ping", "-c1", "-W2", _address(name, "b", "eth1")).returncode == 0
    assert exec_in(name, "x", "ping", "-c1", "-W2", a_lan0).returncode == 0      # routed through b
    assert "eth0" not in exec_in(name, "c", "ip", "-o", "link").stdout          # c's lan0 interface is gone
    assert exec_in(name, "c", "ping", "-c1", "-W1", a_lan0, check=False).returncode != 0
    status = nestbed("status", name).stdout
    assert "x" in status

    lines = journal.read_text()
    again = nestbed("up", str(path)).stdout
    assert "nothing to change" in again and journal.read_text() == lines
    assert _sleep_pid(name) == pid

    nestbed("down", name)
    assert not our_namespaces(name) and not state_dir(name).exists()
    assert procs.state_of(pid) in ("", "Z"), "the program outlived down"      # gone, or dead and unreaped


def test_bad_edit_is_one_line_and_changes_nothing(experiments) -> None:
    name, path = experiments.write(BEFORE)
    nestbed("up", str(path))
    journal = (state_dir(name) / "journal.jsonl").read_text()
    path.write_text(f"name: {name}\n" + BEFORE.replace("[a, b, c]", "[a, b, nobody]"))
    result = nestbed("up", str(path), check=False)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (state_dir(name) / "journal.jsonl").read_text() == journal
