"""Property tests: on random vtopos and clusters, every embedding meets every constraint (checked by
`violations`, which reads the rules from the experiment and cluster, and by the test's own oracle), the reported
cut matches the placement, and embed() refuses only inputs that no assignment satisfies."""
from __future__ import annotations

from embed_oracle import cut_of, exact, feasible, segments
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestbed.embed import EmbeddingError, embed, violations
from nestbed.model.cluster import Cluster, HostSpec
from nestbed.model.topology import EmbedSettings, Experiment

BANDWIDTHS = [None, 10**6, 10**7, 10**8, 10**9, 10**10]


class Case:
    def __init__(self, exp: Experiment, cluster: Cluster):
        self.exp, self.cluster = exp, cluster

    def __repr__(self) -> str:        # what hypothesis prints of a failing case: enough to rebuild it
        nodes = [(n, v.kind, v.host, v.partition, v.cpus, v.memory) for n, v in self.exp.expanded_nodes().items()]
        hosts = [(h.name, h.cpus, h.memory, h.max_vms, h.max_containers) for h in self.cluster.hosts.values()]
        return f"Case(embed={self.exp.embed!r}, nodes={nodes!r}, segments={self.exp.segments!r}, hosts={hosts!r})"


@st.composite
def cases(draw: st.DrawFn, max_nodes: int = 8, max_hosts: int = 3) -> Case:
    hosts = draw(st.integers(1, max_hosts))
    count = draw(st.integers(1, max_nodes))
    nested = draw(st.booleans())
    tight = count // hosts + draw(st.integers(0, 3))      # a per-host cap that binds, often just barely
    exp = Experiment("p", embed=EmbedSettings(processes_in="qemu" if nested else "host",
                                              per_vhost=draw(st.integers(1, max(4, count // 8))),
                                              per_host=draw(st.sampled_from([1000, 1000, 2, 3, max(1, tight)]))))
    host_names = [f"h{i}" for i in range(hosts)]
    names = [f"n{i}" for i in range(count)]
    rare = max(10, count)            # about one physical node and one pin per topology, at any size
    labels = [None] * 6 + [f"p{i}" for i in range(max(2, count // 6))]
    for name in names:
        kind = draw(st.sampled_from(["process"] * 6 + ["qemu"] * 3)) if draw(st.integers(0, rare)) else "physical"
        pin = None
        if draw(st.integers(0, rare)) == 0:
            target = draw(st.sampled_from(host_names))
            pin = f"vh-{target}-{draw(st.integers(0, 2))}" if nested and kind == "process" \
                and draw(st.booleans()) else target
        exp.node(name, kind, host=pin,
                 partition=draw(st.sampled_from(labels)) if kind != "physical" else None,
                 cpus=draw(st.sampled_from([None, None, 0.5, 1, 2])),
                 memory=draw(st.sampled_from([None, None, "256M", "1G"])))
    for i in range(draw(st.integers(0, 2 * count))):
        bandwidth = draw(st.sampled_from(BANDWIDTHS))
        shaping = {} if bandwidth is None else {"bandwidth": bandwidth}
        if count >= 3 and draw(st.integers(0, 3)) == 0:
            members = draw(st.lists(st.sampled_from(names), min_size=2, max_size=count, unique=True))
            exp.lan(f"lan{i}", members, **shaping)
        elif count >= 2:
            a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
            exp.link(a, b, **shaping)
    specs = {}
    for name in host_names:
        specs[name] = HostSpec(name, cpus=draw(st.sampled_from([None, None, 2, 4, 8, 2 * tight])),
                               memory=draw(st.sampled_from([None, None, 2**30, 4 * 2**30])),
                               max_vms=draw(st.sampled_from([None, None, 0, 1, 2, 4, tight])),
                               max_containers=draw(st.sampled_from([None, None, 1, 2, 4, count // hosts + 2])))
    return Case(exp, Cluster(specs))


def check_valid(case: Case) -> bool:
    """Embed; on success check everything and return True, on refusal return False."""
    try:
        embedding = embed(case.exp, case.cluster, seed=1)
    except EmbeddingError as err:
        assert "\n" not in str(err)
        return False
    assert violations(case.exp, case.cluster, embedding) == []
    assert embedding.metrics.violations == 0
    hosts = {name: place.host for name, place in embedding.placement.items()}
    assert set(hosts) == set(case.exp.expanded_nodes())
    assert feasible(case.exp, case.cluster, hosts)
    assert embedding.metrics.inter_host_bandwidth_bps == cut_of(segments(case.exp), hosts)
    assert embedding.metrics.cut_segments == len(embedding.cut_segments)
    assert all(len(touched) > 1 for touched in embedding.cut_segments.values())
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_small_embeddings_are_valid_and_refused_only_when_impossible(case: Case):
    if not check_valid(case):
        assert exact(case.exp, case.cluster) is None, "embed() refused an input that has a valid placement"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(max_nodes=60, max_hosts=6))
def test_larger_embeddings_are_valid(case: Case):
    check_valid(case)
