"""The web view of an experiment on 2 emulated hosts: while a ping crosses the link between them, the feed's
counters frames show the link's rate (each host's agent samples its own node into its own store) and
`/api/node/<b>` gives b's series from its host; down leaves no namespace, state directory or server behind."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import NESTBED, nestbed, state_dir

pytestmark = pytest.mark.needs("root", "sshd")

TOPOLOGY = "name: webspan\nnodes: {a: {host: emu0}, b: {host: emu1}}\nlinks: [{ends: [a, b], bandwidth: 10Mbit}]\n"
URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{43,})$")
WAIT = 30.0          # s: only a guard against a hang


def _frames(port: int, token: str, until: float) -> Any:
    """The stream's counters frames, as they come."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stream?token={token}", timeout=WAIT) as stream:
        kind = None
        while time.monotonic() < until:
            line = stream.readline().decode()
            if not line:
                return
            if line.startswith("event: "):
                kind = line[7:].strip()
            elif line.startswith("data: ") and kind == "counters":
                yield json.loads(line[6:])


def test_a_cross_host_links_rate_reaches_the_feed_and_the_node_panel(tmp_path: Path):
    name = "webspan"
    topology, cluster = tmp_path / f"{name}.yaml", tmp_path / "two.yaml"
    topology.write_text(TOPOLOGY)
    cluster.write_text("emulate: 2\n")
    server = ping = None
    try:
        nestbed("up", str(topology), "--cluster", str(cluster), timeout=180)
        server = subprocess.Popen(NESTBED + ["web", name, "--port", "0"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        found = URL.match(server.stdout.readline().strip())          # type: ignore[union-attr]
        assert found, server.stderr.read() if server.poll() is not None else "no URL"  # type: ignore[union-attr]
        port, token = int(found.group(1)), found.group(2)
        ping = subprocess.Popen(NESTBED + ["exec", name, "a", "--", "ping", "-i", "0.2", "-s", "1000", "-c", "40", "b"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen: list[Any] = []
        for frame in _frames(port, token, time.monotonic() + WAIT):    # ~2 × 5 × 1028 B/s ≈ 80 kbit/s, both ways
            seen.append(frame["rate"])
            if (frame["rate"][0] or 0) >= 40:
                break
        else:
            raise AssertionError(f"no frame showed the link's rate: {seen}")
        assert frame["down"] == [] and frame["t"] > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/node/b?token={token}", timeout=WAIT) as answer:
            node = json.loads(answer.read())
        assert node["host"] == "emu1" and [i["name"] for i in node["interfaces"]] == ["eth0"]
        assert len(node["series"]["t"]) >= 2 and max(node["series"]["tx"]) > 0      # b's replies, from emu1
    finally:
        for process in (ping, server):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        nestbed("down", name, check=False, timeout=180)
    assert not state_dir(name).exists(), f"left {state_dir(name)}"
    left = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert [n for n in left if f"-{name}." in n] == [], "namespaces left"
