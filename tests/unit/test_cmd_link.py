"""`nestbed link` as a thin caller of cluster/linkchange.change_link: its lines on one host and on a cluster, and
its own one-line errors, with the change itself faked (no root)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from nestbed.cli.main import main
from nestbed.model import load_topology_text
from nestbed.plan import compile_plan
from nestbed.realize.state import experiment

LAB = "name: lab\nnodes: {a: {}, b: {}}\nlinks: [{ends: [a, b]}]\n"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    state = experiment("lab")
    state.create()
    state.plan_path.write_text(compile_plan(load_topology_text(LAB, "lab.yaml")).to_json())
    state.set_status("up")


def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["nestbed", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def faked(monkeypatch: pytest.MonkeyPatch, cluster: bool) -> list[Any]:
    calls: list[Any] = []

    def change_link(name: str, segment: str, action: str, assignments: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, segment, action, assignments))
        shaping = {"bandwidth": 5_000_000, "delay": None, "jitter": None, "loss": None, "queue": None} \
            if action == "set" else None
        return {"segment": segment, "state": "down" if action == "down" else "up", "shaping": shaping,
                "members": ["a:eth1", "b:eth1"], "seconds": 0.0012, "hosts": ["h1", "h2"], "cluster": cluster}

    monkeypatch.setattr("nestbed.cluster.linkchange.change_link", change_link)
    return calls


def test_one_host_lines(lab, capsys, monkeypatch):
    calls = faked(monkeypatch, cluster=False)
    code, out, _ = run_main(capsys, monkeypatch, "link", "lab", "link0", "down")
    assert code == 0 and out.strip() == "lab link0: down on 2 members (1.2 ms)"
    code, out, _ = run_main(capsys, monkeypatch, "link", "lab", "link0", "set", "bandwidth=5Mbit")
    assert code == 0 and out.startswith("lab link0: shaping ") and "5" in out and "on 2 members (1.2 ms)" in out
    assert calls == [("lab", "link0", "down", {}), ("lab", "link0", "set", {"bandwidth": "5Mbit"})]


def test_cluster_lines_name_the_hosts(lab, capsys, monkeypatch):
    faked(monkeypatch, cluster=True)
    code, out, _ = run_main(capsys, monkeypatch, "link", "lab", "link0", "up")
    assert code == 0 and out.strip() == "lab link0: up on 2 members on h1, h2 (1.2 ms)"


@pytest.mark.parametrize("args, words", [
    (["sideways"], "unknown action 'sideways'; use: nestbed link lab link0 down|up|set key=value"),
    (["down", "loss=1%"], "down takes no values (got loss=1%); to change shaping use set"),
    (["set"], "set needs at least one key=value"),
    (["set", "bandwidth=5Mbiz"], "5Mbiz"),
])
def test_cli_errors_are_one_line_before_any_change(lab, capsys, monkeypatch, args, words):
    calls = faked(monkeypatch, cluster=False)
    code, out, err = run_main(capsys, monkeypatch, "link", "lab", "link0", *args)
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert calls == []


def test_the_real_change_link_refuses_an_unknown_segment_in_one_line(lab, capsys, monkeypatch):
    code, _, err = run_main(capsys, monkeypatch, "link", "lab", "lnk0", "down")
    assert code == 1 and "no link or LAN 'lnk0'" in err and len(err.strip().splitlines()) == 1
