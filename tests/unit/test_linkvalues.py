"""What a runtime link change may say (realize/linkvalues.py): `set` arguments, each value checked alone, and the
shaping they merge into, all errors in one line."""
from __future__ import annotations

import pytest

from nestbed.errors import ExperimentError
from nestbed.plan.hostplan import ShapingPlan
from nestbed.realize import linkvalues


# -- parsing `set` ------------------------------------------------------------------------------------------
def test_assignments_are_key_value_pairs():
    assert linkvalues.parse_assignments(["bandwidth=5Mbit", "loss=1%", "Delay=10ms"]) == {
        "bandwidth": "5Mbit", "loss": "1%", "delay": "10ms"}


@pytest.mark.parametrize("words, message", [
    ([], "set needs at least one key=value"),
    (["bandwidth"], "'bandwidth' is not key=value"),
    (["=5Mbit"], "is not key=value"),
    (["bandwith=5Mbit"], "unknown shaping key 'bandwith'; did you mean bandwidth?"),
    (["colour=red"], "unknown shaping key 'colour' (keys: bandwidth, delay, jitter, loss, queue)"),
    (["loss=1%", "loss=2%"], "loss is given twice"),
])
def test_bad_assignments_are_one_line(words, message):
    with pytest.raises(ExperimentError) as error:
        linkvalues.parse_assignments(words)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_set_merges_into_the_current_shaping_with_the_model_units():
    current = ShapingPlan(bandwidth=10_000_000, loss=0.005)
    assert linkvalues.merged_shaping(current, {"bandwidth": "5Mbit"}) == ShapingPlan(bandwidth=5_000_000, loss=0.005)
    assert linkvalues.merged_shaping(current, {"loss": "2%", "queue": "50"}) == ShapingPlan(
        bandwidth=10_000_000, loss=0.02, queue=50)
    assert linkvalues.merged_shaping(None, {"delay": "10ms", "jitter": "2ms"}) == ShapingPlan(delay=0.01, jitter=0.002)
    # jitter alone is fine when the segment has a delay already
    assert linkvalues.merged_shaping(ShapingPlan(delay=0.02), {"jitter": "1ms"}) == ShapingPlan(delay=0.02,
                                                                                              jitter=0.001)
    assert linkvalues.merged_shaping(None, {"bandwidth": 2_000_000}) == ShapingPlan(bandwidth=2_000_000)


def test_none_removes_a_key_and_nothing_left_is_no_shaping():
    current = ShapingPlan(bandwidth=10_000_000, loss=0.005)
    assert linkvalues.merged_shaping(current, {"loss": "none"}) == ShapingPlan(bandwidth=10_000_000)
    assert linkvalues.merged_shaping(current, {"loss": "0", "bandwidth": "off"}) is None


@pytest.mark.parametrize("changes, message", [
    ({"bandwidth": "5MB"}, "in bytes"),
    ({"bandwidth": "fast"}, "is not a rate"),
    ({"delay": "10"}, "has no unit"),
    ({"loss": "150%"}, "between 0% and 100%"),
    ({"queue": "-3"}, "not a number of packets"),
    ({"jitter": "1ms"}, "jitter needs a delay"),
    ({"delay": "1ms", "jitter": "5ms"}, "larger than delay"),
])
def test_bad_values_are_one_line(changes, message):
    with pytest.raises(ExperimentError) as error:
        linkvalues.merged_shaping(None, changes, "link0 set")
    text = str(error.value)
    assert message in text and "\n" not in text and text.startswith("link0 set: ")


def test_values_are_checked_one_by_one_before_the_experiment_is_touched():
    linkvalues.check_values({"bandwidth": "5Mbit", "loss": "none", "jitter": "1ms"})
    with pytest.raises(ExperimentError, match="bandwidth '5MB' is in bytes"):
        linkvalues.check_values({"bandwidth": "5MB"})
