"""`nestbed agent install` without hosts: the systemd unit's text (pure), the scripts a host runs (run here by sh
against a directory standing for an image's root), the per-host flow over a transport that runs them here, and
bad input as one line from the CLI (cluster/agentunit.py, cli/cmd_agent.py, cli/agent_deploy.py)."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nestbed import __version__
from nestbed.cli import main as cli_main
from nestbed.cluster import agentunit, real
from nestbed.cluster.agentunit import MARKER, UNIT_PATH, UnitSpec, render_unit
from nestbed.cluster.ssh import ConnectInfo
from nestbed.errors import ExperimentError

BUNDLE = "/var/lib/nestbed/bundles/0.9.0-0123456789ab"
SPEC = UnitSpec("h7", ("http://10.0.0.5:2379", "http://10.0.0.6:2379"), bundle_dir=BUNDLE,
                bundle_id="0.9.0-0123456789ab")


def sections(text: str) -> dict[str, dict[str, str]]:
    """The unit as systemd reads it: [Section] then Key=Value lines; comments dropped."""
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = found.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            assert key not in current, f"{key} twice"
            current[key] = value
    return found


# -- the unit ------------------------------------------------------------------------------------------------------
def test_the_unit_runs_the_brought_bundle_as_the_agent_of_its_host() -> None:
    text = render_unit(SPEC)
    unit = sections(text)
    assert text.splitlines()[0].startswith(MARKER)
    assert "0.9.0-0123456789ab" in text.splitlines()[0] and f"nestbed {__version__}" in text.splitlines()[0]
    assert "h7" in unit["Unit"]["Description"]
    assert unit["Unit"]["After"] == "network-online.target" and unit["Unit"]["Wants"] == "network-online.target"
    assert unit["Service"]["Restart"] == "always"
    assert unit["Service"]["KillMode"] == "process"      # a restart leaves the experiments' processes alone
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert shlex.split(unit["Service"]["ExecStart"]) == [
        "/usr/bin/env", f"PYTHONPATH={BUNDLE}", "python3", "-S", "-m", "nestbed.cli.main", "agent",
        "--etcd", "http://10.0.0.5:2379,http://10.0.0.6:2379", "--host", "h7"]


def test_the_hosts_own_root_prefix_and_interpreter_go_into_the_command() -> None:
    own = UnitSpec("lab-2", ("http://e:2379",), python="/opt/nestbed/bin/python", state_dir="/srv/nb", prefix="nq")
    argv = shlex.split(sections(render_unit(own))["Service"]["ExecStart"])
    assert argv == ["/usr/bin/env", "NESTBED_STATE_DIR=/srv/nb", "NESTBED_PREFIX=nq", "/opt/nestbed/bin/python",
                    "-m", "nestbed.cli.main", "agent", "--etcd", "http://e:2379", "--host", "lab-2"]
    assert "-S" not in argv and not any(a.startswith("PYTHONPATH=") for a in argv)   # the host's own nestbed
    assert "the host's own nestbed" in render_unit(own).splitlines()[0]


@pytest.mark.parametrize(("word", "written"), [
    ("plain/path-1.2:x", "plain/path-1.2:x"),
    ("50%", "50%%"),                        # a specifier to systemd
    ("$HOME", '"$$HOME"'),                  # a variable to systemd
    ("a b", '"a b"'),
    ('say "hi"\\', '"say \\"hi\\"\\\\"'),
])
def test_words_reach_the_program_as_they_are(word: str, written: str) -> None:
    assert agentunit.systemd_word(word) == written


def test_etcd_endpoints_are_checked() -> None:
    assert agentunit.parse_etcd("http://10.0.0.5:2379, https://e.lab:2379/") == (
        "http://10.0.0.5:2379", "https://e.lab:2379/")
    assert agentunit.parse_etcd("unix:///run/etcd.sock") == ("unix:///run/etcd.sock",)
    for bad in ("10.0.0.5:2379", "http://", "http://a:1,,http://b:2", "ftp://x", "http://a b:1"):
        with pytest.raises(ExperimentError, match="not an etcd endpoint"):
            agentunit.parse_etcd(bad)


# -- the scripts, run by sh against an image root ------------------------------------------------------------------
def sh(script: str, stdin: str | None = None) -> str:
    done = subprocess.run(["sh", "-c", script], input=stdin, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def test_write_enable_replace_and_remove_in_an_image_root(image: Path) -> None:
    unit, link = image / UNIT_PATH.lstrip("/"), image / "etc/systemd/system/multi-user.target.wants" / agentunit.UNIT
    assert sh(agentunit.probe_script(str(image))) == "absent"
    assert sh(agentunit.write_script(str(image)), render_unit(SPEC)) == "installed"
    assert unit.read_text() == render_unit(SPEC) and oct(unit.stat().st_mode & 0o777) == "0o644"
    assert link.is_symlink() and str(link.readlink()) == UNIT_PATH         # what `systemctl enable` makes
    assert sh(agentunit.probe_script(str(image))) == "ours"
    newer = UnitSpec("h7", ("http://10.0.0.9:2379",), bundle_dir=BUNDLE, bundle_id=SPEC.bundle_id)
    assert sh(agentunit.write_script(str(image)), render_unit(newer)) == "updated"
    assert unit.read_text() == render_unit(newer)
    assert sorted(p.name for p in unit.parent.iterdir()) == sorted([agentunit.UNIT, "multi-user.target.wants"])
    assert sh(agentunit.remove_script(str(image))) == "removed"
    assert list((image / "etc/systemd/system").iterdir()) == []              # the link, its empty directory, the unit
    assert sh(agentunit.remove_script(str(image))) == "absent"
    assert sh(agentunit.probe_script(str(image))) == "absent"


def test_a_unit_nestbed_did_not_write_is_never_replaced_nor_removed(image: Path) -> None:
    unit = image / UNIT_PATH.lstrip("/")
    theirs = f"[Unit]\nDescription=someone else's\n# {MARKER} only the first line counts\n"
    unit.write_text(theirs)
    assert sh(agentunit.probe_script(str(image))) == "foreign"
    assert sh(agentunit.write_script(str(image)), render_unit(SPEC)) == "foreign"
    assert sh(agentunit.remove_script(str(image))) == "foreign"
    assert unit.read_text() == theirs and sorted(p.name for p in unit.parent.iterdir()) == [agentunit.UNIT]


def test_a_root_without_systemds_directory_is_refused(tmp_path: Path) -> None:
    assert sh(agentunit.probe_script(str(tmp_path))) == "noroot"
    assert list(tmp_path.iterdir()) == []


def test_live_scripts_start_and_stop_through_systemctl() -> None:
    """On a host's own / (not run here: it is this machine's), what systemctl is asked, in order."""
    write, remove = agentunit.write_script(None), agentunit.remove_script(None)
    assert write.index("systemctl daemon-reload") < write.index(f"systemctl enable --now {agentunit.UNIT}")
    assert f'if [ "$was" = updated ]; then if ! said=$(systemctl restart {agentunit.UNIT} 2>&1)' in write
    assert remove.index(f"systemctl disable --now {agentunit.UNIT}") < remove.index('rm -f "$u"') \
        < remove.index("systemctl daemon-reload", remove.index('rm -f "$u"'))
    assert "/run/systemd/system" in agentunit.probe_script(None)


# -- one host's flow, over a transport that runs the scripts here --------------------------------------------------
class HereShell:
    """SshHost's shell/bring/close, run on this machine (an emulated host's file system is this machine's)."""

    def __init__(self, bring: bool = True, answer: str | None = None):
        self.label = "host h1 (192.0.2.1)"
        self.info = ConnectInfo("192.0.2.1", bring=bring, python="python3" if bring else "/opt/nb/bin/python")
        self.answer, self.closed = answer, False
        self.scripts: list[str] = []
        self.brought: list[str | None] = []

    def shell(self, script: str, stdin: str | None = None, seconds: float = 60) -> tuple[int, str, str]:
        self.scripts.append(script)
        if self.answer is not None:
            return 0, self.answer + "\n", ""
        done = subprocess.run(["sh", "-c", script], input=stdin, capture_output=True, text=True, timeout=30)
        return done.returncode, done.stdout, done.stderr

    def bring(self, state_dir: str | None = None) -> str:
        self.brought.append(state_dir)
        directory = Path(str(state_dir)) / "bundles" / "0.9.0-feedfacecafe"
        directory.mkdir(parents=True)
        return str(directory)

    def close(self) -> None:
        self.closed = True


