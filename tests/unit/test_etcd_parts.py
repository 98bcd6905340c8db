"""The etcd engine's pure parts: key layout, chunked content-addressed blobs, txn batching within etcd's limits,
records, endpoints and the cluster file's engine key."""
from __future__ import annotations

import os
import zlib

import pytest

from nestbed.cluster.etcd import blobs, keys
from nestbed.cluster.etcd.client import grpc_target, parse_urls
from nestbed.cluster.etcd.publish import spec_of
from nestbed.cluster.etcd.records import Manifest, Status, aggregate, describe_lost
from nestbed.errors import ExperimentError, TopologyError
from nestbed.model.cluster import load_cluster_text


def test_key_layout_puts_a_hosts_manifests_under_one_prefix_and_an_experiments_keys_under_another() -> None:
    assert keys.manifest("h7", "lab") == b"/nestbed/host/h7/desired/lab"
    assert keys.manifest("h7", "lab").startswith(keys.desired("h7"))
    assert keys.alive("h7") == b"/nestbed/host/h7/alive"
    assert not keys.alive("h7").startswith(keys.desired("h7"))
    for key in (keys.generation("lab"), keys.spec("lab"), keys.status("lab", "h7"), keys.chunk("lab", "ab", 3)):
        assert key.startswith(keys.experiment("lab"))
    assert keys.chunk("lab", "ab", 3) == b"/nestbed/exp/lab/blob/ab/0003"
    assert not keys.experiment("lab2").startswith(keys.experiment("lab"))    # a prefix ends with '/'
    assert keys.last_part(keys.status("lab", "h7")) == "h7"
    with pytest.raises(ValueError):
        keys.manifest("h/7", "lab")
    with pytest.raises(ValueError):
        keys.status("", "h7")


def test_a_plan_over_the_request_limit_is_chunked_and_comes_back_whole() -> None:
    data = os.urandom(3_500_000)        # incompressible: 3.5 MB stays over 1.5 MiB after zlib
    blob = blobs.pack(data)
    assert len(blob.chunks) == 4 and all(len(c) <= blobs.CHUNK_BYTES for c in blob.chunks)
    assert blob.size == len(data)
    assert blobs.unpack(blob.chunks, blob.sha) == data
    with pytest.raises(ValueError):
        blobs.unpack(blob.chunks, blobs.sha_of(b"other"))
    with pytest.raises(zlib.error):          # a chunk missing: never taken for the plan
        blobs.unpack(blob.chunks[:-1])


def test_a_plan_compresses_and_is_named_by_its_content() -> None:
    text = b'{"nodes": [' + b",".join(b'{"name": "n%d", "netns": "nb-x.n%d"}' % (i, i) for i in range(5000)) + b"]}"
    blob = blobs.pack(text)
    assert len(blob.chunks) == 1 and len(blob.chunks[0]) < len(text) / 5
    assert blobs.pack(text).sha == blob.sha != blobs.pack(text + b" ").sha


def test_txn_batches_keep_to_128_operations_and_the_request_limit() -> None:
    groups = blobs.batches([100] * 300)
    assert [len(g) for g in groups] == [128, 128, 44]
    assert sum(groups, []) == list(range(300))
    big = blobs.batches([blobs.CHUNK_BYTES] * 3)        # two 1 MiB chunks would pass 1.5 MiB together
    assert big == [[0], [1], [2]]
    mixed = blobs.batches([700_000, 700_000, 700_000])
    assert all(sum([700_000] * len(g)) <= blobs.TXN_BYTES for g in mixed) and len(mixed) == 2


def test_records_round_trip_and_done_means_observed_equals_generation() -> None:
    manifest = Manifest(3, "abc", 2, 2_000_000)
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest
    assert Manifest.from_bytes(Manifest(4, "empty", 0, 0, empty=True).to_bytes()).empty
    ready = Status.from_bytes(Status(3, "ready").to_bytes())
    assert ready.done_at(3) and not ready.done_at(4) and ready.at > 0
    assert not Status(3, "failed", ["x"]).done_at(3) and not Status(3, "applying").done_at(3)
    assert Status(5, "removed").done_at(5)
    found = aggregate({"h1": Status(3, "ready"), "h2": Status(2, "applying"), "h3": Status(3, "failed", ["boom"])}, 3)
    assert found["phases"] == {"ready": 1, "applying": 1, "failed": 1}
    assert found["behind"] == ["h2"] and found["errors"] == ["h3: boom"] and found["hosts"] == 3


def test_the_spec_is_the_same_for_the_same_plans_whatever_their_order() -> None:
    one = spec_of({"h1": b"a", "h2": b"b"})
    assert spec_of({"h2": b"b", "h1": b"a"}) == one
    assert spec_of({"h1": b"a", "h2": b"c"}) != one
    assert spec_of({"h1": None, "h2": None}) != spec_of({"h1": b"a", "h2": None})


def test_endpoints_become_one_grpc_target_and_bad_ones_are_one_line() -> None:
    assert grpc_target(["http://127.0.0.1:2379"]) == "127.0.0.1:2379"
    assert grpc_target(["http://10.0.0.5:2379", "http://10.0.0.6:2379"]) == "ipv4:10.0.0.5:2379,10.0.0.6:2379"
    assert grpc_target(["unix:///run/etcd/etcd.sock:2379"]) == "unix:/run/etcd/etcd.sock:2379"
    assert parse_urls("http://a:1, http://b:2") == ["http://a:1", "http://b:2"]
    for bad in (["https://x:1"], ["http://x"], [], ["x:1"]):
        with pytest.raises(ExperimentError):
            grpc_target(bad)


