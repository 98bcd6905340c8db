"""Which qdiscs (or iptables rules) each shaping asks for, with and without netem in the kernel."""
from nestbed.plan.hostplan import InterfacePlan, ShapingPlan
from nestbed.realize import shaping


def _iface(**values) -> InterfacePlan:
    return InterfacePlan("eth1", 3, "lan0", "10.0.0.1/24", "02:00:00:00:00:01", ShapingPlan(**values))


def _purposes(iface, netem):
    return [purpose for _message, purpose in shaping.messages(iface, netem)]


def test_bandwidth_alone_is_htb_root_and_rate_class():
    assert _purposes(_iface(bandwidth=10_000_000), netem=True) == ["htb on eth1", "htb rate 10000000bit on eth1"]


def test_bandwidth_and_delay_put_netem_under_the_htb_class():
    assert _purposes(_iface(bandwidth=10_000_000, delay=0.02, jitter=0.002, queue=50), netem=True) == [
        "htb on eth1", "htb rate 10000000bit on eth1", "netem on eth1"]


def test_delay_alone_is_netem_at_the_root():
    assert _purposes(_iface(delay=0.01), netem=True) == ["netem on eth1"]


def test_queue_alone_is_a_packet_fifo():
    assert _purposes(_iface(queue=100), netem=False) == ["pfifo limit 100 on eth1"]


def test_loss_without_netem_becomes_iptables_rules_both_chains():
    iface = _iface(bandwidth=5_000_000, loss=0.25)
    assert _purposes(iface, netem=False) == ["htb on eth1", "htb rate 5000000bit on eth1"]
    rules = shaping.iptables_loss_rules([iface], netem_available=False)
    assert "-A OUTPUT -o eth1 -m statistic --mode random --probability 0.250000 -j DROP" in rules
    assert "-A FORWARD -o eth1" in rules and rules.startswith("*filter") and rules.endswith("COMMIT\n")
    assert shaping.iptables_loss_rules([iface], netem_available=True) == ""
    assert _purposes(iface, netem=True)[-1] == "netem on eth1"


def test_unshaped_interface_gets_nothing():
    plain = InterfacePlan("eth0", 2, "l", "10.0.0.1/24", "02:00:00:00:00:01", None)
    assert shaping.messages(plain, True) == [] and shaping.iptables_loss_rules([plain], False) == ""
