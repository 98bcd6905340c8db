"""The mark nestbed puts on what it makes in the host's own namespace, where everything else on the machine lives
too (the control bridge, host ends of control veths, VM control TAPs, the experiment's nftables table).

Teardown removes such an object only when it carries the mark of the experiment being torn down: a link or table
of the same name made by someone else, or by the same-named experiment of another state directory, is left alone.
"""
from __future__ import annotations

import zlib
from pathlib import Path


def mark(experiment: str, state_dir: Path) -> str:
    """`nestbed:NAME:XXXXXXXX`, the last part naming the state directory (a link alias holds up to 255 bytes)."""
    return f"nestbed:{experiment}:{zlib.crc32(str(state_dir).encode()):08x}"


def not_ours(what: str, found: str | None, expected: str) -> str:
    """The line teardown reports for an object of our name without our mark."""
    carries = f"it carries {found!r}" if found else "it carries no mark"
    return f"left {what}: {carries}, not {expected!r}, so nestbed did not make it for this experiment"
