"""Parse the quantities a topology carries: bandwidth, time, loss, memory, queue length.

Each parser takes what a user may write (``10Mbit``, ``10Mbps``, ``10M``, ``5ms``, ``0.005s``, ``1%``, ``0.01``)
and returns a plain number, or raises ValueError with a message that says what would be accepted.
"""
from __future__ import annotations

import re

_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BANDWIDTH = re.compile(rf"\s*(?P<num>{_NUMBER})\s*(?P<prefix>[kKmMgGtT]?)(?P<unit>bit|bits|bit/s|bps|b/s|)\s*",
                        re.IGNORECASE)
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6, "ns": 1e-9}
_TIME = re.compile(rf"\s*(?P<num>{_NUMBER})\s*(?P<unit>[a-z]*)\s*", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
                 "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
_MEMORY = re.compile(rf"\s*(?P<num>{_NUMBER})\s*(?P<unit>[a-z]*)\s*", re.IGNORECASE)

MAX_BANDWIDTH = 400 * 10**9
MAX_DELAY = 60.0


def _number(match: re.Match[str]) -> float:
    return float(match.group(0)[: match.end("num") - match.start(0)].strip())


def parse_bandwidth(value: object) -> int:
    """Bits per second from ``10Mbit``, ``10Mbps``, ``10M``, ``10mbit``, ``1.5G``, or a plain integer (bit/s)."""
    if isinstance(value, bool):
        raise ValueError(f"bandwidth {value!r} is not a rate; write e.g. 10Mbit")
    if isinstance(value, (int, float)):
        rate = float(value)
    else:
        text = str(value)
        if re.search(r"\d\s*[kKmMgGtT]?B(ps|/s)?\s*", text):
            raise ValueError(f"bandwidth {text!r} is in bytes; nestbed takes bits, e.g. 80Mbit for 10 MB/s")
        match = _BANDWIDTH.fullmatch(text)
        if not match:
            raise ValueError(f"bandwidth {text!r} is not a rate; write e.g. 10Mbit, 10Mbps, 10M or 1Gbit")
        rate = float(match.group("num")) * _SI[match.group("prefix").lower()]
    if rate <= 0 or rate != rate:
        raise ValueError(f"bandwidth {value!r} must be above zero")
    if rate > MAX_BANDWIDTH:
        raise ValueError(f"bandwidth {value!r} is above the 400Gbit that nestbed can shape")
    if rate < 1000:
        raise ValueError(f"bandwidth {value!r} is below 1kbit (did you forget a unit? write e.g. 10Mbit)")
    return int(rate)


def parse_time(value: object, what: str = "delay") -> float:
    """Seconds from ``5ms``, ``0.005s``, ``200us`` (0 may be written bare)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} is not a time; write e.g. 5ms")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise ValueError(f"{what} {value!r} has no unit; write e.g. {value}ms or {value}s")
    match = _TIME.fullmatch(str(value))
    if not match:
        raise ValueError(f"{what} {value!r} is not a time; write e.g. 5ms or 0.005s")
    unit = match.group("unit").lower()
    if unit == "" and float(match.group("num")) != 0:
        raise ValueError(f"{what} {value!r} has no unit; write e.g. {value}ms or {value}s")
    if unit not in _TIME_UNITS and unit != "":
        raise ValueError(f"{what} {value!r} has unknown unit {unit!r}; use s, ms or us")
    seconds = float(match.group("num")) * _TIME_UNITS.get(unit, 1.0)
    if seconds > MAX_DELAY:
        raise ValueError(f"{what} {value!r} is above the {MAX_DELAY:.0f}s limit")
    return seconds


def parse_loss(value: object) -> float:
    """Loss as a fraction from ``1%``, ``0.5%``, ``0.01``; 0 … 1."""
    if isinstance(value, bool):
        raise ValueError(f"loss {value!r} is not a rate; write e.g. 1% or 0.01")
    text = str(value).strip()
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"loss {value!r} is not a rate; write e.g. 1% or 0.01") from None
    if not text.endswith("%") and fraction > 1:
        raise ValueError(f"loss {value!r} is above 1; write {text}% for {text} percent")
    if not 0 <= fraction <= 1:
        raise ValueError(f"loss {value!r} must be between 0% and 100%")
    return fraction


def parse_queue(value: object) -> int:
    """Queue limit in packets: a positive integer (``100`` or ``100p``)."""
    text = str(value).strip().removesuffix("p").removesuffix("packets").strip()
    if isinstance(value, bool) or not text.isdigit():
        raise ValueError(f"queue {value!r} is not a number of packets; write e.g. 100")
    packets = int(text)
    if not 1 <= packets <= 1_000_000:
        raise ValueError(f"queue {value!r} must be between 1 and 1000000 packets")
    return packets


def parse_memory(value: object) -> int:
    """Bytes from ``512M``, ``1G``, ``512MiB`` (binary units, as qemu reads them)."""
    if isinstance(value, bool):
        raise ValueError(f"memory {value!r} is not a size; write e.g. 512M")
    match = _MEMORY.fullmatch(str(value))
    unit = match.group("unit").lower() if match else None
    if not match or unit not in _MEMORY_UNITS:
        raise ValueError(f"memory {value!r} is not a size; write e.g. 512M or 2G")
    exact = float(match.group("num")) * _MEMORY_UNITS[unit]
    if exact > 2**50:      # also catches 1e999G, which int() cannot take
        raise ValueError(f"memory {value!r} is above the 1P that nestbed accepts")
    size = int(exact)
    if size < 16 * 2**20:
        raise ValueError(f"memory {value!r} is below 16M (did you forget a unit? write e.g. 512M)")
    return size


def parse_cpus(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1024:
        raise ValueError(f"cpus {value!r} must be a number above 0, e.g. 1 or 0.5")
    return float(value)


def format_bandwidth(bps: int) -> str:
    for scale, unit in ((10**9, "Gbit"), (10**6, "Mbit"), (10**3, "kbit")):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"


def format_time(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"
