"""`nestbed counters` output without an experiment: JSON keys, rates and the table."""
from rich.console import Console

from nestbed.agent.store import COUNTER_FIELDS, CounterRow
from nestbed.cli import cmd_counters


def _snapshot(created, scale):
    rows = [CounterRow("a", "eth0", 1000 * scale, 2000 * scale, 10 * scale, 20 * scale, 100 * scale, 0, scale, 0),
            CounterRow("b", "eth1", 5, 6, 1, 1)]
    return cmd_counters.Snapshot(created, rows, "sampled", "counting")


def test_json_has_every_counter_key_and_time():
    data = cmd_counters.snapshot_json("lab", _snapshot(100.0, 1))
    assert data["experiment"] == "lab" and data["time"] == 100.0 and data["attack_dscp"] == 8
    first = data["interfaces"][0]
    assert set(first) == {"node", "iface", "time", *COUNTER_FIELDS}
    assert first["rx_bytes"] == 1000 and first["attack_rx_packets"] == 1 and first["time"] == 100.0


def test_rates_are_per_second_differences():
    rates = cmd_counters._rates(_snapshot(100.0, 1), _snapshot(102.0, 3))
    assert rates[("a", "eth0")]["rx_bytes"] == 1000.0
    assert rates[("a", "eth0")]["attack_rx_bytes"] == 100.0
    assert rates[("b", "eth1")]["tx_bytes"] == 0.0
    assert cmd_counters._rates(None, _snapshot(1.0, 1)) == {}


def test_table_shows_busiest_first_within_height():
    console = Console(width=160, record=True)
    previous, current = _snapshot(100.0, 1), _snapshot(101.0, 2)
    console.print(cmd_counters.render_table("lab", current, cmd_counters._rates(previous, current), height=10))
    text = console.export_text()
    assert "showing the 1 busiest" in text and "attack counters (DSCP 8): counting" in text
    assert "8.0 kbit/s" in text            # a.eth0 received 1000 B/s
