"""The run namespace mapping (meshproof/namespaces.py) both mesh backends deploy through.

The property that matters: the oracle predicts the same thing for a scenario and for its run-namespace
rewrite, with identities moved into the run namespaces. A mapping that forgets one place a namespace is
named (a subjectAltName, an sni, an exportTo entry, a host) turns a prediction around; the extra
scenarios below name each place in a way that does."""

from __future__ import annotations

import copy

import pytest

from meshproof.istio_api import ManifestError
from meshproof.namespaces import RunNamespaces
from meshproof.scenario import scenario_from_dict
from suites.expectations import expect
from suites.matrix import HOST, dr, matrix_scenarios, pa, scenario, scope_scenarios, tls

RUN = "mpab12cd"
NAMES = RunNamespaces(RUN, known=frozenset({"sleep", "httpbin"}))
SERVER_ID = "spiffe://cluster.local/ns/httpbin/sa/httpbin"


@pytest.mark.parametrize("host,expected", [
    ("httpbin.httpbin.svc.cluster.local", f"httpbin.httpbin-{RUN}.svc.cluster.local"),
    ("httpbin.httpbin.svc", f"httpbin.httpbin-{RUN}.svc"),
    ("httpbin.httpbin", f"httpbin.httpbin-{RUN}"),
    ("*.httpbin.svc.cluster.local", f"*.httpbin-{RUN}.svc.cluster.local"),
    ("*.bin.httpbin.svc.cluster.local", f"*.bin.httpbin-{RUN}.svc.cluster.local"),  # the label before svc
    ("a.b.httpbin.svc", f"a.b.httpbin-{RUN}.svc"),
    ("httpbin.httpbin.svc.example.com", "httpbin.httpbin.svc.example.com"),  # not this cluster's domain
    ("other.elsewhere.svc.cluster.local", f"other.elsewhere-{RUN}.svc.cluster.local"),  # a namespace, any
    ("httpbin.example", "httpbin.example"),  # two labels, not a run namespace: an outside host
    ("httpbin.httpbin.example.com", "httpbin.httpbin.example.com"),
    ("httpbin", "httpbin"),  # short: relative to the rule's own (rewritten) namespace
    ("*", "*"),
    ("*.local", "*.local"),
    ("*.svc.cluster.local", "*.svc.cluster.local"),
    ("httpbin.istio-system.svc.cluster.local", "httpbin.istio-system.svc.cluster.local"),  # the mesh's root
])
def test_hosts(host, expected):
    assert NAMES.host(host) == expected
    assert NAMES.normalise_host(expected) == host


@pytest.mark.parametrize("sni,expected", [
    ("outbound_.8000_._.httpbin.httpbin.svc.cluster.local", f"outbound_.8000_._.httpbin.httpbin-{RUN}.svc.cluster.local"),
    ("outbound_.8000_.v1_.httpbin.httpbin.svc.cluster.local",
     f"outbound_.8000_.v1_.httpbin.httpbin-{RUN}.svc.cluster.local"),
    ("httpbin.httpbin.svc.cluster.local", f"httpbin.httpbin-{RUN}.svc.cluster.local"),
    ("httpbin.httpbin", f"httpbin.httpbin-{RUN}"),
    ("example.com", "example.com"),
])
def test_sni(sni, expected):
    assert NAMES.sni(sni) == expected


def test_identities_and_names_round_trip():
    assert NAMES.identity(SERVER_ID) == f"spiffe://cluster.local/ns/httpbin-{RUN}/sa/httpbin"
    assert NAMES.identity("spiffe://example.org/ns/a/sa/b") == f"spiffe://example.org/ns/a-{RUN}/sa/b"
    assert NAMES.normalise_identity(NAMES.identity(SERVER_ID)) == SERVER_ID
    assert NAMES.normalise_identity("spiffe://cluster.local/ns/httpbin-other/sa/httpbin") == \
        "spiffe://cluster.local/ns/httpbin-other/sa/httpbin"  # another run's: left alone
    assert NAMES.identity(None) is None and NAMES.normalise_identity("not-spiffe") == "not-spiffe"
    assert (NAMES.to_run("sleep"), NAMES.from_run(f"sleep-{RUN}")) == (f"sleep-{RUN}", "sleep")
    assert NAMES.to_run("istio-system") == NAMES.from_run("istio-system") == "istio-system"


def test_a_destination_rule_is_rewritten_everywhere_it_names_a_namespace():
    rule = dr(None, namespace="httpbin", export_to=["sleep", "."], traffic_policy={
        "tls": tls("ISTIO_MUTUAL", sni="outbound_.8000_._." + HOST, subjectAltNames=[SERVER_ID, HOST]),
        "portLevelSettings": [{"port": {"number": 8000}, "tls": tls("ISTIO_MUTUAL", subjectAltNames=[SERVER_ID])}]})
    rule["spec"]["subsets"] = [{"name": "v1", "trafficPolicy": {"tls": tls("ISTIO_MUTUAL", sni=HOST)}}]
    before = copy.deepcopy(rule)
    out = NAMES.rewrite_manifest(rule)
    assert rule == before  # the input is not changed
    run_host, run_id = f"httpbin.httpbin-{RUN}.svc.cluster.local", f"spiffe://cluster.local/ns/httpbin-{RUN}/sa/httpbin"
    assert out["metadata"]["namespace"] == f"httpbin-{RUN}"
    assert out["spec"]["host"] == run_host
    assert out["spec"]["exportTo"] == [f"sleep-{RUN}", "."]
    policy = out["spec"]["trafficPolicy"]
    assert policy["tls"]["sni"] == "outbound_.8000_._." + run_host
    assert policy["tls"]["subjectAltNames"] == [run_id, run_host]
    assert policy["portLevelSettings"][0]["tls"]["subjectAltNames"] == [run_id]
    assert out["spec"]["subsets"][0]["trafficPolicy"]["tls"]["sni"] == run_host


