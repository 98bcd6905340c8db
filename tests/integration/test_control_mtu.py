"""The control network joined across two emulated hosts on a 1500-byte underlay runs at the tunnel's 1450 on every
member: a DF packet too big for the tunnel is refused where it is sent, with "message too long", never sent and
dropped without a word at the tunnel's bridge; one that fits crosses. Checked from a node's ctl0 (process nodes
with `control: true`, one per host) and from the host's own control address; the VMs' control NICs get the same
MTU from qemu's host_mtu (tests/unit/test_control_mtu.py: VM boots under TCG are too slow for this test)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import NESTBED, PREFIX, nestbed, state_dir

pytestmark = pytest.mark.needs("root", "sshd")

TOPOLOGY = """
name: {name}
nodes:
  w: {{control: true, host: emu0}}
  a: {{host: emu0}}
  x: {{control: true, host: emu1}}
  b: {{host: emu1}}
links:
  - {{ends: [w, a]}}
  - {{ends: [x, b]}}
"""


def flat(text: str) -> str:
    return " ".join(text.split())


def ping(*where: str, size: int, to: str) -> subprocess.CompletedProcess:
    return subprocess.run([*where, "ping", "-c1", "-W2", "-M", "do", "-s", str(size), to], capture_output=True,
                          text=True, timeout=30)


def test_a_df_ping_too_big_for_the_tunnel_is_refused_with_a_message_and_one_that_fits_crosses(tmp_path: Path):
    name = "ctlmtu"
    topology, cluster = tmp_path / f"{name}.yaml", tmp_path / "lab.yaml"
    topology.write_text(TOPOLOGY.format(name=name))
    cluster.write_text("emulate: 2\nunderlay_mtu: 1500\n")
    try:
        up = flat(nestbed("up", str(topology), "--cluster", str(cluster), timeout=180).stdout)
        assert "control network: MTU 1450 on its members on every host" in up, up
        shown = nestbed("exec", name, "x", "--", "ip", "-4", "-o", "addr", "show", "ctl0").stdout
        x_address = re.search(r"inet (172\.30\.\d+\.\d+)/", shown).group(1)          # type: ignore[union-attr]
        node = [*NESTBED, "exec", name, "w", "--"]                       # w's ctl0, on emu0
        host = ["ip", "netns", "exec", f"{PREFIX}-{name}.emu0"]          # emu0's own namespace: control0's address
        for where in (node, host):
            too_big = ping(*where, size=1472, to=x_address)             # 1500 on the wire: more than 1450
            said = (too_big.stdout + too_big.stderr).lower()
            assert too_big.returncode != 0 and "message too long" in said and "1450" in said, said
            fits = ping(*where, size=1422, to=x_address)                # 1450 exactly
            assert fits.returncode == 0, fits.stdout + fits.stderr
        links = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-{name}.emu0", "ip", "-o", "link"],
                               capture_output=True, text=True, check=True).stdout
        control = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\d+: ([^:@]+)[^\n]*? mtu (\d+)", links, re.M)
                   if m.group(1).startswith(f"{PREFIX}0")}            # emu0's host: its objects' prefix nt0
        assert control and set(control.values()) == {1450}, links       # bridge, ctl0 host end, tunnel
        inside = nestbed("exec", name, "w", "--", "ip", "-o", "link", "show", "ctl0").stdout
        assert " mtu 1450 " in inside
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert not state_dir(name).exists()


VMS = """
name: {name}
nodes:
  q: {{kind: qemu, host: emu1}}
  s: {{kind: qemu, host: emu0}}
links:
  - {{ends: [q, s]}}
"""


@pytest.mark.needs("qemu")
def test_the_vms_control_nics_run_at_the_tunnels_mtu(tmp_path: Path):
    """qemu's host_mtu gives each VM's control NIC 1450 before the guest configures it: a DF ping from one VM to
    the other's control address across the hosts is refused at 1472 with a message and crosses at 1422."""
    name = "ctlmtuvm"
    topology, cluster = tmp_path / f"{name}.yaml", tmp_path / "lab.yaml"
    topology.write_text(VMS.format(name=name))
    cluster.write_text("emulate: 2\nunderlay_mtu: 1500\n")
    try:
        nestbed("up", str(topology), "--cluster", str(cluster), timeout=280)
        assert " mtu 1450 " in nestbed("exec", name, "q", "--", "ip", "-o", "link", "show", "ctl0").stdout
        find = "a=$(awk '$2 ~ /^s[.]/ {print $1}' /etc/hosts); "
        too_big = nestbed("exec", name, "q", "--", "sh", "-c", find + "ping -c1 -W3 -M do -s 1472 $a", check=False,
                          timeout=60)
        said = (too_big.stdout + too_big.stderr).lower()
        assert too_big.returncode != 0 and "message too long" in said, said
        fits = nestbed("exec", name, "q", "--", "sh", "-c", find + "ping -c1 -W5 -M do -s 1422 $a", check=False,
                       timeout=60)
        assert fits.returncode == 0, fits.stdout + fits.stderr
    finally:
        nestbed("down", name, check=False, timeout=180)
    assert not state_dir(name).exists()
