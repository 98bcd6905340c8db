"""The key layout (/work/etcd-design.md §3). Keys are bytes; names are nestbed names (no '/').

    /nestbed/exp/<exp>/generation          "17": raised by CAS only when the spec sha changes
    /nestbed/exp/<exp>/spec                the sha of every host's plan together (same spec: same generation)
    /nestbed/exp/<exp>/blob/<sha>/<0000>   zlib chunks, content-addressed, immutable: host parts, shared documents
    /nestbed/exp/<exp>/status/<host>       {observed, phase, errors, at}: not leased (a failure stays readable)
    /nestbed/host/<host>/desired/<exp>     the manifest {generation, plan: sha, chunks, bytes, shared: sha,
                                           shared_chunks} (no shared: the plan blob is the whole plan)
    /nestbed/host/<host>/alive             the agent's id, on its lease (TTL 5 s)
"""
from __future__ import annotations

ROOT = b"/nestbed"


def _name(value: str) -> bytes:
    if not value or "/" in value:
        raise ValueError(f"{value!r} cannot be part of an etcd key")
    return value.encode()


def experiment(exp: str) -> bytes:
    return ROOT + b"/exp/" + _name(exp) + b"/"


def generation(exp: str) -> bytes:
    return experiment(exp) + b"generation"


def spec(exp: str) -> bytes:
    return experiment(exp) + b"spec"


def blob(exp: str, sha: str) -> bytes:
    return experiment(exp) + b"blob/" + _name(sha) + b"/"


def chunk(exp: str, sha: str, index: int) -> bytes:
    return blob(exp, sha) + b"%04d" % index


def statuses(exp: str) -> bytes:
    return experiment(exp) + b"status/"


def status(exp: str, host: str) -> bytes:
    return statuses(exp) + _name(host)


def host(name: str) -> bytes:
    return ROOT + b"/host/" + _name(name) + b"/"


def desired(host_name: str) -> bytes:
    return host(host_name) + b"desired/"


def manifest(host_name: str, exp: str) -> bytes:
    return desired(host_name) + _name(exp)


def alive(host_name: str) -> bytes:
    return host(host_name) + b"alive"


def last_part(key: bytes) -> str:
    return key.rsplit(b"/", 1)[1].decode()
