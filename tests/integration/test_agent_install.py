"""`nestbed agent install` / `uninstall` against two hosts reached over SSH as real hosts are (a cluster file with
`ssh:`, the user's key and known_hosts; emulated hosts made for the test, the CLI in their underlay namespace).

They run no systemd (nor does this machine), so the live install is refused in one line per host with nothing
written, not even the bundle. What a unit does there is tested two ways instead: over SSH with --root (the unit and
nestbed's bundle written into a directory standing for each host's image, then the unit's own command run from
it), and the live scripts (systemctl called in order) in a private mount namespace where a fake systemctl and
scratch directories stand over /usr/bin/systemctl, /etc/systemd/system and /run/systemd — not over SSH: the
hosts' sshd serves this machine's own mount namespace. Last, the units' command lines are started in their hosts
as systemd would, and an experiment is brought up and down on the real hosts through etcd by them."""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NESTBED
from nestbed import paths
from nestbed.cluster import agentunit, emulated
from nestbed.cluster.agentunit import UNIT, UNIT_PATH

pytestmark = pytest.mark.needs("root", "sshd")

HOSTS = ["r0", "r1"]
ETCD = "http://127.0.0.1:2379"


class Lab:
    def __init__(self, tmp: Path):
        self.name = f"ai{uuid.uuid4().hex[:6]}"
        self.hosts = emulated.up(self.name, len(HOSTS))
        self.home = tmp / "home"
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        shutil.copy(self.hosts.client_key, self.home / ".ssh" / "id_ed25519")
        os.chmod(self.home / ".ssh" / "id_ed25519", 0o600)
        shutil.copy(self.hosts.known_hosts, self.home / ".ssh" / "known_hosts")
        self.roots = {name: tmp / f"{name}-state" for name in HOSTS}
        lines = ["hosts:"] + [f"  {name}: {{ssh: root@{h.address}, state_dir: {self.roots[name]}, prefix: nv{i}}}"
                              for i, (name, h) in enumerate(zip(HOSTS, self.hosts.hosts))]
        self.cluster = tmp / "real.yaml"
        self.cluster.write_text("\n".join(lines) + "\n")

    def nestbed(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.hosts.underlay_netns, *NESTBED, *args],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(self.home)})


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cache = paths.state_root() / "bundles"          # where the controller (the CLI) builds its bundle's tarball
    had_cache = cache.exists()
    before = set(cache.iterdir()) if had_cache else set()
    made = Lab(tmp_path_factory.mktemp("agentinstall"))
    try:
        yield made
    finally:
        gone = emulated.down(made.name)
        for built in (set(cache.iterdir()) if cache.exists() else set()) - before:
            built.unlink()
        if not had_cache and cache.exists():
            cache.rmdir()
        assert gone is None or not gone.left, gone


def written_anywhere(lab: Lab) -> list[Path]:
    """The unit on this machine's (= the hosts') own /, and anything in the hosts' state roots."""
    found = [Path(UNIT_PATH)] if os.path.lexists(UNIT_PATH) else []
    found += [p for root in lab.roots.values() if root.exists() for p in root.rglob("*")]
    return found


def test_hosts_without_systemd_refuse_in_one_line_each_and_get_nothing(lab: Lab) -> None:
    assert written_anywhere(lab) == []
    for verb in (["install", "--etcd", ETCD], ["uninstall"]):
        done = lab.nestbed("agent", *verb[:1], "--cluster", str(lab.cluster), *verb[1:])
        lines = done.stdout.strip().splitlines()
        assert done.returncode == 1 and "Traceback" not in done.stderr, done
        assert sorted(line.split(":")[0] for line in lines) == HOSTS, lines
        assert all("no systemd runs there" in line and "nothing written" in line for line in lines), lines
        assert written_anywhere(lab) == []            # not the unit, not the bundle


