"""What the machine refuses is one line from the CLI, never a traceback: an unwritable -o, a damaged store, a
file the verb cannot read; a bug keeps its traceback (main() turns OSError and sqlite3 errors into lines, nothing
else)."""
from __future__ import annotations

import io
import json
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from nestbed.agent.store import CounterRow, Store
from nestbed.cli import main as cli_main
from nestbed.cluster.local import LocalHost
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan

TOPOLOGY = "name: lab\nnodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n"


def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["nestbed", *args])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return int(exited.value.code or 0), err.strip()


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An experiment 'lab' that is up, with a plan, on a fake transport whose nodes answer tar with one file."""
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    directory = tmp_path / "state" / "lab"
    directory.mkdir(parents=True)
    plan = compile_plan(load_topology_text(textwrap.dedent(TOPOLOGY), "lab.yaml"))
    (directory / "plan.json").write_text(plan.to_json())
    (directory / "status.json").write_text(json.dumps({"state": "up"}))

    class Nodes:
        def exec(self, node, argv, on_out, on_err):
            payload = io.BytesIO()
            with tarfile.open(fileobj=payload, mode="w") as archive:
                info = tarfile.TarInfo("tmp/out.txt")
                info.size = 2
                archive.addfile(info, io.BytesIO(b"hi"))
            on_out(payload.getvalue())
            return 0

        def close(self):
            pass
    monkeypatch.setattr(LocalHost, "control", lambda self, name: Nodes())
    return directory


def damaged_store(path: Path) -> Path:
    store = Store(path)
    for t in range(400):
        store.add_counters(float(t), [CounterRow(f"n{i}", "eth0", t, t, t, t) for i in range(20)])
    store.add_record("sh", "local", {"exit": 0}, kind="runshell")
    store.close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)          # the header survives, the pages do not
    path.write_bytes(bytes(data))
    return path


def test_collect_into_a_directory_it_cannot_make_is_one_line(lab, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    code, err = run_main(capsys, monkeypatch, "collect", "lab", "/tmp/out.txt", "-o", str(tmp_path / "a-file" / "out"))
    assert code == 1 and f"cannot write into {tmp_path / 'a-file' / 'out'}" in err and "-o" in err
    monkeypatch.setattr(sys, "argv", ["nestbed", "collect", "lab", "/tmp/out.txt", "-o", str(tmp_path / "fine")])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()                              # the same with a writable -o works
    assert exited.value.code == 0
    assert (tmp_path / "fine" / "a" / "tmp" / "out.txt").read_text() == "hi"


def test_plot_into_a_directory_it_cannot_make_is_one_line(tmp_path, capsys, monkeypatch):
    store = Store(tmp_path / "control.sqlite")
    for t in range(5):
        store.add_counters(float(t), [CounterRow("a", "eth0", 0, 1000 * t, 0, 0)])
    store.close()
    (tmp_path / "a-file").write_text("x")
    code, err = run_main(capsys, monkeypatch, "plot", "--store", str(tmp_path / "control.sqlite"),
                         "-o", str(tmp_path / "a-file" / "plots"))
    assert code == 1 and "cannot write plots into" in err and "-o" in err


@pytest.mark.parametrize("verb", ["records", "counters", "plot"])
def test_a_damaged_store_is_one_line_naming_it(verb, lab, capsys, monkeypatch):
    path = damaged_store(lab / "control.sqlite")
    code, err = run_main(capsys, monkeypatch, verb, "lab")
    assert code == 1 and str(path) in err, err


def test_a_store_that_is_no_database_is_one_line(lab, capsys, monkeypatch):
    (lab / "control.sqlite").write_text("not a database\n" * 100)
    code, err = run_main(capsys, monkeypatch, "records", "lab")
    assert code == 1 and f"cannot read the store {lab / 'control.sqlite'}" in err


def test_an_unreadable_topology_is_one_line(tmp_path, capsys, monkeypatch):
    code, err = run_main(capsys, monkeypatch, "plan", str(tmp_path))          # a directory
    assert code == 1 and "cannot read topology file" in err


def test_any_os_error_a_verb_lets_through_is_one_line_and_a_bug_is_not(tmp_path, capsys, monkeypatch):
    def refuses(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "somewhere"))
    monkeypatch.setattr("nestbed.cli.main.with_exact_lines", refuses)
    code, err = run_main(capsys, monkeypatch, "plan", str(tmp_path / "t.yaml"))
    assert code == 1 and f"cannot use {tmp_path / 'somewhere'}: Permission denied" in err

    def bug(*args, **kwargs):
        raise KeyError("a bug")
    monkeypatch.setattr("nestbed.cli.main.with_exact_lines", bug)
    monkeypatch.setattr(sys, "argv", ["nestbed", "plan", str(tmp_path / "t.yaml")])
    with pytest.raises(KeyError):
        cli_main.main()


def test_the_executable_exits_with_the_verbs_code_and_its_output_complete(tmp_path: Path) -> None:
    """`nestbed` (cli.main.command) leaves through os._exit: the exit code and every line written must survive."""
    import subprocess
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY)
    entry = "from nestbed.cli.main import command; command()"
    done = subprocess.run([sys.executable, "-c", entry, "validate", str(topology)], capture_output=True, text=True)
    assert done.returncode == 0 and "lab" in done.stdout, done
    done = subprocess.run([sys.executable, "-c", entry, "validate", str(tmp_path / "nothing.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr, done
    done = subprocess.run([sys.executable, "-c", entry, "no-such-verb"], capture_output=True, text=True)
    assert done.returncode == 2 and "no-such-verb" in done.stderr, done