def with_transport(monkeypatch: pytest.MonkeyPatch, transport: HereShell) -> real.RealHost:
    monkeypatch.setattr(real.RealHost, "transport", lambda self: transport)
    return real.RealHost("h1", "root@192.0.2.1", "192.0.2.1", state_dir="/srv/nb")


def test_install_into_an_image_root_brings_nestbed_there_and_names_it_as_the_image_will(
        monkeypatch: pytest.MonkeyPatch, image: Path) -> None:
    transport = HereShell()
    host = with_transport(monkeypatch, transport)
    result = agentunit.install_host(host, ("http://e:2379",), str(image))
    assert result.ok and result.line.startswith("h1: installed ") and "\n" not in result.line, result.line
    assert transport.brought == [f"{image}/srv/nb"] and transport.closed
    unit = sections((image / UNIT_PATH.lstrip("/")).read_text())
    assert shlex.split(unit["Service"]["ExecStart"])[:4] == [
        "/usr/bin/env", "PYTHONPATH=/srv/nb/bundles/0.9.0-feedfacecafe", "NESTBED_STATE_DIR=/srv/nb", "python3"]
    assert (image / "srv/nb/bundles/0.9.0-feedfacecafe").is_dir()
    result = agentunit.uninstall_host(host, str(image))
    assert result.ok and "removed" in result.line
    assert not (image / UNIT_PATH.lstrip("/")).exists()