def test_a_unit_written_into_each_hosts_image_root_runs_the_brought_nestbed(lab: Lab, tmp_path: Path) -> None:
    images = {name: tmp_path / "images" / name for name in HOSTS}
    for image in images.values():
        (image / "etc/systemd/system").mkdir(parents=True)
    root = str(tmp_path / "images" / "{host}")
    done = lab.nestbed("agent", "install", "--cluster", str(lab.cluster), "--etcd", ETCD, "--root", root)
    assert done.returncode == 0, done
    lines = sorted(done.stdout.strip().splitlines())
    assert [line.split(":")[0] for line in lines] == HOSTS and all(" installed " in line for line in lines), lines
    for name, image in images.items():
        unit = (image / UNIT_PATH.lstrip("/")).read_text()
        assert unit.startswith(agentunit.MARKER)
        link = image / "etc/systemd/system/multi-user.target.wants" / UNIT
        assert link.is_symlink() and str(link.readlink()) == UNIT_PATH
        start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
        argv = shlex.split(start.removeprefix("ExecStart="))
        bundle = next(a for a in argv if a.startswith("PYTHONPATH=")).removeprefix("PYTHONPATH=")
        assert bundle.startswith(f"{lab.roots[name]}/bundles/")             # the path the image will have
        assert argv[argv.index("--host") + 1] == name and argv[argv.index("--etcd") + 1] == ETCD
        assert (image / bundle.lstrip("/") / ".complete").is_file()        # brought into the image, complete
        # the unit's own command line, its bundle read from the image (--help: it must not serve)
        mapped = [f"PYTHONPATH={image}{bundle}" if a.startswith("PYTHONPATH=") else a for a in argv]
        ran = subprocess.run([*mapped, "--help"], capture_output=True, text=True, timeout=60, cwd="/")
        assert ran.returncode == 0 and "install" in ran.stdout and "--host" in ran.stdout, ran
    assert written_anywhere(lab) == []            # the hosts' own / and state roots untouched

    done = lab.nestbed("agent", "uninstall", "--cluster", str(lab.cluster), "--root", root)
    assert done.returncode == 0 and all("removed" in line for line in done.stdout.splitlines()), done
    for image in images.values():
        assert list((image / "etc/systemd/system").iterdir()) == []
    done = lab.nestbed("agent", "uninstall", "--cluster", str(lab.cluster), "--root", root)
    assert done.returncode == 0 and all("nothing to remove" in line for line in done.stdout.splitlines()), done


FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> {log}
case "$1" in enable) [ -e {fail} ] && {{ echo "Failed to enable unit: boom" >&2; exit 1; }};; esac
echo "Created symlink (chatter)"
exit 0
"""


def test_the_live_scripts_drive_systemctl_in_a_private_mount_namespace(tmp_path: Path) -> None:
    log, fail = tmp_path / "systemctl.log", tmp_path / "fail-enable"
    fake = tmp_path / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(log=log, fail=fail))
    fake.chmod(0o755)
    units, run_systemd = tmp_path / "etc-systemd-system", tmp_path / "run-systemd"
    units.mkdir()
    (run_systemd / "system").mkdir(parents=True)
    mounts = (f"mount --bind {fake} /usr/bin/systemctl && mount --bind {units} /etc/systemd/system && "
              f"mount --bind {run_systemd} /run/systemd && exec sh -c \"$1\"")

    def there(script: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts, "sh", script],
                              input=stdin, capture_output=True, text=True, timeout=30)

    def calls() -> list[str]:
        said = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return said

    spec = agentunit.UnitSpec("h1", (ETCD,), bundle_dir="/var/lib/nestbed/bundles/x", bundle_id="x")
    assert there(agentunit.probe_script(None)).stdout.split() == ["absent"]
    done = there(agentunit.write_script(None), agentunit.render_unit(spec))
    assert done.stdout.split() == ["installed"], done
    assert calls() == ["daemon-reload", f"enable --now {UNIT}"]
    assert (units / UNIT).read_text() == agentunit.render_unit(spec)
    assert there(agentunit.probe_script(None)).stdout.split() == ["ours"]
    assert there(agentunit.write_script(None), agentunit.render_unit(spec)).stdout.split() == ["updated"]
    assert calls() == ["daemon-reload", f"enable --now {UNIT}", f"restart {UNIT}"]
    fail.touch()
    done = there(agentunit.write_script(None), agentunit.render_unit(spec))
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == "Failed to enable unit: boom", done
    fail.unlink()
    calls()
    assert there(agentunit.remove_script(None)).stdout.split() == ["removed"]
    assert calls() == [f"disable --now {UNIT}", "daemon-reload", f"reset-failed {UNIT}"]
    assert list(units.iterdir()) == []
    (units / UNIT).write_text("[Unit]\nDescription=theirs\n")
    assert there(agentunit.remove_script(None)).stdout.split() == ["foreign"] and calls() == []
    assert (units / UNIT).read_text() == "[Unit]\nDescription=theirs\n"
    assert not os.path.lexists(UNIT_PATH) and not Path("/run/systemd/system").exists()    # the machine's own


TOPOLOGY = """
name: {name}
nodes:
  a: {{host: r0}}
  b: {{host: r1}}
  c: {{host: r1}}
