"""The host agent's side of launcher batches (no root): requests split into datagram-sized parts, results
put together from [index, field, value] entries."""
from __future__ import annotations

import json

from nestbed.agent.launcherclient import BatchResults, _parts


def test_parts_keep_order_and_stay_near_the_budget():
    items = [{"node": f"n-{k}", "argv": ["true"], "env": {"X": "y" * 50}} for k in range(500)]
    parts = _parts(items, 4096)
    assert [item for part in parts for item in part] == items
    assert len(parts) > 1
    assert all(len(json.dumps(part, separators=(",", ":"))) < 4096 + 200 for part in parts)
    assert _parts([], 4096) == [[]]                    # an empty batch is still one (empty) message
    huge = [{"node": "a", "argv": ["x" * 10_000]}]
    assert _parts(huge, 4096) == [huge]                # one item larger than the budget goes alone


def test_results_join_pieces_and_fail_what_never_ended():
    batch = BatchResults(3)
    batch.add([[0, "out", "hel"], [0, "out", "lo"], [0, "rc", 0], [1, "err", "no\n"], [1, "rc", 127]])
    batch.add([[2, "timeout", True]])
    batch.fail("the launcher went away")
    assert batch.results[0] == {"rc": 0, "out": "hello", "err": ""}
    assert batch.results[1] == {"rc": 127, "out": "", "err": "no\n"}
    assert batch.results[2]["rc"] == 126 and batch.results[2]["timeout"] is True
    assert batch.results[2]["err"] == "nestbed: the launcher went away\n" and batch.done.is_set()


def test_a_table_of_10000_nodes_crosses_in_datagrams_the_socket_takes():
    import socket
    import threading

    from nestbed.agent.launcher import receive_table
    from nestbed.agent.launcherclient import LAUNCHER_MESSAGE_BYTES, table_messages
    rows = [[f"h{k // 50}-{k % 50}", {"netns": f"nb-bench-10k.h{k // 50}-{k % 50}",
                                      "identity": f"/var/lib/nestbed/bench-10k/nodes/h{k // 50}-{k % 50}",
                                      "mailbox": f"/var/lib/nestbed/bench-10k/mailbox/h{k // 50}-{k % 50}"}]
            for k in range(10_000)]
    messages = table_messages("/var/lib/nestbed/bench-10k/hosts", rows)
    encoded = [json.dumps(m, separators=(",", ":")).encode() for m in messages]
    assert len(messages) > 10 and all(len(data) < LAUNCHER_MESSAGE_BYTES + 1000 for data in encoded)
    whole = json.dumps({"hosts": "", "nodes": dict(rows)}).encode()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 212992)     # Linux's default (wmem_default)
    with ours, theirs:
        try:                                     # what the agent sent before: one datagram, too long for it
            ours.send(whole)
            raise AssertionError("a 1.5 MB datagram was accepted; the test no longer shows the limit")
        except OSError as error:
            assert error.errno == 90             # EMSGSIZE: "Message too long"
        got: list[dict | None] = []
        reader = threading.Thread(target=lambda: got.append(receive_table(theirs)))
        reader.start()
        for data in encoded:
            ours.send(data)
        reader.join(10)
    assert got == [{"hosts": "/var/lib/nestbed/bench-10k/hosts", "nodes": dict(rows)}]
    assert list(got[0]["nodes"]) == [name for name, _ in rows]          # in order


def test_a_small_table_is_one_message_and_eof_before_the_last_part_is_none():
    import socket

    from nestbed.agent.launcher import receive_table
    from nestbed.agent.launcherclient import table_messages
    assert table_messages("/h", [["a", {"netns": "x"}]]) == [{"hosts": "/h", "nodes": {"a": {"netns": "x"}}}]
    assert table_messages("/h", []) == [{"hosts": "/h", "nodes": {}}]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        ours.send(json.dumps({"nodes": {"a": {}}, "more": True}).encode())
        ours.close()
        assert receive_table(theirs) is None
