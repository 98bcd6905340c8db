"""web/mergedrates.py: hosts' frames merged into one: a cross-host link's parts summed with its attack share
recomputed, gaps where no host measured, a host that stopped sampling left out (judged by when the controller saw
its sample, never by the hosts' own clocks), one host's frame as it is."""
from __future__ import annotations

from nestbed.web.mergedrates import STALE_SECONDS, merged
from nestbed.web.rates import Frame


def test_parts_add_up_and_the_attack_share_is_of_the_sum():
    h0 = Frame(7, 100.0, rate=[1000, 300, None], attack=[0, 100, None], down=[])
    h1 = Frame(3, 100.5, rate=[None, 100, None], attack=[None, 0, None], down=[])
    assert merged([h0, h1], 1, [2], seen=[40.0, 40.2]) == Frame(1, 100.5, [1000, 400, None], [0, 75, None], [2])


def test_one_host_comes_through_and_a_stale_host_is_left_out():
    h0 = Frame(7, 100.0, rate=[5, 0], attack=[20, 0], down=[])
    assert merged([h0], 9, [], seen=[3.0]) == Frame(9, 100.0, [5, 0], [20, 0], [])
    gone = Frame(2, 100.0, rate=[None, 800], attack=[None, 50], down=[])      # its clock agrees; its sample is old
    assert merged([h0, gone], 10, [], seen=[50.0, 50.0 - STALE_SECONDS - 1]) == Frame(10, 100.0, [5, 0], [20, 0], [])


def test_a_host_whose_clock_is_far_behind_is_kept_while_its_samples_keep_coming():
    h0 = Frame(7, 1000.0, rate=[5, None], attack=[20, None], down=[])
    behind = Frame(4, 900.0, rate=[None, 800], attack=[None, 50], down=[])    # its clock is 100 s behind
    assert merged([h0, behind], 11, [], seen=[60.0, 59.6]) == Frame(11, 1000.0, [5, 800], [20, 50], [])
    ahead_gone = Frame(4, 5000.0, rate=[None, 800], attack=[None, 50], down=[])   # ahead, and stopped: left out
    assert merged([h0, ahead_gone], 12, [], seen=[60.0, 60.0 - STALE_SECONDS - 0.5]) == \
        Frame(12, 1000.0, [5, None], [20, None], [])