lans:
  lan0: {{members: [a, b], bandwidth: 20Mbit}}
links:
  - {{name: l1, ends: [a, c]}}
"""


@pytest.mark.needs("etcd")
def test_the_units_agents_serve_an_experiment_on_real_hosts_through_etcd(lab: Lab, tmp_path: Path) -> None:
    """What a unit starts on each real host (its command line, from the image it was installed into) is the etcd
    engine's agent for that host: `up` on the real hosts goes through it (host ids are the hosts' own names), pings
    cross, and `down` leaves nothing of the experiment on the hosts or in etcd."""
    import json
    import signal

    from etcd_server import EtcdServer, keys_under
    name = f"ru{uuid.uuid4().hex[:5]}"
    images = {host: tmp_path / "images" / host for host in HOSTS}
    for image in images.values():
        (image / "etc/systemd/system").mkdir(parents=True)
    agents: list[subprocess.Popen[bytes]] = []
    with EtcdServer() as etcd:
        try:
            root = str(tmp_path / "images" / "{host}")
            done = lab.nestbed("agent", "install", "--cluster", str(lab.cluster), "--etcd", etcd.unix_url,
                               "--root", root)
            assert done.returncode == 0, done
            for host, image in images.items():         # as systemd would start each unit, in its host
                unit = (image / UNIT_PATH.lstrip("/")).read_text()
                argv = shlex.split(next(line for line in unit.splitlines()
                                        if line.startswith("ExecStart=")).removeprefix("ExecStart="))
                mapped = [f"PYTHONPATH={image}{a.removeprefix('PYTHONPATH=')}" if a.startswith("PYTHONPATH=") else a
                          for a in argv]
                log = open(tmp_path / f"{host}-agent.log", "wb")
                agents.append(subprocess.Popen(["ip", "netns", "exec", lab.hosts.hosts[HOSTS.index(host)].netns,
                                                *mapped], stdout=log, stderr=log, cwd="/", start_new_session=True))
            cluster = tmp_path / "real-etcd.yaml"
            cluster.write_text(lab.cluster.read_text() + f"engine: {{etcd: ['{etcd.unix_url}']}}\n")
            topology = tmp_path / "t.yaml"
            topology.write_text(TOPOLOGY.format(name=name))
            up = lab.nestbed("up", str(topology), "--cluster", str(cluster))
            assert up.returncode == 0, up
            assert "is up on 2 hosts" in " ".join(up.stdout.split())
            for src, dst in [("a", "b"), ("a", "c"), ("b", "a")]:
                ping = lab.nestbed("exec", name, src, "--", "ping", "-c1", "-W2", dst)
                assert ping.returncode == 0, ping
            status = " ".join(lab.nestbed("status", name).stdout.split())
            assert "etcd: generation 1, 2 hosts: 2 ready" in status, status
            assert sorted(k.decode().split("/")[-1] for k in
                          keys_under(etcd.url, f"/nestbed/exp/{name}/status/".encode())) == HOSTS
            for host in HOSTS:                          # each host's agent made its part, under its own root
                plan = json.loads((lab.roots[host] / name / "plan.json").read_text())
                assert plan["host"] == host
            down = lab.nestbed("down", name)
            assert down.returncode == 0, down
            assert not any(f"-{name}." in n for n in os.listdir("/run/netns")), "namespaces left"
            assert keys_under(etcd.url, f"/nestbed/exp/{name}/".encode()) == []
            assert all(not (lab.roots[host] / name).exists() for host in HOSTS)
        finally:
            lab.nestbed("down", name)
            for agent in agents:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(agent.pid, signal.SIGTERM)
                agent.wait(timeout=30)
            lab.nestbed("agent", "uninstall", "--cluster", str(lab.cluster), "--root", root)
    for host in HOSTS:                                  # what the controller brought for the test's up
        shutil.rmtree(lab.roots[host], ignore_errors=True)
