"""Reading an experiment's store from the CLI: a store SQLite cannot read is one line naming the file."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nestbed.agent.store import Store
from nestbed.errors import ExperimentError


def unreadable(path: Path, error: sqlite3.Error) -> ExperimentError:
    return ExperimentError(f"cannot read the store {path}: {error} (sqlite3); if it is damaged, move it away "
                           f"(the experiment goes on without its history) or read a copy with --store")


@contextmanager
def reading(path: Path) -> Iterator[Store]:
    """The store at path, closed after; sqlite3 errors while opening or reading it become one ExperimentError."""
    try:
        store = Store(path)
        try:
            yield store
        finally:
            store.close()
    except sqlite3.Error as error:
        raise unreadable(path, error) from None
