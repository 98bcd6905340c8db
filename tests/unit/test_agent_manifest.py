"""deploy/kubernetes/nestbed-agent.yaml, the DaemonSet that supervises `nestbed agent` on every node: its structure,
read with PyYAML (no Kubernetes cluster can run in the tests)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

TOP = Path(__file__).resolve().parents[2]
MANIFEST = TOP / "deploy" / "kubernetes" / "nestbed-agent.yaml"


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    found = {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}
    assert set(found) == {"Namespace", "ConfigMap", "DaemonSet"}, set(found)
    return found


@pytest.fixture(scope="module")
def pod(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    daemonset = documents["DaemonSet"]
    assert daemonset["apiVersion"] == "apps/v1"
    spec = daemonset["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    return dict(spec["template"]["spec"])


@pytest.fixture(scope="module")
def agent(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def test_the_pod_shares_the_hosts_network_and_processes(pod: dict[str, Any]) -> None:
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"     # cluster DNS still answers on the host's network


def test_it_runs_on_every_node(pod: dict[str, Any], documents: dict[str, dict[str, Any]]) -> None:
    assert {"operator": "Exists"} in pod["tolerations"]       # tolerates every taint
    assert "nodeSelector" not in pod and "affinity" not in pod
    # a rollout would end every node's experiments (their processes live in the pod): new images only on delete
    assert documents["DaemonSet"]["spec"]["updateStrategy"]["type"] == "OnDelete"


def test_the_agent_is_privileged(agent: dict[str, Any]) -> None:
    assert agent["securityContext"]["privileged"] is True


def test_the_command_is_the_contracts_with_the_node_name_as_host(agent: dict[str, Any],
                                                                documents: dict[str, dict[str, Any]]) -> None:
    argv = [*agent["command"], *agent["args"]]
    assert argv[:2] == ["nestbed", "agent"]
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert len(argv) == 6 and set(flags) == {"--etcd", "--host"}, argv
    env = env_of(agent)
    host_var = flags["--host"].removeprefix("$(").removesuffix(")")
    assert flags["--host"] == f"$({host_var})"                # expanded by Kubernetes from the container's env
    assert env[host_var]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"     # the downward API
    etcd_var = flags["--etcd"].removeprefix("$(").removesuffix(")")
    assert flags["--etcd"] == f"$({etcd_var})"
    source = env[etcd_var]["valueFrom"]["configMapKeyRef"]
    configmap = documents["ConfigMap"]
    assert source["name"] == configmap["metadata"]["name"] and source["key"] in configmap["data"]
    assert configmap["metadata"]["namespace"] == documents["DaemonSet"]["metadata"]["namespace"] \
        == documents["Namespace"]["metadata"]["name"]
    assert str(configmap["data"][source["key"]]).startswith("http://")


def test_the_image_is_a_placeholder_built_from_the_documented_dockerfile(agent: dict[str, Any]) -> None:
    assert agent["image"].startswith("REGISTRY/nestbed-agent:")
    dockerfile = (MANIFEST.parent / "Dockerfile").read_text()
    assert [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")] == ["debian:12-slim"]
    for package in ("iproute2", "iptables", "nftables", "qemu-system-x86", "python3"):
        assert package in dockerfile, package
    readme = (MANIFEST.parent / "README.md").read_text()
    assert "Dockerfile" in readme and "never pods" in readme


@pytest.mark.parametrize(("path", "read_only", "propagation"), [
    ("/run/netns", False, "Bidirectional"),     # the namespaces it makes are the host's and outlive the pod
    ("/var/lib/nestbed", False, None),          # journals: teardown after a restart
    ("/lib/modules", True, None),               # modprobe
])
def test_the_hosts_directories_are_mounted(pod: dict[str, Any], agent: dict[str, Any], path: str, read_only: bool,
                                           propagation: str | None) -> None:
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = mounts[path]
    assert volumes[mount["name"]]["hostPath"]["path"] == path          # the same path on the host
    assert bool(mount.get("readOnly", False)) is read_only
    assert mount.get("mountPropagation") == propagation


def test_every_mount_is_of_a_host_path_volume(pod: dict[str, Any], agent: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {m["name"] for m in agent["volumeMounts"]} == set(volumes)
    for mount in agent["volumeMounts"]:
        assert volumes[mount["name"]]["hostPath"]["path"] == mount["mountPath"], mount
