"""Quantities a topology carries: what users may write, what it means, and what is refused."""
from __future__ import annotations

import pytest

from nestbed.model import units


@pytest.mark.parametrize("text", ["10Mbit", "10Mbps", "10M", "10mbit", "10 Mbit", "10mbps", "10Mb/s", "10000kbit",
                                  "0.01Gbit", "1e7", 10_000_000, 10_000_000.0])
def test_bandwidth_spellings_of_ten_megabit_are_equal(text):
    assert units.parse_bandwidth(text) == 10_000_000


@pytest.mark.parametrize("text, bps", [("1kbit", 1000), ("1.5Gbit", 1_500_000_000), ("100Mbit", 10**8),
                                       ("400Gbit", 400 * 10**9), ("2T", None)])
def test_bandwidth_prefixes_are_decimal(text, bps):
    if bps is None:
        with pytest.raises(ValueError, match="above the 400Gbit"):
            units.parse_bandwidth(text)
    else:
        assert units.parse_bandwidth(text) == bps


@pytest.mark.parametrize("text", ["10MB", "10MBps", "10MB/s", "1GB", "100kB"])
def test_bandwidth_in_bytes_is_refused_with_a_hint(text):
    with pytest.raises(ValueError, match="in bytes; nestbed takes bits"):
        units.parse_bandwidth(text)


@pytest.mark.parametrize("value, message", [("fast", "is not a rate"), ("10 parsecs", "is not a rate"),
                                            ("-10Mbit", "is not a rate"), (0, "above zero"), ("0M", "above zero"),
                                            (10, "below 1kbit"), ("999", "below 1kbit"), (True, "is not a rate"),
                                            (float("nan"), "above zero"), (float("inf"), "above the 400Gbit")])
def test_bad_bandwidths(value, message):
    with pytest.raises(ValueError, match=message):
        units.parse_bandwidth(value)


@pytest.mark.parametrize("text, seconds", [("5ms", 0.005), ("0.005s", 0.005), ("5 ms", 0.005), ("5msec", 0.005),
                                           ("5000us", 0.005), ("5000usec", 0.005), ("5000000ns", 0.005),
                                           ("0.005sec", 0.005), ("5MS", 0.005)])
def test_time_spellings_of_five_milliseconds_are_equal(text, seconds):
    assert units.parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [0, 0.0, "0", "0ms", "0s"])
def test_zero_time_may_be_written_bare(value):
    assert units.parse_time(value) == 0.0


@pytest.mark.parametrize("value, message", [(20, "has no unit"), ("20", "has no unit"), (1.5, "has no unit"),
                                            ("5m", "unknown unit 'm'"), ("5min", "unknown unit 'min'"),
                                            ("-5ms", "is not a time"), ("soon", "is not a time"),
                                            ("100s", "above the 60s limit"), ("61s", "above the 60s limit"),
                                            ("1e999ms", "above the 60s limit"), (True, "is not a time")])
def test_bad_times(value, message):
    with pytest.raises(ValueError, match=message):
        units.parse_time(value)


def test_time_errors_name_the_quantity():
    with pytest.raises(ValueError, match="^jitter "):
        units.parse_time("lots", "jitter")


def test_sixty_seconds_is_the_largest_delay():
    assert units.parse_time("60s") == 60.0


@pytest.mark.parametrize("value", ["1%", "1 %", "0.01", 0.01, "1.0%"])
def test_loss_percent_and_fraction_are_equal(value):
    assert units.parse_loss(value) == pytest.approx(0.01)


@pytest.mark.parametrize("value, fraction", [("0%", 0.0), (0, 0.0), ("100%", 1.0), (1, 1.0), ("0.5%", 0.005)])
def test_loss_bounds(value, fraction):
    assert units.parse_loss(value) == pytest.approx(fraction)


@pytest.mark.parametrize("value, message", [("150%", "between 0% and 100%"), ("-1%", "between 0% and 100%"),
                                            (-0.1, "between 0% and 100%"), (5, "above 1; write 5% for 5 percent"),
                                            ("some", "is not a rate"), ("nan", "between 0% and 100%"),
                                            (True, "is not a rate")])
def test_bad_losses(value, message):
    with pytest.raises(ValueError, match=message):
        units.parse_loss(value)


@pytest.mark.parametrize("value, packets", [(100, 100), ("100", 100), ("100p", 100), ("100 packets", 100),
                                            (1, 1), (1_000_000, 1_000_000)])
def test_queue(value, packets):
    assert units.parse_queue(value) == packets


@pytest.mark.parametrize("value", [0, -5, 1.5, "lots", 1_000_001, True])
def test_bad_queues(value):
    with pytest.raises(ValueError, match="queue"):
        units.parse_queue(value)


@pytest.mark.parametrize("value, size", [("512M", 512 * 2**20), ("512MiB", 512 * 2**20), ("512mb", 512 * 2**20),
                                         ("1G", 2**30), ("1.5G", 3 * 2**29), ("16M", 16 * 2**20),
                                         (2**30, 2**30)])
def test_memory_units_are_binary(value, size):
    assert units.parse_memory(value) == size


@pytest.mark.parametrize("value, message", [("512 apples", "is not a size"), (512, "below 16M"),
                                            ("1K", "below 16M"), ("-1G", "is not a size"),
                                            ("1e999G", "above"), (True, "is not a size")])
def test_bad_memory(value, message):
    with pytest.raises(ValueError, match=message):
        units.parse_memory(value)


@pytest.mark.parametrize("value", [1, 0.5, 2, 1024])
def test_cpus(value):
    assert units.parse_cpus(value) == float(value)


@pytest.mark.parametrize("value", [0, -1, "two", "2", True, 1025, float("nan")])
def test_bad_cpus(value):
    with pytest.raises(ValueError, match="cpus"):
        units.parse_cpus(value)


@pytest.mark.parametrize("bps, text", [(10**7, "10Mbit"), (1_500_000_000, "1.5Gbit"), (64_000, "64kbit"),
                                       (999, "999bit")])
def test_format_bandwidth(bps, text):
    assert units.format_bandwidth(bps) == text


@pytest.mark.parametrize("seconds, text", [(0.005, "5ms"), (0.0005, "0.5ms"), (2.0, "2s")])
def test_format_time(seconds, text):
    assert units.format_time(seconds) == text


@pytest.mark.parametrize("bps", [1000, 64_000, 10**7, 1_500_000_000, 400 * 10**9])
def test_formatted_bandwidth_parses_back(bps):
    assert units.parse_bandwidth(units.format_bandwidth(bps)) == bps


@pytest.mark.parametrize("seconds", [0.001, 0.0205, 0.25, 1.0, 30.0])
def test_formatted_time_parses_back(seconds):
    assert units.parse_time(units.format_time(seconds)) == pytest.approx(seconds)


def test_bandwidth_with_bit_per_second_suffix():
    from nestbed.model.units import parse_bandwidth
    assert parse_bandwidth("10Mbit/s") == parse_bandwidth("10Mbit") == 10_000_000
