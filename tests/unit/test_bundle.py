"""nestbed brings itself to a host (cluster/bundle.py): what the bundle holds, that it runs on a bare python3,
and the check and install scripts, run here by sh as a host runs them."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from nestbed import __version__
from nestbed.cluster import bundle
from nestbed.errors import ExperimentError


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> bundle.Bundle:
    return bundle.build(tmp_path_factory.mktemp("cache"))


def test_the_bundle_holds_nestbed_and_its_pure_python_host_side(made: bundle.Bundle) -> None:
    names = set(made.files)
    assert "nestbed/agent/remote.py" in names and "nestbed/realize/guestkit/templates/init.sh" in names
    tops = {name.split("/")[0] for name in names}
    assert {"pyroute2", "qemu", "asyncinotify", "yaml", "typer", "rich"} <= tops
    assert not tops & {"numpy", "networkx", "asyncssh", "matplotlib", "pymetis", "cryptography"}
    assert not [n for n in names if n.endswith((".so", ".pyc")) or "__pycache__" in n]
    assert {"asyncssh", "numpy"} <= set(made.left_out)
    compiled_tops = {name.split("/")[0] for name in made.compiled}
    assert {"grpc", "google"} <= compiled_tops and not compiled_tops & tops       # the etcd client's, apart
    assert made.compiled_tarball is not None and made.compiled_tarball.is_file() and made.abi == bundle.abi()
    assert made.id.startswith(f"{__version__}-") and made.tarball.is_file()


def test_the_web_view_and_its_npm_libraries_stay_on_the_controller(made: bundle.Bundle) -> None:
    web = [name for name in made.files if name.startswith("nestbed/web/") or "node_modules" in name]
    assert not web, f"bundled for hosts: {web[:5]}"
    assert not [name for name in made.files if name.split("/")[0] in ("aiohttp", "yarl", "multidict")]
    assert "aiohttp" in made.left_out
    import nestbed
    package = Path(nestbed.__file__).parent
    assert (package / "web" / "assets.py").is_file()           # there, and left out (not just absent)
    with tarfile.open(made.tarball) as tar:
        assert not [n for n in tar.getnames() if n.startswith("nestbed/web") or "node_modules" in n]


@pytest.mark.parametrize("relative, goes", [
    ("agent/remote.py", True), ("realize/guestkit/templates/init.sh", True), ("web/assets.py", False),
    ("web/node_modules/cytoscape/dist/cytoscape.min.js", False), ("web/static/app.js", False),
    ("agent/__pycache__/remote.cpython-311.pyc", False), ("webhooks.py", True),
])
def test_which_files_of_the_package_go_to_hosts(relative: str, goes: bool) -> None:
    assert bundle.ships(Path(relative)) is goes


def test_the_same_files_make_the_same_bundle(made: bundle.Bundle) -> None:
    again = bundle.build(made.tarball.parent)
    assert again.id == made.id and again.tarball == made.tarball


def test_a_bare_interpreter_runs_the_host_side_from_the_bundle(made: bundle.Bundle, tmp_path: Path) -> None:
    subprocess.run(["tar", "-xzf", str(made.tarball), "-C", str(tmp_path)], check=True)   # as a host unpacks it
    # -S: none of this machine's site packages (the venv's, Debian's), only the bundle and the standard library
    code = ("import nestbed.agent.remote, nestbed.agent.server, nestbed.realize.apply, nestbed.realize.teardown, "
            "nestbed.agent.lifecycle, pyroute2, qemu.qmp, yaml, asyncinotify, nestbed.cli.main; "
            "print(nestbed.agent.remote.default_hello()['version'])")
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


class LocalConn:
    """An asyncssh connection's `run` as this machine's sh runs it (a host is a shell that runs scripts)."""

    class Result:
        def __init__(self, done: subprocess.CompletedProcess[bytes], text: bool):
            self.exit_status = done.returncode
            self.stdout = done.stdout.decode() if text else done.stdout
            self.stderr = done.stderr.decode() if text else done.stderr

    def __init__(self) -> None:
        self.scripts: list[str] = []

    async def run(self, script: str, input: bytes | None = None, encoding: str | None = "utf-8",
                  check: bool = False) -> LocalConn.Result:
        self.scripts.append(script)
        done = subprocess.run(["sh", "-c", script], input=input or b"", capture_output=True)
        return self.Result(done, encoding is not None)


def test_ensure_brings_the_compiled_part_to_a_host_of_the_same_abi_and_it_runs(made: bundle.Bundle,
                                                                             tmp_path: Path) -> None:
    import asyncio
    conn = LocalConn()
    directory = asyncio.run(bundle.ensure(conn, made, "host h1", sys.executable, str(tmp_path)))
    assert directory == f"{tmp_path}/bundles/{made.id}" and len(conn.scripts) == 3    # check, pure, compiled
    assert (Path(directory) / "compiled" / made.abi / ".complete").is_file()
    code = "import nestbed, aetcd, grpc, google.protobuf, nestbed.cluster.etcd.agent; print(grpc.__file__)"
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": directory, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"{directory}/compiled/{made.abi}/")
    again = LocalConn()
    asyncio.run(bundle.ensure(again, made, "host h1", sys.executable, str(tmp_path)))
    assert len(again.scripts) == 1                                   # both parts there: only the check


def test_a_host_of_another_abi_gets_the_pure_part_alone(made: bundle.Bundle, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    other = bundle.Bundle(made.id, made.files, made.tarball, made.left_out, made.compiled, made.compiled_tarball,
                          "cpython-399-riscv64")
    conn = LocalConn()
    directory = asyncio.run(bundle.ensure(conn, other, "host h1", sys.executable, str(tmp_path)))
    assert len(conn.scripts) == 2 and not (Path(directory) / "compiled").exists()


def run_sh(script: str, stdin: bytes = b"") -> tuple[int, str, str]:
    result = subprocess.run(["sh", "-c", script], input=stdin, capture_output=True)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_check_then_install_then_present(made: bundle.Bundle, tmp_path: Path) -> None:
    code, out, _ = run_sh(bundle.check_script(made.id, sys.executable, str(tmp_path)))
    checked = bundle.parse_check(out)
    assert code == 0 and not checked.present and checked.directory == f"{tmp_path}/bundles/{made.id}"
    assert checked.python == ".".join(map(str, sys.version_info[:3]))
    data = made.tarball.read_bytes()
    for _ in range(2):          # a second install of a present id (another controller's, at once) succeeds too
        code, _, err = run_sh(f"mkdir -p {tmp_path}/bundles; " + bundle.install_script(checked.directory), data)
        assert code == 0, err
    assert (Path(checked.directory) / "nestbed" / "agent" / "remote.py").is_file()
    assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == [made.id]      # no part left behind
    assert bundle.parse_check(run_sh(bundle.check_script(made.id, sys.executable, str(tmp_path)))[1]).present


def test_a_broken_tarball_installs_nothing(made: bundle.Bundle, tmp_path: Path) -> None:
    directory = f"{tmp_path}/bundles/{made.id}"
    code, _, _ = run_sh(f"mkdir -p {tmp_path}/bundles; " + bundle.install_script(directory), b"not a tarball")
    assert code != 0 and not Path(directory).exists()


def test_the_state_root_is_the_hosts_own_unless_the_cluster_file_says() -> None:
    code, out, _ = run_sh("NESTBED_STATE_DIR=/srv/x; export NESTBED_STATE_DIR; "
                          + bundle.check_script("v-1", "no-such-python", None))
    checked = bundle.parse_check(out)
    assert checked.directory == "/srv/x/bundles/v-1" and checked.python is None
    out = run_sh("unset NESTBED_STATE_DIR; " + bundle.check_script("v-1", "sh", None))[1]
    assert bundle.parse_check(out).directory == "/var/lib/nestbed/bundles/v-1"


@pytest.mark.parametrize("found, says", [
    (None, "host h1 has no python3: nestbed .* needs Python 3.11 or newer there"),
    ("3.9.2", "host h1: its python3 is Python 3.9.2; nestbed .* needs 3.11 or newer there"),
])
def test_an_interpreter_too_old_or_missing_is_one_line(found: str | None, says: str) -> None:
    with pytest.raises(ExperimentError, match=says):
        bundle.refuse_python("host h1", "python3", found)
    bundle.refuse_python("host h1", "python3", "3.11.2")          # Debian 12's: fine
