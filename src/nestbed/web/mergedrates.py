"""One counters frame from several hosts' (pure): a multi-host experiment's hosts sample at their own moments, so
the feed keeps a RateTracker per host (web/rates.py) and merges their newest frames.

A link between two hosts has a member on each: its rate is the sum of the hosts' parts, its attack share the
attack parts over that sum. A link no host measured is a gap (None). A host whose newest frame came more than
`STALE_SECONDS` before the newest host's is left out (its agent stopped sampling, or it cannot be reached): its
links go to gaps rather than keep their last rate forever. When a frame came is the caller's clock (the controller's
monotonic time it first saw that sample), never the frame's own `t`: hosts' clocks need not agree. One host's frame
comes through as it is.
"""
from __future__ import annotations

from collections.abc import Sequence

from nestbed.web.rates import Frame, _at_least_one

STALE_SECONDS = 5.0


def merged(frames: Sequence[Frame], seq: int, down: list[int], seen: Sequence[float]) -> Frame:
    """The frames (one per host, each indexing every link) as one, numbered `seq`, with `down` link indexes;
    `seen[k]` is when frames[k]'s sample came, on the caller's clock."""
    latest = max(seen)
    fresh = [frame for frame, came in zip(frames, seen, strict=True) if came >= latest - STALE_SECONDS]
    newest = max(frame.t for frame in fresh)
    if len(fresh) == 1:
        return Frame(seq, newest, list(fresh[0].rate), list(fresh[0].attack), down)
    rates: list[int | None] = []
    attacks: list[int | None] = []
    for link in range(len(fresh[0].rate)):
        measured = [(rate, frame.attack[link] or 0) for frame in fresh if (rate := frame.rate[link]) is not None]
        if not measured:
            rates.append(None)
            attacks.append(None)
            continue
        total = sum(rate for rate, _ in measured)
        marked = sum(rate * attack / 100 for rate, attack in measured)
        rates.append(total)
        attacks.append(_at_least_one(100 * marked / total) if total > 0 else 0)
    return Frame(seq, newest, rates, attacks, down)
