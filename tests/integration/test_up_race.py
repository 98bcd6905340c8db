"""Two `nestbed up` of one file at once: exactly one makes the experiment, the other is refused in one line and
touches nothing of it; the survivor works and goes down cleanly."""
from __future__ import annotations

import json
import subprocess

from conftest import NESTBED, exec_in, nestbed, our_namespaces

TOPOLOGY = """
nodes:
  a: {}
  b: {}
  c: {}
lans:
  lan0: {members: [a, b, c]}
"""


def test_two_ups_of_one_name_race_and_one_wins(experiments):
    name, path = experiments.write(TOPOLOGY)
    racers = [subprocess.Popen(NESTBED + ["up", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outcomes = [(racer.wait(timeout=300), *racer.communicate()) for racer in racers]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, outcomes
    (_, _, refused), = [o for o in outcomes if o[0] != 0]
    assert "Traceback" not in refused and len(refused.strip().splitlines()) == 1, refused
    assert f"experiment {name!r} is already" in refused, refused
    listing = json.loads(nestbed("status", "--json").stdout)
    assert [e["state"] for e in listing["experiments"] if e["name"] == name] == ["up"]
    assert len(our_namespaces(name)) == 4        # three nodes and the LAN's switch: none removed
    assert "0% packet loss" in exec_in(name, "a", "ping", "-c", "1", "-W", "2", "c").stdout
    nestbed("down", name)
    assert not our_namespaces(name)
