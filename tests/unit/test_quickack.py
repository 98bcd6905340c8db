"""apps/quickack: every route of the node is changed to quickack 1, with a fake `ip` on PATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FAKE_IP = """#!/bin/sh
echo "$*" >> "$IP_LOG"
if [ "$1 $2 $3" = "-o route show" ]; then
    printf '%s\\n' "default via 10.0.0.13 dev eth0" \\
        "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1 quickack 0"
    exit 0
fi
case "$*" in *10.9.9.0*) echo "RTNETLINK answers: No such process" >&2; exit 2;; esac
exit 0
"""


def run_quickack(tmp_path: Path, extra_route: bool = False) -> tuple[int, list[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = FAKE_IP if not extra_route else FAKE_IP.replace('"10.0.0.0/24', '"10.9.9.0/24 dev eth1" "10.0.0.0/24')
    (bin_dir / "ip").write_text(script)
    (bin_dir / "ip").chmod(0o755)
    log = tmp_path / "ip.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "IP_LOG": str(log)}
    program = "from nestbed.apps import quickack; print(quickack.ack_at_once('ircd'))"
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=30)
    return int(result.stdout.strip()), log.read_text().splitlines(), result.stderr


def test_every_route_gets_quickack_1_in_place_of_its_own(tmp_path):
    changed, calls, err = run_quickack(tmp_path)
    assert changed == 2 and err == ""
    assert calls == ["-o route show",
                     "route change default via 10.0.0.13 dev eth0 quickack 1",
                     "route change 10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1 quickack 1"]


def test_a_route_that_cannot_change_is_one_line_and_the_rest_go_on(tmp_path):
    changed, calls, err = run_quickack(tmp_path, extra_route=True)
    assert changed == 2 and len(calls) == 4
    assert err.strip() == "ircd: quickack on route '10.9.9.0/24 dev eth1': RTNETLINK answers: No such process"
