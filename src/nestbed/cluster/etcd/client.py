"""A thin wrapper over aetcd covering what it lacks (measured in /work/etcd-design.md §1).

aetcd's get/get_prefix ignore `revision`: `range_prefix` calls the Range stub. `Lease.refresh` opens a new
stream on every call: `KeepAlive` holds ONE bidirectional stream per process for every lease. gRPC's default
receive limit (4 MiB) is raised. URLs are http://host:port (several: one gRPC target over all of them) or
unix://NAME:PORT, where NAME is a socket path (etcd makes a unix listener's socket at the URL's host:port, the
path relative to its working directory; here the part after unix:// is the absolute path).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import aetcd  # after the package's __init__, which turns gRPC's fork handlers off
from aetcd import rpc

from nestbed.errors import ExperimentError

RECEIVE_LIMIT = 256 << 20
CONNECT_SECONDS = 10.0


def grpc_target(urls: Sequence[str]) -> str:
    """One gRPC target for the endpoints; one line for a URL that is not http://host:port or unix://path."""
    if not urls:
        raise ExperimentError("no etcd endpoint given: want http://HOST:PORT or unix:///PATH")
    unix = [u for u in urls if u.startswith("unix://")]
    if unix:
        return "unix:" + unix[0][len("unix://"):]
    hosts = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ExperimentError(f"etcd endpoint {url!r} must be http://HOST:PORT or unix:///PATH")
        hosts.append(f"{parts.hostname}:{parts.port}")
    if len(hosts) == 1:
        return hosts[0]
    return "ipv4:" + ",".join(hosts)       # gRPC's list of addresses: it picks one that answers


def parse_urls(text: str) -> list[str]:
    urls = [u.strip() for u in text.split(",") if u.strip()]
    grpc_target(urls)                        # one line now, not a gRPC error later
    return urls


class Etcd:
    """One connection (gRPC channel) to etcd, with the calls nestbed needs."""

    def __init__(self, urls: Sequence[str]):
        host, _, port = grpc_target(urls).rpartition(":")
        # aetcd joins host and port into the target: split ours so that it joins back to the same string
        # a channel of its own subchannels: gRPC shares them process-wide by default, and a fresh channel after an
        # outage would inherit the old one's connection backoff and fail at once (measured: "does not answer"
        # right after etcd was healthy again)
        self.client = aetcd.Client(host=host, port=port, options={
            "grpc.max_receive_message_length": RECEIVE_LIMIT, "grpc.max_send_message_length": RECEIVE_LIMIT,
            "grpc.use_local_subchannel_pool": 1})
        self.urls = list(urls)
        self.tx = self.client.transactions

    async def __aenter__(self) -> Etcd:
        await self.connect()
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def connect(self, seconds: float = CONNECT_SECONDS) -> None:
        await self.client.connect()
        try:           # the channel connects lazily: ask once, so that a wrong endpoint is one line here
            await asyncio.wait_for(self.client.status(), seconds)
        except (TimeoutError, aetcd.exceptions.ClientError, aetcd.exceptions.ConnectionFailedError):
            await self.client.close()
            raise ExperimentError(f"etcd at {', '.join(self.urls)} does not answer (after {seconds:g} s)") from None

    async def close(self) -> None:
        await self.client.close()

    async def get(self, key: bytes) -> Any:
        return await self.client.get(key)

    async def range_prefix(self, prefix: bytes, revision: int = 0, keys_only: bool = False,
                           count_only: bool = False) -> Any:
        """The Range response for every key under the prefix, at `revision` (0: now): .kvs, .header.revision."""
        request = rpc.RangeRequest(key=prefix, range_end=aetcd.utils.prefix_range_end(prefix), revision=revision,
                                   keys_only=keys_only, count_only=count_only)
        return await self.client.kvstub.Range(request, timeout=None, metadata=self.client.metadata)

    async def put(self, key: bytes, value: bytes, lease: Any = None) -> None:
        await self.client.put(key, value, lease=lease)

    async def txn(self, compare: list[Any], success: list[Any], failure: list[Any] | None = None
                  ) -> tuple[bool, Any]:
        ok, responses = await self.client.transaction(compare=compare, success=success, failure=failure or [])
        return bool(ok), responses

    async def delete_prefix(self, prefix: bytes) -> None:
        await self.client.delete_prefix(prefix)

    def put_op(self, key: bytes, value: bytes) -> Any:
        return self.tx.put(key, value)

    def delete_prefix_op(self, prefix: bytes) -> Any:
        return self.tx.delete(prefix, aetcd.utils.prefix_range_end(prefix))

    async def watch_prefix(self, prefix: bytes, start_revision: int | None = None) -> Any:
        return await self.client.watch_prefix(prefix, range_end=aetcd.utils.prefix_range_end(prefix),
                                              start_revision=start_revision)

    async def grant(self, ttl: int) -> Any:
        return await self.client.lease(ttl)

    async def compact(self, revision: int) -> None:
        """Drop the history older than `revision` (logical: etcd frees the space in its own time)."""
        await self.client.compact(revision, physical=False)


def compacted(error: BaseException) -> bool:
    """A read or watch at a revision that compaction already removed."""
    return isinstance(error, aetcd.exceptions.RevisionCompactedError) or "compacted" in str(error)


class KeepAlive:
    """One LeaseKeepAlive stream for every lease of this process, each refreshed every ttl/3."""

    def __init__(self, etcd: Etcd, ttl: float):
        self.etcd, self.ttl = etcd, ttl
        self.leases: list[int] = []
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.ended = asyncio.Event()          # the stream closed or failed (etcd went away), or a lease expired
        self.expired: set[int] = set()
        self._stream: Any = None

    def add(self, lease_id: int) -> None:
        self.leases.append(lease_id)

    def start(self) -> None:
        async def requests() -> AsyncIterator[Any]:
            while (request := await self._queue.get()) is not None:     # None: stop() ends the stream's feeder
                yield request
        stream = self.etcd.client.leasestub.LeaseKeepAlive(requests(), metadata=self.etcd.client.metadata)
        self._stream = stream

        async def drain() -> None:
            try:
                async for answer in stream:
                    if answer.TTL <= 0 and answer.ID in self.leases:     # it ran out (a pause longer than TTL)
                        self.expired.add(answer.ID)
                        self.ended.set()
            finally:
                self.ended.set()

        async def tick() -> None:
            while True:
                for lease_id in self.leases:
                    self._queue.put_nowait(rpc.LeaseKeepAliveRequest(ID=lease_id))
                await asyncio.sleep(self.ttl / 3)
        self._tasks = [asyncio.create_task(drain()), asyncio.create_task(tick())]

    async def stop(self) -> None:
        self._queue.put_nowait(None)          # gRPC's task feeding the stream ends too (none left pending)
        if self._stream is not None:
            self._stream.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
