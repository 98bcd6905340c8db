"""Mailbox lines (what programs in nodes write for the host agent), the watcher and nestbed-event."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from nestbed.agent import mailbox
from nestbed.agent.mailbox import MailboxError, parse_line, split_lines
from nestbed.realize.mailboxes import EVENTS, FIFO


def test_event_with_data():
    assert parse_line('{"event": "serverReady", "data": {"port": 80}}\n') == \
        ("event", "serverReady", {"port": 80}, None)


def test_event_without_data_and_bare_name():
    assert parse_line('{"event": "go"}') == ("event", "go", None, None)
    assert parse_line("  ready \n") == ("event", "ready", None, None)
    assert parse_line(b"phase-2.done") == ("event", "phase-2.done", None, None)


def test_record():
    assert parse_line('{"record": "http_client", "data": {"bytes": 1000, "seconds": 0.5}}') == \
        ("record", "http_client", {"bytes": 1000, "seconds": 0.5}, None)
    assert parse_line('{"record": "client_agent", "kind": "http_client", "data": {"bytes": 1}}') == \
        ("record", "client_agent", {"bytes": 1}, "http_client")


@pytest.mark.parametrize("line, words", [
    ("", "empty"),
    ("{not json", "bad JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"data": {}}', "exactly one"),
    ('{"event": "a", "record": "b", "data": {}}', "exactly one"),
    ('{"event": 5}', "non-empty string"),
    ('{"event": "  "}', "non-empty string"),
    ('{"record": "x"}', "needs \"data\""),
    ("two words", "not a JSON object nor an event name"),
    ('{"record": "x", "kind": "a b", "data": {}}', "kind"),
])
def test_bad_lines_say_why(line, words):
    with pytest.raises(MailboxError, match=words):
        parse_line(line)


def test_split_lines_keeps_the_unfinished_rest():
    assert split_lines(b'{"event":"a"}\n{"ev') == ([b'{"event":"a"}'], b'{"ev')
    assert split_lines(b"a\n\nb\n") == ([b"a", b"b"], b"")
    assert split_lines(b"partial") == ([], b"partial")


def _box(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    (path / EVENTS).write_text("")
    os.mkfifo(path / FIFO)
    return path


def test_watcher_reads_existing_appended_and_fifo_lines(tmp_path):
    a, b = _box(tmp_path, "a"), _box(tmp_path, "b")
    (a / EVENTS).write_text('{"event": "early"}\n')
    got, complaints, seen = [], [], threading.Event()

    def deliver(node, kind, name, data, record_kind=None):
        got.append((node, kind, name, data))
        if len(got) >= 4:
            seen.set()
    watcher = mailbox.Watcher({"a": str(a), "b": str(b)}, deliver, lambda node, msg: complaints.append((node, msg)))
    watcher.start()
    try:
        with open(b / EVENTS, "a") as handle:
            handle.write('{"record": "iperf", "data": {"bps": 5}}\nnot valid json here\n{"event": "half')
            handle.flush()
            time.sleep(0.05)
            handle.write('done", "data": [1]}\n')
        fd = os.open(a / FIFO, os.O_WRONLY)
        os.write(fd, b"fromfifo\n")
        os.close(fd)
        assert seen.wait(3), got
    finally:
        watcher.stop()
    assert sorted(got, key=str) == sorted([("a", "event", "early", None), ("b", "record", "iperf", {"bps": 5}),
                                           ("b", "event", "halfdone", [1]), ("a", "event", "fromfifo", None)], key=str)
    assert complaints and complaints[0][0] == "b"


def test_nestbed_event_appends_a_line(tmp_path, monkeypatch, capsys):
    box = _box(tmp_path, "n")
    monkeypatch.setenv("NESTBED_MAILBOX", str(box))
    assert mailbox.event_main(["ready", '{"x": 1}']) == 0
    assert mailbox.event_main(["go"]) == 0
    lines = [json.loads(line) for line in (box / EVENTS).read_text().splitlines()]
    assert lines == [{"event": "ready", "data": {"x": 1}}, {"event": "go", "data": None}]
    assert mailbox.event_main(["bad", "{nope"]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_nestbed_event_outside_a_node(monkeypatch, capsys):
    monkeypatch.delenv("NESTBED_MAILBOX", raising=False)
    assert mailbox.event_main(["ready"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not inside a nestbed node" in err


def test_nestbed_event_that_cannot_write_the_mailbox_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    box = tmp_path / "box"
    (box / EVENTS).mkdir(parents=True)          # not writable as a file, whoever runs the test (root too)
    monkeypatch.setenv("NESTBED_MAILBOX", str(box))
    assert mailbox.event_main(["ready"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot write the mailbox {box}" in err and "as root" in err
