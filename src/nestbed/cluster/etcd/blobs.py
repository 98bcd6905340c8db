"""Plans as zlib-compressed, content-addressed chunks, and the txns that write them within etcd's limits.

etcd refuses a txn of more than 128 operations (--max-txn-ops) and a request over 1.5 MiB (--max-request-bytes
1,572,864), for the whole txn. So a chunk is at most 1 MiB, and a txn holds at most 128 operations and 1.5 MiB
less room for keys. A blob is named by the sha of its uncompressed bytes and never changes: a reader that sees the
manifest (written in the txn of the last chunk) finds every chunk there.
"""
from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

CHUNK_BYTES = 1 << 20
TXN_OPS = 128
TXN_BYTES = 1_572_864 - 64 * 1024      # etcd's request limit, less room for keys and the protobuf framing


@dataclass(frozen=True)
class Blob:
    sha: str
    chunks: list[bytes]        # compressed, each <= CHUNK_BYTES
    size: int                  # uncompressed bytes


def sha_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def pack(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Blob:
    packed = zlib.compress(data, 6)
    chunks = [packed[k:k + chunk_bytes] for k in range(0, len(packed), chunk_bytes)] or [b""]
    return Blob(sha_of(data), chunks, len(data))


def unpack(chunks: Iterable[bytes], sha: str | None = None) -> bytes:
    data = zlib.decompress(b"".join(chunks))
    if sha is not None and sha_of(data) != sha:
        raise ValueError(f"blob {sha}: its chunks do not add up to it")
    return data


def batches(sizes: list[int], ops: int = TXN_OPS, limit: int = TXN_BYTES) -> list[list[int]]:
    """Indexes of operations grouped into txns: each group <= `ops` operations and <= `limit` bytes (an
    operation bigger than the limit alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    weight = 0
    for index, size in enumerate(sizes):
        if current and (len(current) >= ops or weight + size > limit):
            groups.append(current)
            current, weight = [], 0
        current.append(index)
        weight += size
    if current:
        groups.append(current)
    return groups