def test_the_mesh_root_namespace_is_kept_and_never_holds_a_workload():
    raw = scenario([pa("STRICT", "istio-system"), pa("PERMISSIVE")])
    names = RunNamespaces.for_scenario(scenario_from_dict(raw), RUN)
    assert names.run_namespaces() == {"httpbin": f"httpbin-{RUN}", "sleep": f"sleep-{RUN}"}
    run = names.rewrite_scenario(scenario_from_dict(raw))
    assert run.root_namespace == "istio-system"
    assert [m["metadata"]["namespace"] for m in run.manifests] == ["istio-system", f"httpbin-{RUN}"]
    assert [r.namespace for r in run.resources] == ["istio-system", f"httpbin-{RUN}"]
    bad = {**raw, "client": {"namespace": "istio-system"}}
    with pytest.raises(ManifestError, match="client.namespace: 'istio-system' is the mesh's root namespace"):
        RunNamespaces.for_scenario(scenario_from_dict(bad), RUN)


def test_a_root_namespace_the_scenario_names_itself_is_the_runs_and_renamed():
    raw = {**scenario([pa("STRICT", "mesh-root")]), "root_namespace": "mesh-root"}
    names = RunNamespaces.for_scenario(scenario_from_dict(raw), RUN)
    run = names.rewrite_scenario(scenario_from_dict(raw))
    assert run.root_namespace == run.manifests[0]["metadata"]["namespace"] == f"mesh-root-{RUN}"
    assert expect(run).outcome == expect(scenario_from_dict(raw)).outcome == "mtls"


def test_run_namespaces_longer_than_a_dns_label_are_refused():
    raw = scenario([])
    raw["server"]["namespace"] = "n" * 60
    with pytest.raises(ManifestError, match="longer than 63 characters"):
        RunNamespaces.for_scenario(scenario_from_dict(raw), RUN)
    with pytest.raises(ValueError, match="run id"):
        RunNamespaces("Bad_Id")


# Each names a namespace in one place; for the first three a mapping that misses that place predicts
# otherwise for the run (the oracle reads an sni only for its outbound_ form, and `x.ns[.svc]` hosts as
# literal names, so there the rewritten strings themselves are what test_hosts and test_sni check).
ORACLE_VISIBLE = [
    ("san-of-the-server", [pa("STRICT"), dr(None, traffic_policy={"tls": tls("ISTIO_MUTUAL", subjectAltNames=[SERVER_ID])})]),
    ("export-to-client", [pa("STRICT"), dr("DISABLE", "httpbin", export_to=["sleep"])]),
    ("host-fqdn", [pa("STRICT"), dr("DISABLE")]),
]
NAMED_PLACES = ORACLE_VISIBLE + [
    ("istio-sni", [pa("STRICT"), dr(None, traffic_policy={"tls": tls("ISTIO_MUTUAL", sni="outbound_.8000_._." + HOST)})]),
    ("host-ns-form", [pa("STRICT"), dr("DISABLE", host="httpbin.httpbin.svc")]),
    ("host-short-ns-form", [pa("STRICT"), dr("DISABLE", host="httpbin.httpbin")]),
]


def _cells():
    cells = list(matrix_scenarios()) + list(scope_scenarios())
    return cells + [(f"named/{cell_id}", scenario(resources)) for cell_id, resources in NAMED_PLACES]


@pytest.mark.parametrize("cell_id,raw", _cells(), ids=[c for c, _ in _cells()])
def test_the_oracle_predicts_the_same_for_a_cell_and_its_run(cell_id, raw):
    original = scenario_from_dict(copy.deepcopy(raw), cell_id)
    names = RunNamespaces.for_scenario(original, RUN)
    run = names.rewrite_scenario(original)
    before, after = expect(original), expect(run)
    assert (after.outcome, after.wire, after.rule) == (before.outcome, before.wire, before.rule)
    assert after.peer_identity == names.identity(before.peer_identity)
    assert names.normalise_identity(after.peer_identity) == before.peer_identity
    if before.peer_identity:
        assert after.peer_identity == f"spiffe://cluster.local/ns/sleep-{RUN}/sa/sleep"


@pytest.mark.parametrize("cell_id,resources", ORACLE_VISIBLE, ids=[c for c, _ in ORACLE_VISIBLE])
def test_each_named_place_matters(cell_id, resources):
    """Moving only the workloads and metadata, not the place the cell names, changes the prediction: so the
    test above fails for a mapping that forgets that place."""
    original = scenario_from_dict(scenario(copy.deepcopy(resources)), cell_id)
    names = RunNamespaces.for_scenario(original, RUN)
    run = names.rewrite_scenario(original)
    half = [copy.deepcopy(m) for m in original.manifests]
    for doc in half:
        doc["metadata"]["namespace"] = names.to_run(doc["metadata"]["namespace"])
        if doc["kind"] == "DestinationRule" and not cell_id.startswith("host"):
            doc["spec"]["host"] = names.host(doc["spec"]["host"])
    half_run = scenario_from_dict({**scenario(half), "client": {"namespace": f"sleep-{RUN}"},
                                   "server": {"namespace": f"httpbin-{RUN}"}}, cell_id)
    assert (expect(half_run).outcome, expect(half_run).wire) != (expect(run).outcome, expect(run).wire)
