"""`nestbed plan TOPO --cluster C [--seed N] [--json] [--png FILE]`: the embedding as a tree, as JSON and as a
picture; errors in one line; without --cluster the command is what it was."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from nestbed.cli import embed_view
from nestbed.cli.main import app, main
from nestbed.cli.partition_png import draw_partitions
from nestbed.embed import embed
from nestbed.model import load_topology_text
from nestbed.model.cluster import load_cluster_text
from nestbed.plan import compile_plan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEED = """\
    name: seed
    nodes:
      a: {}
      b: {}
      vm1: {kind: qemu}
    lans:
      lan0: {members: [a, b, vm1], bandwidth: 100Mbit}
    """
NESTED = "embed: {processes_in: qemu}\n"
TWO_HOSTS = "hosts:\n  h1: {max_vms: 2}\n  h2: {}\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def ring(count: int, chords: int = 7) -> str:
    """`count` nodes in a ring with a chord every `chords` nodes, links of varied bandwidth."""
    lines = [f"name: ring{count}", "nodes:", f"  n: {{count: {count}}}", "links:"]
    for i in range(count):
        lines.append(f"  - {{ends: [n-{i}, n-{(i + 1) % count}], bandwidth: {10 * (1 + i % 3)}Mbit}}")
        if i % chords == 0:
            lines.append(f"  - {{ends: [n-{i}, n-{(i + count // 2) % count}], bandwidth: 1Mbit}}")
    return "\n".join(lines) + "\n"


def hosts(count: int, **caps: int) -> str:
    spec = ", ".join(f"{k}: {v}" for k, v in caps.items())
    return "hosts:\n" + "".join(f"  h{i}: {{{spec}}}\n" for i in range(count))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """Through main(), which turns nestbed's errors into one line, as the installed command does."""
    monkeypatch.setattr(sys, "argv", ["nestbed", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


@pytest.fixture
def seed_files(tmp_path: Path) -> dict[str, str]:
    return {"topo": write(tmp_path, "seed.yaml", SEED),
            "nested": write(tmp_path, "nested.yaml", textwrap.dedent(SEED) + NESTED),
            "lab": write(tmp_path, "lab.yaml", TWO_HOSTS),
            "one": write(tmp_path, "one.yaml", "hosts:\n  h1: {max_vms: 2}\n")}


# -- the tree ---------------------------------------------------------------------------------------------------

def test_tree_with_processes_in_qemu_names_the_host_its_vhost_and_the_nodes(seed_files: dict[str, str]) -> None:
    code, out, _ = run("plan", seed_files["nested"], "--cluster", seed_files["one"])
    assert code == 0
    assert "seed: 3 nodes on 1 of 1 hosts, 1 vhost VM" in out
    assert "h1  3/1000 containers · 2/2 vms" in out          # vm1 and the vhost count as VMs
    assert "vhost vh-h1-0 (2): a, b" in out
    assert "on the host (1): vm1 [qemu]" in out
    assert "no segment crosses hosts" in out
    for figure in ("inter-host bandwidth", "0 bit/s", "cut segments", "0 of 1", "imbalance", "violations",
                   "embedding", "total"):
        assert figure in out


def test_tree_on_two_hosts_lists_the_cut_lan_and_the_figures(seed_files: dict[str, str]) -> None:
    code, out, _ = run("plan", seed_files["topo"], "--cluster", seed_files["lab"])
    assert code == 0
    assert "on 2 of 2 hosts" in out and "vhost" not in out
    assert "\n├── h1 " in out and "\n└── h2 " in out
    assert "lan0     lan   100 Mbit/s  h1, h2" in out
    assert "inter-host bandwidth  100 Mbit/s" in out
    assert "cut segments          1 of 1" in out
    assert "33.3% above the fair share" in out


def test_big_trees_are_abbreviated(tmp_path: Path) -> None:
    topo = write(tmp_path, "ring.yaml", ring(600))
    cluster = write(tmp_path, "lab.yaml", hosts(60, max_containers=11))
    code, out, _ = run("plan", topo, "--cluster", cluster)
    assert code == 0
    assert f"… {60 - embed_view.MAX_HOSTS} more hosts (" in out
    assert ", … 5 more" in out                                   # 10 nodes a host, 5 names shown
    assert sum(1 for line in out.splitlines() if line.startswith(("├── h", "└── h"))) == embed_view.MAX_HOSTS
    assert "more" in out.split("cross-host segments")[1]         # more cut segments than rows shown
    assert len(out.splitlines()) < 200


def test_helpers_print_human_figures() -> None:
    assert embed_view.human_rate(3.2e9) == "3.2 Gbit/s"
    assert embed_view.human_rate(100e6) == "100 Mbit/s"
    assert embed_view.human_rate(0) == "0 bit/s"
    assert embed_view.human_seconds(0.0123) == "12 ms" and embed_view.human_seconds(2.5) == "2.50 s"
    assert embed_view.abbreviate(["a", "b", "c"], 2) == "a, b, … 1 more"
    assert embed_view.abbreviate(["a", "b"], 2) == "a, b"


# -- JSON -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("topo", ["topo", "nested"])
def test_json_is_one_object_with_every_node_placed(seed_files: dict[str, str], topo: str) -> None:
    code, out, _ = run("plan", seed_files[topo], "--cluster", seed_files["lab"], "--json")
    assert code == 0
    data = json.loads(out)                       # exactly one object: trailing text would fail here
    assert {"placement", "vhosts", "metrics", "cut_segments", "seconds_total", "hosts"} <= set(data)
    assert set(data["placement"]) == {"a", "b", "vm1"}
    assert set(data["metrics"]) == {"inter_host_bandwidth_bps", "cut_segments", "imbalance", "violations",
                                    "seconds"}
    assert data["metrics"]["violations"] == 0
    assert data["seconds_total"] >= data["metrics"]["seconds"] > 0
    for place in data["placement"].values():
        assert place["host"] in ("h1", "h2")
        if place["vhost"] is not None:
            assert data["vhosts"][place["vhost"]]["host"] == place["host"]
    assert data["placement"]["vm1"]["vhost"] is None
    for vhost, where in data["vhosts"].items():
        assert vhost in data["hosts"][where["host"]]["vhosts"]
    assert sum(h["nodes"] for h in data["hosts"].values()) == 3
    if topo == "nested":
        assert data["vhosts"] and data["placement"]["a"]["vhost"] is not None


def test_same_seed_same_placement(tmp_path: Path) -> None:
    topo = write(tmp_path, "ring.yaml", ring(120))
    cluster = write(tmp_path, "lab.yaml", hosts(4, max_containers=33))
    first = json.loads(run("plan", topo, "--cluster", cluster, "--seed", "7", "--json")[1])
    again = json.loads(run("plan", topo, "--cluster", cluster, "--seed", "7", "--json")[1])
    assert first["placement"] == again["placement"]
    assert first["metrics"]["violations"] == 0
    assert len(first["placement"]) == 120


# -- the picture -------------------------------------------------------------------------------------------------

def test_png_is_written_beside_the_tree(seed_files: dict[str, str], tmp_path: Path) -> None:
    png = tmp_path / "partition.png"
    code, out, _ = run("plan", seed_files["nested"], "--cluster", seed_files["lab"], "--png", str(png))
    assert code == 0
    assert f"wrote {png}" in out and "h1" in out
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000


def test_png_with_json_keeps_stdout_pure_json(seed_files: dict[str, str], tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    code, out, err = run("plan", seed_files["topo"], "--cluster", seed_files["lab"], "--json", "--png", str(png))
    assert code == 0
    assert set(json.loads(out)["placement"]) == {"a", "b", "vm1"}
    assert f"wrote {png}" in err
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_big_drawings_sample_hosts_and_nodes(tmp_path: Path) -> None:
    exp = load_topology_text(ring(400), "ring.yaml")
    embedding = embed(exp, load_cluster_text(hosts(10, max_containers=44), "lab.yaml"))
    drawing = draw_partitions(exp, embedding, tmp_path / "big.png", max_drawn=100, max_hosts=4)
    assert drawing.hosts_drawn == 4 and drawing.total == 400
    assert drawing.sampled and 4 <= drawing.drawn <= 100
    assert (tmp_path / "big.png").read_bytes()[:8] == PNG_MAGIC


# -- errors: one line, non-zero, no PNG ---------------------------------------------------------------------------

def test_infeasible_embedding_is_one_line_and_writes_no_png(seed_files: dict[str, str], tmp_path: Path) -> None:
    cluster = write(tmp_path, "novms.yaml", "hosts:\n  h1: {max_vms: 0}\n")
    png = tmp_path / "never.png"
    result = subprocess.run([sys.executable, "-m", "nestbed.cli.main", "plan", seed_files["topo"], "--cluster",
                             cluster, "--png", str(png), "--json"], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nestbed: ") and "max_vms" in lines[0]
    assert "Traceback" not in result.stderr
    assert not png.exists()


@pytest.mark.parametrize("cluster_text, words", [
    ("hosts:\n  h1: {max_vm: 2}\n", "unknown key 'max_vm'"),
    ("hosts: [h1, h2]\n", "hosts must be a mapping"),
])
def test_bad_cluster_file_is_one_line(seed_files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch, cluster_text: str, words: str) -> None:
    cluster = write(tmp_path, "bad.yaml", cluster_text)
    png = tmp_path / "never.png"
    code, out, err = run_main(capsys, monkeypatch, "plan", seed_files["topo"], "--cluster", cluster,
                              "--png", str(png))
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err
    assert not png.exists()


def test_missing_cluster_file_and_unwritable_png_are_one_line(seed_files: dict[str, str], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run_main(capsys, monkeypatch, "plan", seed_files["topo"], "--cluster", str(tmp_path / "no"))
    assert code != 0 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_main(capsys, monkeypatch, "plan", seed_files["topo"], "--cluster", seed_files["lab"],
                              "--json", "--png", str(tmp_path / "no-such-dir" / "p.png"))
    assert code != 0 and out == ""               # nothing printed before the failure
    assert "cannot write" in err and len(err.strip().splitlines()) == 1


# -- without --cluster: as before ----------------------------------------------------------------------------------

def test_without_cluster_the_host_plan_is_unchanged(seed_files: dict[str, str], tmp_path: Path) -> None:
    from nestbed.cli.views import print_plan
    from nestbed.model import load_topology

    host_plan = compile_plan(load_topology(seed_files["topo"]))
    code, out, _ = run("plan", seed_files["topo"], "--json")
    assert code == 0 and out.strip() == host_plan.to_json().strip()
    code, out, _ = run("plan", seed_files["topo"])
    console = Console(record=True, width=80, file=io.StringIO())
    print_plan(console, host_plan)
    assert code == 0 and out.strip() == console.export_text().strip()
    assert "quality" not in out and "cross-host" not in out


def test_seed_without_cluster_is_a_usage_error(seed_files: dict[str, str]) -> None:
    code, _, err = run("plan", seed_files["topo"], "--seed", "3")
    assert code == 2 and "--cluster" in err


def test_png_without_cluster_draws_this_machine_and_prints_the_old_plan(seed_files: dict[str, str],
                                                                         tmp_path: Path) -> None:
    png = tmp_path / "local.png"
    code, out, _ = run("plan", seed_files["topo"], "--png", str(png))
    assert code == 0 and "network namespaces" in out and f"wrote {png}" in out
    assert png.read_bytes()[:8] == PNG_MAGIC