@pytest.mark.parametrize(("word", "said"), [("nosystemd", "no systemd runs there"), ("foreign", "is not nestbed's")])
def test_a_refusing_host_gets_nothing_not_even_the_bundle(monkeypatch: pytest.MonkeyPatch, word: str,
                                                          said: str) -> None:
    transport = HereShell(answer=word)
    result = agentunit.install_host(with_transport(monkeypatch, transport), ("http://e:2379",))
    assert not result.ok and result.line.startswith("h1: ") and said in result.line
    assert transport.brought == [] and len(transport.scripts) == 1 and transport.closed     # the probe alone
    result = agentunit.uninstall_host(with_transport(monkeypatch, transport))
    assert not result.ok and said in result.line and len(transport.scripts) == 2


def test_a_host_with_its_own_nestbed_gets_no_bundle(monkeypatch: pytest.MonkeyPatch, image: Path) -> None:
    transport = HereShell(bring=False)
    result = agentunit.install_host(with_transport(monkeypatch, transport), ("http://e:2379",), str(image))
    assert result.ok and transport.brought == []
    argv = shlex.split(sections((image / UNIT_PATH.lstrip("/")).read_text())["Service"]["ExecStart"])
    assert argv[:4] == ["/usr/bin/env", "NESTBED_STATE_DIR=/srv/nb", "/opt/nb/bin/python", "-m"]


def test_a_failing_command_there_is_one_line_of_that_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    transport = HereShell()
    monkeypatch.setattr(agentunit, "probe_script", lambda root: "echo 'tar: cannot write' >&2; exit 3")
    result = agentunit.install_host(with_transport(monkeypatch, transport), ("http://e:2379",), str(tmp_path))
    assert not result.ok and result.line == "h1: tar: cannot write"


