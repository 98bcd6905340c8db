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