def test_the_cluster_files_engine_key() -> None:
    cluster = load_cluster_text("emulate: 2\nengine: {etcd: [http://10.0.0.5:2379, unix:///tmp/e.sock:1]}\n")
    assert cluster.etcd == ["http://10.0.0.5:2379", "unix:///tmp/e.sock:1"]
    assert load_cluster_text("emulate: 2\n").etcd == []
    for bad, says in (("engine: {etcd: []}", "one or more"), ("engine: {consul: [x]}", "one key, etcd"),
                      ("engine: {etcd: [ftp://x:1]}", "http://HOST:PORT"), ("engine: 3", "mapping"),
                      ("engine: {etcd: [http://x:port]}", "http://HOST:PORT")):
        with pytest.raises(TopologyError) as raised:
            load_cluster_text(f"emulate: 2\n{bad}\n", "lab.yaml")
        assert says in str(raised.value) and "lab.yaml:2" in str(raised.value)


@pytest.mark.parametrize("args, says", [
    (["--host", "h1"], "needs --etcd URL[,URL...] and --host NAME"),
    (["--etcd", "ftp://x:1", "--host", "h1"], "must be http://HOST:PORT or unix:///PATH"),
    (["--etcd", "http://127.0.0.1:1", "--host", "a/b"], "is not a host name"),
    (["--etcd", "http://127.0.0.1:1", "--host", "h1"], "does not answer"),     # nothing listens on port 1
])
def test_nestbed_agent_refuses_bad_input_in_one_line(args: list[str], says: str) -> None:
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "nestbed.cli.main", "agent", *args], capture_output=True,
                            text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and says in lines[0], result.stderr


def test_up_with_an_etcd_that_does_not_answer_is_one_line_and_makes_nothing(tmp_path, monkeypatch) -> None:
    from nestbed.cluster import deploy
    from nestbed.model.loader import build_experiment, parse_yaml
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path / "state"))
    text = "name: nowhere\nnodes:\n  a: {host: emu0}\n  b: {host: emu1}\nlinks:\n  - {ends: [a, b]}\n"
    exp = build_experiment(parse_yaml(text, "t.yaml"), "t.yaml")
    cluster = load_cluster_text("emulate: 2\nengine: {etcd: [http://127.0.0.1:1]}\n")
    with pytest.raises(ExperimentError, match=r"^etcd at http://127.0.0.1:1 does not answer"):
        deploy.up(exp, cluster)
    assert not (tmp_path / "state").exists()


def test_lost_hosts_are_those_placed_or_reporting_without_an_alive_key() -> None:
    statuses = {"h1": Status(3, "ready", at=1000.0), "h2": Status(3, "ready", at=940.0)}
    found = aggregate(statuses, 3, placed={"h1", "h2", "h3"}, alive={"h1"}, now=1000.0)
    assert found["lost"] == {"h2": 60.0, "h3": None} and found["hosts"] == 3
    assert describe_lost(found["lost"]) == "h2 (last status 60 s ago), h3"
    assert describe_lost({"h4": 7300.0, "h5": 300.0}) == "h4 (last status 2.0 h ago), h5 (last status 5 min ago)"
    assert aggregate(statuses, 3)["lost"] == {}             # not told which hosts are alive: none is called lost


def test_nestbed_status_prints_the_lost_hosts(monkeypatch) -> None:
    from rich.console import Console

    from nestbed.cli import views
    from nestbed.cluster import deploy
    found = aggregate({"h1": Status(2, "ready", at=1.0)}, 2, placed={"h1"}, alive=set(), now=31.0)
    monkeypatch.setattr(deploy, "engine_summary", lambda name: found)
    console = Console(record=True, width=200)
    views._print_engine(console, "x")
    text = console.export_text()
    assert "etcd: generation 2, 1 hosts: 1 ready" in text and "lost: h1 (last status 30 s ago)" in text


def test_nestbed_status_json_carries_the_etcd_summary(tmp_path, monkeypatch, capsys) -> None:
    import json

    from rich.console import Console

    from nestbed.cli import views
    from nestbed.cluster import deploy
    from nestbed.realize.state import experiment
    monkeypatch.setenv("NESTBED_STATE_DIR", str(tmp_path))
    found = aggregate({"h1": Status(2, "ready", at=1.0), "h2": Status(1, "applying", at=1.0)}, 2,
                      placed={"h1", "h2"}, alive={"h1"}, now=31.0)
    asked: list[list[str]] = []
    from nestbed.cluster.etcd import engine
    monkeypatch.setattr(engine, "summary", lambda urls, name: asked.append(urls) or found)
    for name, cluster in (("viaetcd", {"hosts": ["emu0"], "emulate": 1, "engine": {"etcd": ["http://127.0.0.1:9"]}}),
                          ("viassh", {"hosts": ["emu0"], "emulate": 1})):
        state = experiment(name)
        state.directory.mkdir(parents=True)
        state.set_status("up", cluster=cluster)

    def status_json(name: str) -> dict:
        views.print_experiment(Console(), name, True)
        return json.loads(capsys.readouterr().out)
    assert status_json("viaetcd")["etcd"] == json.loads(json.dumps(found)) and asked == [["http://127.0.0.1:9"]]
    assert status_json("viaetcd")["etcd"]["lost"] == {"h2": 30.0} and found["behind"] == ["h2"]
    assert "etcd" not in status_json("viassh")

    def unreachable(urls: list[str], name: str) -> dict:
        raise ExperimentError("etcd at http://127.0.0.1:9 does not answer")
    monkeypatch.setattr(engine, "summary", unreachable)
    assert deploy.engine_status("viaetcd") == status_json("viaetcd")["etcd"] == \
        {"error": "etcd at http://127.0.0.1:9 does not answer"}
