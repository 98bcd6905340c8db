"""The experiment's generation: raised only when its spec changes, by compare-and-swap (one writer wins).

The spec is the sha of every host's plan together, so the same topology and cluster give the same spec and the
same generation: a controller killed mid-up and run again publishes nothing new for what is done.
"""
from __future__ import annotations

from nestbed.cluster.etcd import keys
from nestbed.cluster.etcd.client import Etcd
from nestbed.errors import ExperimentError


async def current(etcd: Etcd, exp: str) -> tuple[int, str]:
    """The generation (0: never published) and its spec sha."""
    gen = await etcd.get(keys.generation(exp))
    spec = await etcd.get(keys.spec(exp))
    return (int(gen.value) if gen is not None else 0), (spec.value.decode() if spec is not None else "")


async def advance(etcd: Etcd, exp: str, spec: str) -> tuple[int, bool]:
    """The generation of this spec: the current one when its spec is this one, else the next, by CAS on the
    value read. Returns (generation, whether it was raised)."""
    now, known = await current(etcd, exp)
    if now and known == spec:
        return now, False
    key = keys.generation(exp)
    compare = [etcd.tx.value(key) == str(now).encode()] if now else [etcd.tx.version(key) == 0]
    ok, _ = await etcd.txn(compare, [etcd.put_op(key, str(now + 1).encode()),
                                     etcd.put_op(keys.spec(exp), spec.encode())])
    if not ok:
        raise ExperimentError(f"experiment {exp!r}: another controller changed its generation meanwhile; "
                              f"run the command again")
    return now + 1, True