# -- SshHost: commands beside the agent, on its one connection ----------------------------------------------------
def test_commands_and_the_bundle_share_the_hosts_one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from nestbed.cluster import bundle, ssh

    class Ran:
        def __init__(self, stdout: str):
            self.exit_status, self.stdout, self.stderr = 0, stdout, ""

    class Connection:
        def __init__(self) -> None:
            self.ran: list[tuple[str, str | None]] = []

        async def run(self, command: str, input: str | None = None, check: bool = False) -> Ran:
            self.ran.append((command, input))
            return Ran(f"ran {len(self.ran)}\n")

        def close(self) -> None:
            pass

        async def wait_closed(self) -> None:
            pass
    opened: list[Connection] = []

    async def open_connection(self: ssh.SshHost) -> None:
        opened.append(Connection())
        self._conn = opened[-1]

    async def ensure(conn: Any, made: Any, label: str, python: str, state_dir: str | None) -> str:
        assert conn is opened[0]
        return f"{state_dir}/bundles/{made.id}"
    monkeypatch.setattr(ssh.SshHost, "_open", open_connection)
    monkeypatch.setattr(ssh, "built_bundle", lambda: bundle.Bundle("0.9.0-abc", {}, Path("/nonexistent"), ()))
    monkeypatch.setattr(bundle, "ensure", ensure)
    host = ssh.SshHost("h1", ConnectInfo("192.0.2.1", bring=True, state_dir="/srv/nb"))
    assert host.shell("echo probe") == (0, "ran 1\n", "")
    assert host.bring("/img/srv/nb") == "/img/srv/nb/bundles/0.9.0-abc"
    assert host.bring() == "/srv/nb/bundles/0.9.0-abc"
    assert host.shell("cat > unit", "text")[1] == "ran 2\n"
    assert len(opened) == 1 and opened[0].ran == [("echo probe", None), ("cat > unit", "text")]
    host.close()
    assert host._conn is None


# -- the CLI -------------------------------------------------------------------------------------------------------
def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["nestbed", *args])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return int(exited.value.code or 0), err.strip()


@pytest.mark.parametrize(("cluster", "args", "said"), [
    ("emulate: 2\n", ["--etcd", "http://e:2379"], "lists no real hosts"),
    ("hosts: {h1: {ssh: root@192.0.2.1}}\n", ["--etcd", "e:2379"], "not an etcd endpoint"),
    ("hosts: {h1: {ssh: root@192.0.2.1}}\n", ["--etcd", "http://e:2379", "--root", "image"], "absolute path"),
    ("hosts: {h1: {ssh: root@192.0.2.1}, h2: {ssh: root@192.0.2.2}}\n", ["--etcd", "http://e:2379", "--root",
                                                                       "/srv/image"], "put {host} in it"),
])
def test_bad_input_is_one_line_before_any_host_is_asked(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        cluster: str, args: list[str], said: str) -> None:
    monkeypatch.setattr(real.RealHost, "transport", lambda self: pytest.fail("a host was asked"))
    (tmp_path / "c.yaml").write_text(cluster)
    code, err = run_main(capsys, monkeypatch, "agent", "install", "--cluster", str(tmp_path / "c.yaml"), *args)
    assert code != 0 and said in err, err


def test_every_host_gets_its_line_and_a_refusal_fails_the_command(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    answers = {"h1": "nosystemd", "h2": "absent"}

    def transport(self: real.RealHost) -> Any:
        return HereShell(answer=answers[self.name])
    monkeypatch.setattr(real.RealHost, "transport", transport)
    (tmp_path / "c.yaml").write_text("hosts: {h1: {ssh: root@192.0.2.1}, h2: {ssh: root@192.0.2.2}}\n")
    monkeypatch.setattr(sys, "argv", ["nestbed", "agent", "uninstall", "--cluster", str(tmp_path / "c.yaml")])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert exited.value.code == 1
    assert [line.split(":")[0] for line in lines] == ["h1", "h2"], lines
    assert "no systemd" in lines[0] and "nothing to remove" in lines[1]


def test_the_bare_agent_command_needs_its_flags(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = run_main(capsys, monkeypatch, "agent", "--etcd", "http://127.0.0.1:9")     # never reached
    assert code != 0 and "--host NAME" in err
