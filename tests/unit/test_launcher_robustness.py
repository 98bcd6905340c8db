"""The launcher's protocol under bad input: the agent's reader survives a malformed message, a batch the launcher
never answers ends at its timeout, the launcher itself drops a malformed request; run_many/exec always have an
integer exit code."""
from __future__ import annotations

import json
import socket
import threading
import types
from typing import Any

import pytest

from nestbed.agent import launcherclient
from nestbed.agent.launcher import Launcher
from nestbed.agent.launcherclient import LauncherClient
from nestbed.agent.programs import Programs
from nestbed.agent.runners import Exit


def _client() -> tuple[LauncherClient, socket.socket]:
    """A LauncherClient on one end of a socketpair (no launcher process): the test plays the launcher."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client = LauncherClient.__new__(LauncherClient)
    client.sock = ours
    client._lock = threading.Lock()
    client._next = 0
    client._by_id, client._by_pid, client._early_exits, client._batches = {}, {}, {}, {}
    client._changes = {}
    client._reader = threading.Thread(target=client._read, daemon=True)
    client._reader.start()
    return client, theirs


def _batch_in_thread(client: LauncherClient, timeout: float | None) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(client.run_batch(
        [{"node": "a", "argv": ["echo", "hi"], "env": {}}], timeout)), daemon=True)
    thread.start()
    return thread, results


def test_the_reader_survives_garbage_and_the_batch_still_gets_its_results(capsys):
    client, launcher = _client()
    thread, results = _batch_in_thread(client, 5.0)
    request = json.loads(launcher.recv(1 << 20))
    key = request["id"]
    for garbage in (b"not json {", b"[1, 2]", b'"error"', b"7", b'{"id": 999}', b'{"exit": 5}', b'{"id": 1}',
                    json.dumps({"id": key, "r": [["x"], [0, "rc", "nine"], [5, "rc", 0]]}).encode()):
        launcher.send(garbage)
    launcher.send(json.dumps({"id": key, "r": [[0, "out", "hi\n"], [0, "rc", 0]]}).encode())
    launcher.send(json.dumps({"id": key, "done": True}).encode())
    thread.join(10.0)
    assert results == [[{"rc": 0, "out": "hi\n", "err": ""}]]
    assert client._reader.is_alive()
    launcher.close()
    client._reader.join(10.0)
    assert "launcher: ignored a malformed message" in capsys.readouterr().err


def test_a_batch_the_launcher_never_answers_fails_at_its_timeout_in_one_line(monkeypatch):
    monkeypatch.setattr(launcherclient, "BATCH_GRACE_SECONDS", 0.1)
    client, launcher = _client()
    thread, results = _batch_in_thread(client, 0.2)
    thread.join(30.0)
    assert not thread.is_alive()
    ((result,),) = results
    assert result["rc"] == 126
    assert result["err"] == "nestbed: the launcher did not answer within 0.1 s of the batch's timeout (0.2 s)\n"
    assert client._batches == {}
    launcher.close()
    client._reader.join(10.0)


def test_a_last_message_with_a_bad_entry_still_ends_the_batch_with_an_exit_code():
    client, launcher = _client()
    thread, results = _batch_in_thread(client, None)
    key = json.loads(launcher.recv(1 << 20))["id"]
    launcher.send(json.dumps({"id": key, "r": [[0, "rc", None]], "done": True}).encode())
    thread.join(10.0)
    ((result,),) = results
    assert result["rc"] == 126 and "the launcher sent no exit code" in result["err"]
    launcher.close()
    client._reader.join(10.0)


def test_the_launcher_drops_a_malformed_request_and_ends_a_malformed_batch(capsys):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    launcher = Launcher.__new__(Launcher)
    launcher.sock, launcher.pending, launcher.batches = theirs, {}, {}
    ours.send(b"not json")
    assert launcher._serve_one()
    ours.send(json.dumps({"id": 3, "batch": 5}).encode())
    assert launcher._serve_one()
    assert json.loads(ours.recv(1 << 20)) == {"id": 3, "done": True}
    ours.send(json.dumps({"id": 4, "more": 5}).encode())
    assert launcher._serve_one()
    ours.close()
    assert not launcher._serve_one()           # the agent's end closed: the launcher ends
    theirs.close()
    err = capsys.readouterr().err
    assert "launcher: ignored a message that is not JSON" in err and "ignored a malformed request" in err


# -- an integer exit code, always ----------------------------------------------------------------------------
class _Runner:
    def __init__(self, answers: Any):
        self.answers = answers

    def run_many(self, items: list[dict[str, Any]], timeout: float | None) -> list[dict[str, Any]]:
        if isinstance(self.answers, Exception):
            raise self.answers
        return self.answers

    def stream(self, *args: Any) -> Exit:
        return Exit(self.answers)      # type: ignore[arg-type]


def _programs(runner: _Runner) -> Programs:
    programs = Programs.__new__(Programs)
    programs.state = types.SimpleNamespace(name="lab")     # type: ignore[assignment]
    programs.nodes = {"a": types.SimpleNamespace(name="a", vm=None)}      # type: ignore[dict-item]
    programs.runners = types.SimpleNamespace(of=lambda node: runner)      # type: ignore[assignment]
    return programs


@pytest.mark.parametrize("answers", [[], [{"rc": None, "out": "", "err": ""}], OSError("socket closed")])
def test_run_many_never_answers_rc_null(answers):
    (result,) = _programs(_Runner(answers)).run_many([{"node": "a", "argv": ["true"]}], 5.0)
    assert isinstance(result["rc"], int) and result["rc"] != 0 and "nestbed:" in result["err"]


def test_exec_never_answers_rc_null():
    sent: list[dict[str, Any]] = []
    conn = types.SimpleNamespace(send=sent.append)
    _programs(_Runner(None)).exec_stream(conn, {"node": "a", "argv": ["true"]})    # type: ignore[arg-type]
    assert sent[-1] == {"rc": -1}
    assert b"nestbed: no exit code from the runner of a" in __import__("base64").b64decode(sent[0]["e"])
