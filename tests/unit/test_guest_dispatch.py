"""The guest agent's protocol (no root, no VM): the boot agent's credential check and its hand-over to the full
agent (agent/guestboot.py), and the full agent's dispatch by table (agent/guest.py), over real socket pairs.
A qemu node's programs run in the VM itself (no namespace to enter), here on this host."""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from nestbed import guestproto
from nestbed.agent import guest as guest_module
from nestbed.agent.guestboot import BootAgent
from nestbed.channel import Connection, decode
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan

TOPOLOGY = """\
name: lab
nodes:
  a: {}
  vm1: {kind: qemu, memory: 256M}
lans:
  lan0: {members: [a, vm1]}
"""
CREDENTIAL = "c0ffee" * 8


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    plan = compile_plan(load_topology_text(TOPOLOGY, "t.yaml"))
    (tmp_path / "credential").write_text(CREDENTIAL + "\n")
    return {"vm": json.loads(plan.to_json())["vms"][0], "credential_file": str(tmp_path / "credential"),
            "state_dir": str(tmp_path), "control": {"port": 0}}


@pytest.fixture
def guest(config: dict[str, Any]) -> guest_module.Guest:
    return guest_module.Guest(config)       # not configured: dispatch needs none of that


def dispatch(guest: guest_module.Guest, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every line the guest answers `request` with, until it is done with the connection."""
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    with theirs:
        guest.dispatch(Connection(theirs), request)
    conn = Connection(ours)
    lines = []
    while (message := conn.receive()) is not None:
        lines.append(message)
    conn.close()
    return lines


def test_an_unknown_op_is_answered_with_its_name(guest):
    assert dispatch(guest, {"op": "frobnicate"}) == [{"error": "unknown request 'frobnicate'"}]
    assert dispatch(guest, {}) == [{"error": "unknown request None"}]
    assert dispatch(guest, {"op": ["exec"]}) == [{"error": "unknown request ['exec']"}]


def test_ops_on_a_node_this_vm_does_not_hold_are_refused(guest):
    for op in ("exec", "shell", "link"):
        assert dispatch(guest, {"op": op, "node": "a", "argv": ["true"]}) == [{"error": "no node 'a' in VM vm1"}]


def test_exec_streams_output_and_exit_code(guest):
    lines = dispatch(guest, {"op": "exec", "node": "vm1", "env": {"GREETING": "hi"},
                             "argv": ["/bin/sh", "-c", 'echo "$GREETING $NESTBED_NODE"; echo oops >&2; exit 4']})
    out = b"".join(decode(m["o"]) for m in lines if "o" in m)
    err = b"".join(decode(m["e"]) for m in lines if "e" in m)
    assert (out, err, lines[-1]) == (b"hi vm1\n", b"oops\n", {"rc": 4})


def test_exec_of_a_missing_program_is_rc_127_with_a_message(guest):
    lines = dispatch(guest, {"op": "exec", "node": "vm1", "argv": ["/no/such/program"]})
    assert lines[-1] == {"rc": 127}
    assert b"/no/such/program: command not found in vm1" in decode(lines[0]["e"])


def test_counters_come_from_the_sampler(guest):
    class Row:
        def __init__(self, iface: str) -> None:
            self.node, self.iface, self.rx_bytes = "vm1", iface, 7

    class FakeSampler:
        def sample(self) -> list[Row]:
            return [Row("eth0")]
    guest.sampler = FakeSampler()
    assert dispatch(guest, {"op": "counters"}) == [{"rows": [{"node": "vm1", "iface": "eth0", "rx_bytes": 7}]}]


def test_a_failing_link_change_is_one_error_line(guest, monkeypatch):
    from nestbed.realize import linkmember
    calls = []

    def apply_in_node(node: Any, interfaces: list[str], action: str, shaping: Any) -> None:
        calls.append((node.name, interfaces, action, shaping))
        if action == "down":
            raise OSError("no such device")
    monkeypatch.setattr(linkmember, "apply_in_node", apply_in_node)
    request = {"op": "link", "node": "vm1", "interfaces": ["eth0"], "action": "down"}
    assert dispatch(guest, request) == [{"error": "link down on vm1: no such device"}]
    assert dispatch(guest, {**request, "action": "up", "shaping": {"delay": 5}}) == [{"ok": True}]
    assert calls == [("vm1", ["eth0"], "down", None), ("vm1", ["eth0"], "up", {"delay": 5})]


def test_mailbox_streams_lines_after_since(guest):
    guest.mail += [{"seq": 1, "node": "vm1", "kind": "event", "name": "old", "data": None},
                   {"seq": 2, "node": "vm1", "kind": "event", "name": "new", "data": None}]
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    threading.Thread(target=guest.dispatch, args=(Connection(theirs), {"op": "mailbox", "since": 1}),
                     daemon=True).start()
    conn = Connection(ours)
    assert conn.receive() == guest.mail[1]
    with guest.mail_ready:
        guest.mail.append({"seq": 3, "node": "vm1", "kind": "record", "name": "r", "data": {}})
        guest.mail_ready.notify_all()
    assert conn.receive() == guest.mail[2]
    conn.close()


# -- the boot agent in front of it: credential, ping, hand-over ------------------------------------------------

SIGN = object()          # in boot_exchange's lines: the answer to this connection's challenge with CREDENTIAL


def boot_exchange(agent: BootAgent, lines: list[Any], challenges: list[str] | None = None) -> list[dict[str, Any]]:
    """What the boot agent answers `lines` with (its challenge read first, and appended to `challenges`)."""
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    serving = threading.Thread(target=agent._connection, args=(theirs,), daemon=True)
    serving.start()
    conn = Connection(ours)
    hello = conn.receive()
    assert hello is not None and len(hello["challenge"]) == 2 * guestproto.CHALLENGE_BYTES
    if challenges is not None:
        challenges.append(hello["challenge"])
    for line in lines:
        try:
            conn.send({"answer": guestproto.answer(CREDENTIAL, hello["challenge"])} if line is SIGN else line)
        except (BrokenPipeError, ConnectionResetError):     # it refused and closed before reading the rest
            break
    answers = []
    try:
        while (message := conn.receive()) is not None:
            answers.append(message)
    except ConnectionResetError:       # it closed with lines of ours unread
        pass
    serving.join(5)
    conn.close()
    return answers


def test_the_boot_agent_refuses_a_wrong_or_missing_answer(config):
    agent = BootAgent(config)
    refused = [{"error": "refused: wrong or missing credential"}]
    assert boot_exchange(agent, [{"op": "ping"}]) == refused
    assert boot_exchange(agent, [{"credential": CREDENTIAL}, {"op": "ping"}]) == refused     # the old clear text
    assert boot_exchange(agent, [{"answer": guestproto.answer(CREDENTIAL[:-1], "00")}]) == refused


def test_the_boot_agent_refuses_an_answer_replayed_from_an_earlier_connection(config):
    agent = BootAgent(config)
    challenges: list[str] = []
    (pong,) = boot_exchange(agent, [SIGN, {"op": "ping"}], challenges)
    assert pong["ok"] is True
    old = {"answer": guestproto.answer(CREDENTIAL, challenges[0])}
    refused = [{"error": "refused: wrong or missing credential"}]
    assert boot_exchange(agent, [old, {"op": "ping"}], challenges) == refused
    assert challenges[0] != challenges[1]


def test_the_boot_agent_answers_ping_and_hands_other_ops_to_the_full_agent(config, guest):
    agent = BootAgent(config)
    (pong,) = boot_exchange(agent, [SIGN, {"op": "ping"}])
    assert pong["ok"] is True and pong["vm"] == "vm1" and pong["ready"] is False
    agent._full = guest            # as made on first use, without watching this host's mailboxes
    assert boot_exchange(agent, [SIGN, {"op": "nope"}]) == [{"error": "unknown request 'nope'"}]
    answers = boot_exchange(agent, [SIGN, {"op": "exec", "node": "vm1", "argv": ["echo", "x"]}])
    assert decode(answers[0]["o"]) == b"x\n" and answers[-1] == {"rc": 0}
