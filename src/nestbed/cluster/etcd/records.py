"""What the manifest, status and alive keys hold (JSON), and the phases of a status.

A status is `observed` (the generation the host last finished applying), `phase` (applying, ready, failed,
removed), `errors` (one line each) and `at` (time.time() of the write). A status describes the current spec only
when observed == generation (as Kubernetes' observedGeneration).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

APPLYING, READY, FAILED, REMOVED = "applying", "ready", "failed", "removed"
PHASES = (APPLYING, READY, FAILED, REMOVED)


@dataclass(frozen=True)
class Manifest:
    generation: int
    plan: str                  # the blob's sha
    chunks: int
    size: int                  # uncompressed bytes ("bytes" in JSON)
    empty: bool = False        # the empty plan: the experiment goes from this host
    shared: str = ""           # the experiment's shared document's sha ("": `plan` is the whole plan, as before)
    shared_chunks: int = 0

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        fields["bytes"] = fields.pop("size")
        if not self.shared:                   # a whole plan's manifest: as before the shared document
            del fields["shared"], fields["shared_chunks"]
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        return cls(int(data["generation"]), str(data["plan"]), int(data["chunks"]), int(data["bytes"]),
                   bool(data.get("empty", False)), str(data.get("shared", "")), int(data.get("shared_chunks", 0)))


@dataclass(frozen=True)
class Status:
    observed: int
    phase: str
    errors: list[str] = field(default_factory=list)
    at: float = 0.0
    agent: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps({**asdict(self), "at": self.at or time.time()}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Status:
        data: dict[str, Any] = json.loads(raw)
        return cls(int(data.get("observed", 0)), str(data.get("phase", "")), list(data.get("errors") or []),
                   float(data.get("at", 0.0)), str(data.get("agent", "")))

    def done_at(self, generation: int) -> bool:
        """The host finished this generation (ready, or removed for an empty plan)."""
        return self.observed == generation and self.phase in (READY, REMOVED)


def aggregate(statuses: dict[str, Status], generation: int, placed: set[str] | frozenset[str] = frozenset(),
              alive: set[str] | None = None, now: float = 0.0) -> dict[str, Any]:
    """For `nestbed status`: how many hosts are in each phase, those behind the generation, every error, and
    (given which hosts have their alive key) the lost ones: host → seconds since its last status (None: it never
    wrote one). The hosts are those with a status or a manifest (`placed`)."""
    phases: dict[str, int] = {}
    behind = []
    errors = []
    for host, status in sorted(statuses.items()):
        phases[status.phase] = phases.get(status.phase, 0) + 1
        if status.observed != generation:
            behind.append(host)
        errors += [f"{host}: {line}" for line in status.errors]
    hosts = set(statuses) | set(placed)
    lost: dict[str, float | None] = {}
    if alive is not None:
        for host in sorted(hosts - alive):
            at = statuses[host].at if host in statuses else 0.0
            lost[host] = round(max(0.0, (now or time.time()) - at), 1) if at else None
    return {"generation": generation, "hosts": len(hosts), "phases": phases, "behind": behind, "errors": errors,
            "lost": lost}


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_lost(lost: dict[str, float | None]) -> str:
    """"h2 (last status 40 s ago), h5": the hosts whose alive key is gone (their lease ran out)."""
    return ", ".join(f"{host} (last status {_ago(ago)} ago)" if ago is not None else host
                     for host, ago in sorted(lost.items()))
