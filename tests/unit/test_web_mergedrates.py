"""web/mergedrates.py: hosts' frames merged into one: a cross-host link's parts summed with its attack share
recomputed, gaps where no host measured, a host that stopped sampling left out, one host's frame as it is."""
from __future__ import annotations

from nestbed.web.mergedrates import STALE_SECONDS, merged
from nestbed.web.rates import Frame


def test_parts_add_up_and_the_attack_share_is_of_the_sum():
    h0 = Frame(7, 100.0, rate=[1000, 300, None], attack=[0, 100, None], down=[])
    h1 = Frame(3, 100.5, rate=[None, 100, None], attack=[None, 0, None], down=[])
    assert merged([h0, h1], 1, [2]) == Frame(1, 100.5, [1000, 400, None], [0, 75, None], [2])


def test_one_host_comes_through_and_a_stale_host_is_left_out():
    h0 = Frame(7, 100.0, rate=[5, 0], attack=[20, 0], down=[])
    assert merged([h0], 9, []) == Frame(9, 100.0, [5, 0], [20, 0], [])
    gone = Frame(2, 100.0 - STALE_SECONDS - 1, rate=[None, 800], attack=[None, 50], down=[])
    assert merged([h0, gone], 10, []) == Frame(10, 100.0, [5, 0], [20, 0], [])
