"""The kit cache's two tools: one lock for the whole cache, and the digest that names a cached file by what it
was made from (a changed input gives a new name, so nothing stale is ever used)."""
from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def inputs_digest(*parts: object) -> str:
    """16 hex digits of the parts: a Path by its name, size and mtime (not its bytes), anything else by repr."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            try:
                st = part.stat()
                digest.update(f"{part}:{st.st_size}:{st.st_mtime_ns}".encode())
            except FileNotFoundError:
                digest.update(f"{part}:missing".encode())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


@contextmanager
def locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
