"""Embedding: place a vtopo on a cluster of hosts (and vhost VMs), least inter-host traffic first, then balance.

    from nestbed.embed import embed
    embedding = embed(experiment, load_cluster("lab.yaml"), seed=0)
    embedding.placement["a"]        # Placement(host="h1", vhost="vh-h1-0")

Module map: problem (indexed input, groups, pins) · demands (what nodes ask, hosts offer) · feasibility (one-line
errors) · graph (the traffic graph) · balance (fair shares) · partition (METIS) · state (loads, moves, gains) ·
repair (hard constraints) · refine (objective) · vhosts (nested processes) · metrics (cut, checks) · embedder.

The names below load on first use: node kinds and the planner import `nestbed.embed.demands` alone, which must not
pull in the embedder (numpy, METIS) on every `nestbed validate`.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nestbed.embed.embedder import embed
    from nestbed.embed.embedding import Embedding, EmbeddingError, Metrics, Placement
    from nestbed.embed.metrics import evaluate, violations

__all__ = ["Embedding", "EmbeddingError", "Metrics", "Placement", "embed", "evaluate", "violations"]

_HOME = {"embed": "embedder", "Embedding": "embedding", "EmbeddingError": "embedding", "Metrics": "embedding",
         "Placement": "embedding", "evaluate": "metrics", "violations": "metrics"}


def __getattr__(name: str) -> object:
    if name in _HOME:
        import importlib
        return getattr(importlib.import_module(f"nestbed.embed.{_HOME[name]}"), name)
    raise AttributeError(f"module 'nestbed.embed' has no attribute {name!r}")
