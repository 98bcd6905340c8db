"""web/rates.py: per-link kbit/s and attack % from successive cumulative counter samples."""
from __future__ import annotations

import json

from nestbed.agent.store import CounterRow
from nestbed.control.traffic import Segment
from nestbed.web.rates import RateTracker

LINK = Segment("link0", "link", (("a", "eth1"), ("r", "eth1")))
LAN = Segment("lan0", "lan", (("r", "eth2"), ("b", "eth1"), ("c", "eth1")))


def row(node: str, iface: str, tx: int, attack: int = 0) -> CounterRow:
    return CounterRow(node, iface, rx_bytes=0, tx_bytes=tx, rx_packets=0, tx_packets=0, attack_tx_bytes=attack)


def test_the_first_sample_has_no_rate_yet_and_the_second_has():
    tracker = RateTracker([LINK])
    first = tracker.update(100.0, [row("a", "eth1", 1000), row("r", "eth1", 0)])
    assert (first.seq, first.rate, first.attack, first.down) == (1, [None], [None], [])
    second = tracker.update(101.0, [row("a", "eth1", 1000 + 125_000), row("r", "eth1", 12_500)])
    assert (second.seq, second.t, second.rate, second.attack) == (2, 101.0, [1100], [0])   # 1 Mbit/s + 100 kbit/s


def test_a_lan_sums_what_its_members_send_into_it_in_link_order():
    tracker = RateTracker([LINK, LAN])
    tracker.update(0.0, [row("r", "eth2", 0), row("b", "eth1", 0), row("c", "eth1", 0), row("a", "eth1", 0),
                         row("r", "eth1", 0)])
    frame = tracker.update(2.0, [row("r", "eth2", 250_000), row("b", "eth1", 500_000), row("c", "eth1", 0),
                                 row("a", "eth1", 0), row("r", "eth1", 0), row("r", "ctl0", 10**9)])
    assert frame.rate == [0, 3000]           # (250 kB + 500 kB) · 8 / 2 s = 3,000 kbit/s; the link idle


def test_attack_is_a_share_of_the_total_and_never_more():
    tracker = RateTracker([LINK])
    tracker.update(0.0, [row("a", "eth1", 0, 0), row("r", "eth1", 0, 0)])
    frame = tracker.update(1.0, [row("a", "eth1", 30_000, 30_000), row("r", "eth1", 10_000, 0)])
    assert frame.rate == [320] and frame.attack == [75]
    over = tracker.update(2.0, [row("a", "eth1", 40_000, 90_000), row("r", "eth1", 10_000, 0)])   # marked > sent
    assert over.rate == [80] and over.attack == [100]


def test_a_reset_counter_counts_from_zero_not_negative():
    tracker = RateTracker([LINK])
    tracker.update(0.0, [row("a", "eth1", 10**9), row("r", "eth1", 0)])
    frame = tracker.update(1.0, [row("a", "eth1", 125), row("r", "eth1", 0)])        # the interface re-created
    assert frame.rate == [1]                                                            # 125 B: 1 kbit/s


def test_a_missing_sample_makes_the_next_interval_longer():
    tracker = RateTracker([LINK])
    tracker.update(0.0, [row("a", "eth1", 0), row("r", "eth1", 0)])
    gap = tracker.update(1.0, [row("r", "eth1", 0)])                  # a's agent missed a second
    assert gap.rate == [0]
    assert tracker.update(1.0, []).rate == [None]                     # an empty sample: nothing known
    frame = tracker.update(2.0, [row("a", "eth1", 250_000), row("r", "eth1", 0)])
    assert frame.rate == [1000]                                       # 250 kB over a's 2 s, not a 2 Mbit/s spike


def test_down_links_are_indexes_and_the_json_is_compact():
    tracker = RateTracker([LINK, LAN])
    frame = tracker.update(5.5, [], down=["lan0", "nosuch"])
    assert frame.down == [1]
    text = frame.json()
    assert " " not in text
    assert json.loads(text) == {"seq": 1, "t": 5.5, "rate": [None, None], "attack": [None, None], "down": [1],
                                "plan": "", "linkstate": ""}       # the feed sets the versions
