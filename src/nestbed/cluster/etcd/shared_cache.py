"""The shared documents an agent process has read, parsed, by sha: fetched only when a manifest names a new one.

One fetch per sha however many experiments' workers (or, in the benchmark, hosts) ask at once; a failed fetch is
forgotten (the next manifest tries again). It keeps the newest `keep` documents: the current generation's and the
one before (a rollback or a rerun names one of those).
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from nestbed.cluster.etcd.sharing import SharedDoc

KEEP = 2


class SharedCache:
    def __init__(self, keep: int = KEEP):
        self.keep = keep
        # parsing and joining plans hold the GIL: one at a time per process, so the event loop (the leases'
        # keep-alive, the watches) is not starved by several threads (the benchmark's hundreds of hosts a process)
        self.gate = asyncio.Semaphore(1)
        self.fetches = 0                  # how many times a document was read from etcd (tests, the benchmark)
        self._docs: OrderedDict[str, asyncio.Future[SharedDoc]] = OrderedDict()

    def __contains__(self, sha: str) -> bool:
        return sha in self._docs

    async def get(self, sha: str, fetch: Callable[[], Awaitable[SharedDoc]]) -> SharedDoc:
        future = self._docs.get(sha)
        if future is None:
            future = asyncio.ensure_future(fetch())
            self._docs[sha] = future
            self.fetches += 1
            while len(self._docs) > self.keep:
                self._docs.popitem(last=False)
        else:
            self._docs.move_to_end(sha)
        try:
            return await asyncio.shield(future)     # one waiter cancelled: the others still get it
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._docs.get(sha) is future:
                del self._docs[sha]
            raise
