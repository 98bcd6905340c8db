"""The experiment's journal: every object is recorded here before it is created, so teardown can find it.

An append-only file of JSON lines. Entries are written in batches (one fsync per phase) ahead of the objects
they name; teardown treats each entry as "may exist" and removes what is there, so it is idempotent and works
after a crash at any point.

A modify in place (realize/reconcile.py) that removes an object appends a tombstone `{"t": "gone", "of": ENTRY}`
after the removal (a crash in between leaves a "may exist" entry, which teardown handles); `entries()` folds each
tombstone with the latest earlier entry equal to ENTRY, so re-adding the same name later is one more entry.
`compact()` rewrites the file without them (temporary file, fsync, rename) once they and the entries they
cancel are more than half of it.
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
        return fold(self.raw_entries())

    def raw_entries(self) -> list[Entry]:
        """Every line, tombstones included."""
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

    def bury(self, entries: Iterable[Entry]) -> None:
        """Tombstones for entries whose objects were just removed."""
        self.record({"t": GONE, "of": entry} for entry in entries)

    def compact(self) -> bool:
        """Rewrite without tombstones when they and what they cancel are more than half the file; True when it
        did."""
        raw = self.raw_entries()
        kept = fold(raw)
        if len(kept) * 2 >= len(raw):
            return False
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as handle:
            handle.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, self.path.stat().st_mode & 0o777)
        tmp.replace(self.path)
        return True


GONE = "gone"


def fold(raw: list[Entry]) -> list[Entry]:
    """The entries with each tombstone and the latest earlier entry it names taken out."""
    if not any(e.get("t") == GONE for e in raw):
        return raw
    alive: list[Entry | None] = []
    where: dict[str, list[int]] = {}
    for entry in raw:
        if entry.get("t") == GONE:
            positions = where.get(json.dumps(entry.get("of"), sort_keys=True))
            if positions:
                alive[positions.pop()] = None
            continue
        where.setdefault(json.dumps(entry, sort_keys=True), []).append(len(alive))
        alive.append(entry)
    return [e for e in alive if e is not None]
