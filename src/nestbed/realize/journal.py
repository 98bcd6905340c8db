"""The experiment's journal: every object is recorded here before it is created, so teardown can find it.

An append-only file of JSON lines. Entries are written in batches (one fsync per phase) ahead of the objects
they name; teardown treats each entry as "may exist" and removes what is there, so it is idempotent and works
after a crash at any point.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

TYPE_CHECKING = False     # not typing's: importing typing costs ~0.4 s of a VM's boot under emulation
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

Entry = dict[str, "Any"]


class Journal:
    def __init__(self, path: Path):
        self.path = path

    def record(self, entries: Iterable[Entry]) -> None:
        lines = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries)
        if not lines:
            return
        with open(self.path, "a") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break     # a line torn by a crash mid-write: nothing after it was created
        return entries
