"""Self-tests of the oracle (suites/expectations.py). Each case names the Istio source its expectation comes
from; the expectations were derived by reading that source, not by running the oracle. Every rule of the
truth table is hit by at least one case, and deliberately wrong rules make the cases fail.
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from pathlib import Path

import pytest

from meshproof.istio_api import ManifestError
from meshproof.scenario import scenario_from_dict
from suites import expectations, matrix
from suites.expectations import OUTCOMES, RULES, expect
from suites.matrix import (
    ROOT_NS,
    dr,
    matrix_predictions,
    matrix_scenarios,
    pa,
    scenario,
    scope_scenarios,
    tls,
)

APP = {"app": "httpbin"}
SLEEP_ID = "spiffe://cluster.local/ns/sleep/sa/sleep"


def predict(data: dict, version: str | None = None):
    if version:
        data = {**data, "istio_version": version}
    return expect(scenario_from_dict(data, "test"))


# (id, scenario, expected outcome, expected rule, source the expectation was read from)
CASES: list[tuple[str, dict, str, str, str]] = [
    # --- sidecars and the inbound filter chains
    ("auto-mtls-default", scenario([]), "mtls", "istio-mutual-accepted",
     "cluster_tls.go buildUpstreamTLSSettings (auto mTLS) + reachability_test.go 'global no peer authn'"),
    ("naked-client-permissive", scenario([], client_sidecar=False), "plaintext", "plaintext-accepted",
     "filterchain_options.go inboundPermissiveHTTPFilterChainMatchWithMxcOptions (raw_buffer chain)"),
    ("naked-client-strict", scenario([pa("STRICT")], client_sidecar=False), "reset", "naked-client-to-strict-reset",
     "filterchain_options.go inboundStrictHTTPFilterChainMatchOptions (tls only); reachability 'mtls strict'"),
    ("naked-to-naked", scenario([pa("STRICT")], client_sidecar=False, server_sidecar=False), "plaintext",
     "plaintext-to-naked-server", "no proxy on either side"),
    ("sidecar-plaintext-to-strict", scenario([pa("STRICT"), dr("DISABLE")]), "503",
     "sidecar-plaintext-to-strict-503", "reachability_test.go 'migration tls disabled'"),
    ("istio-mutual-to-disable", scenario([pa("DISABLE"), dr("ISTIO_MUTUAL")]), "503", "istio-mutual-to-disable-503",
     "filterchain_options.go inboundPlainTextHTTPFilterChainMatchOptions"),
    ("istio-mutual-dr-to-naked-server", scenario([dr("ISTIO_MUTUAL")], server_sidecar=False), "503",
     "tls-to-naked-server-503", "cluster_tls.go applyUpstreamTLSSettings (user ISTIO_MUTUAL: no socket match)"),
    ("auto-mtls-naked-server", scenario([pa("STRICT", ROOT_NS)], server_sidecar=False), "plaintext",
     "plaintext-to-naked-server", "cluster_tls.go defaultTransportSocketMatch (no tlsMode=istio label)"),
    ("dr-disable-permissive", scenario([dr("DISABLE")]), "plaintext", "plaintext-accepted",
     "cluster_tls.go buildUpstreamClusterTLSContext DISABLE -> no transport socket"),
    # --- app TLS (SIMPLE / MUTUAL)
    ("simple-without-ca-strict", scenario([pa("STRICT"), dr("SIMPLE")]), "503", "client-rejects-server-cert-503",
     "cluster_tls.go constructUpstreamTLS (CaCertificatePath 'system')"),
    ("simple-insecure-strict", scenario([pa("STRICT"), dr(None, traffic_policy={
        "tls": {"mode": "SIMPLE", "insecureSkipVerify": True}})]), "503", "simple-to-strict-503",
     "authn/utils/utils.go BuildInboundTLS RequireClientCertificate"),
    ("simple-permissive", scenario([dr("SIMPLE")]), "503", "app-tls-to-permissive-503",
     "filterchain_options.go inboundPermissiveHTTPFilterChainMatchWithMxcOptions (Istio ALPN only)"),
    ("mutual-disable", scenario([pa("DISABLE"), dr("MUTUAL")]), "503", "app-tls-to-disable-503",
     "filterchain_options.go inboundPlainTextHTTPFilterChainMatchOptions"),
    ("mutual-mesh-certs-strict-auto-san", scenario([pa("STRICT"), dr("MUTUAL")]), "503",
     "client-rejects-server-cert-503", "cluster_tls.go setAutoSniAndAutoSanValidation; envoy verifySubjectAltName"),
    ("mutual-with-server-san-strict", scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "MUTUAL", subjectAltNames=["spiffe://cluster.local/ns/httpbin/sa/httpbin"])})]), "mtls",
     "mutual-mesh-cert-to-strict", "file_mounted_certs/p2p_mtls_test.go TestClientToServiceTls"),
    ("mutual-wrong-san-strict", scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "MUTUAL", subjectAltNames=["spiffe://cluster.local/ns/other/sa/other"])})]), "503",
     "client-rejects-server-cert-503", "cluster_tls.go constructUpstreamTLS MatchSubjectAltNames"),
    ("mutual-sni-no-san-strict", scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "MUTUAL", sni="httpbin.httpbin.svc.cluster.local")})]), "mtls", "mutual-mesh-cert-to-strict",
     "cluster_tls.go setAutoSniAndAutoSanValidation (sni set: no auto SAN validation)"),
    ("mutual-naked-server", scenario([dr("MUTUAL")], server_sidecar=False), "503", "tls-to-naked-server-503",
     "httpbin speaks plaintext HTTP"),
    ("mutual-unknown-cert-file", scenario([pa("STRICT"), dr(None, traffic_policy={"tls": {
        "mode": "MUTUAL", "clientCertificate": "/etc/other/cert.pem", "privateKey": "/etc/other/key.pem"}})]),
     "503", "client-cert-unavailable-503", "cluster_tls.go constructSdsSecretConfigFromFile"),
    ("credential-name-with-selector", scenario([dr(None, selector={"app": "sleep"}, export_to=["."],
                                                   traffic_policy={"tls": {"mode": "SIMPLE",
                                                                           "credentialName": "ca"}})]),
     "503", "client-cert-unavailable-503", "cluster_tls.go buildUpstreamClusterTLSContext (isDrWithSelector)"),
    ("credential-name-without-selector", scenario([pa("STRICT"), dr(None, traffic_policy={
        "tls": {"mode": "SIMPLE", "credentialName": "ca"}})]), "503", "sidecar-plaintext-to-strict-503",
     "cluster_tls.go buildUpstreamClusterTLSContext (no TLS context for a sidecar without workloadSelector)"),
    ("istio-mutual-wrong-san-permissive", scenario([dr(None, traffic_policy={"tls": tls(
        "ISTIO_MUTUAL", subjectAltNames=["spiffe://cluster.local/ns/other/sa/other"])})]), "503",
     "client-rejects-server-cert-503", "cluster_tls.go buildUpstreamTLSSettings (DR subjectAltNames replace SAs)"),
    ("istio-mutual-right-san-strict", scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "ISTIO_MUTUAL", subjectAltNames=["spiffe://cluster.local/ns/httpbin/sa/httpbin"])})]), "mtls",
     "istio-mutual-accepted", "cluster_tls.go buildIstioMutualTLS"),
    ("istio-mutual-insecure-wrong-san-permissive", scenario([dr(None, traffic_policy={"tls": tls(
        "ISTIO_MUTUAL", insecureSkipVerify=True, subjectAltNames=["spiffe://cluster.local/ns/other/sa/other"])})]),
     "503", "client-rejects-server-cert-503",
     ("cluster_tls.go buildUpstreamClusterTLSContext case ISTIO_MUTUAL (always MatchSubjectAltNames + ROOTCA; "
      "buildIstioMutualTLS drops insecureSkipVerify in 1.28/1.29, 1.30 reads it for DFP clusters only)")),
    ("istio-mutual-custom-sni-strict", scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "ISTIO_MUTUAL", sni="httpbin.httpbin.svc.cluster.local")})]), "mtls", "istio-mutual-accepted",
     "cluster_tls.go buildUpstreamClusterTLSContext (Sni = tls.Sni); filterchain_options.go (no SNI match inbound)"),
    ("istio-mutual-wrong-san-disable", scenario([pa("DISABLE"), dr(None, traffic_policy={"tls": tls(
        "ISTIO_MUTUAL", subjectAltNames=["spiffe://x/ns/o/sa/o"])})]), "503", "istio-mutual-to-disable-503",
     "filterchain_options.go inboundPlainTextHTTPFilterChainMatchOptions (refused before any certificate)"),
    # --- client without sidecar: DestinationRule has no effect
    ("naked-client-dr-istio-mutual-strict", scenario([pa("STRICT"), dr("ISTIO_MUTUAL")], client_sidecar=False),
     "reset", "naked-client-to-strict-reset", "no proxy reads the DestinationRule"),
]


def _mismatches(cases) -> list[str]:
    out = []
    for case_id, data, outcome, rule, _source in cases:
        p = predict(data)
        if (p.outcome, p.rule) != (outcome, rule):
            out.append(f"{case_id}: expected {outcome}/{rule}, got {p.outcome}/{p.rule}")
    return out


@pytest.mark.parametrize("case_id,data,outcome,rule,source", CASES, ids=[c[0] for c in CASES])
def test_rule(case_id, data, outcome, rule, source):
    p = predict(data)
    assert (p.outcome, p.rule) == (outcome, rule), f"{case_id} (source: {source}): {p.reason} {p.details}"
    assert p.source == RULES[rule].source and p.reason.endswith(".")
    # The app sees the client's SPIFFE ID exactly when the server sidecar terminated mutual TLS.
    assert p.peer_identity == (SLEEP_ID if outcome == "mtls" else None), case_id


def test_every_rule_is_covered_and_cited():
    hit = {predict(data).rule for _, data, *_ in CASES}
    assert hit == set(RULES), f"rules without a self-test: {set(RULES) - hit}"
    assert set(OUTCOMES.values()) <= set(RULES)
    for rule_id, rule in RULES.items():
        assert "istio/istio" in rule.source, f"{rule_id} has no Istio citation"


@pytest.mark.parametrize("case_id,data,outcome,rule,source", [c for c in CASES if c[2] == "503"],
                         ids=[c[0] for c in CASES if c[2] == "503"])
def test_a_503_names_the_connections_the_client_sidecar_opens(case_id, data, outcome, rule, source):
    # route/retry/retry.go DefaultPolicy: NumRetries 2, RetryOn connect-failure,... (no "reset"): a connection
    # that fails is tried on 2 new ones (URX: retries exhausted); one the server closes once open is not retried.
    envoy = predict(data).envoy
    assert envoy["attempts"] == (3 if envoy["flags"] == "URX,UF" else 1), (case_id, envoy)
    assert envoy["flags"] in ("URX,UF", "UC") and "retry.go DefaultPolicy" in envoy["source"], case_id


# --- The default matrix, written out from the rules above ---------------------------------------------
# Rows: PA none, UNSET, DISABLE, PERMISSIVE, STRICT. Columns: DR none, DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL.
M, P, F, R = "mtls", "plaintext", "503", "reset"
EXPECTED_MATRIX = {
    ("client-sidecar", "server-sidecar"): [
        [M, P, F, F, M],  # none: auto mTLS (PERMISSIVE)
        [M, P, F, F, M],  # UNSET: inherits PERMISSIVE
        [P, P, F, F, F],  # DISABLE: auto mTLS off (namespace DISABLE), TLS refused
        [M, P, F, F, M],
        [M, F, F, F, M],  # STRICT
    ],
    ("client-sidecar", "server-no-sidecar"): [[P, P, F, F, F]] * 5,  # PA has no proxy to enforce it
    ("client-no-sidecar", "server-sidecar"): [[P] * 5, [P] * 5, [P] * 5, [P] * 5, [R] * 5],
    ("client-no-sidecar", "server-no-sidecar"): [[P] * 5] * 5,
}


def test_matrix_shape_and_ids():
    cells = matrix_scenarios()
    ids = [cell for cell, _ in cells]
    assert len(cells) == 100 and len(set(ids)) == 100
    assert "client-sidecar/server-sidecar/pa-strict/dr-istio-mutual" in ids
    assert "client-no-sidecar/server-no-sidecar/pa-none/dr-none" in ids
    for cell, data in cells:
        scenario_from_dict(data, cell)  # every cell is a valid scenario


def _matrix_differences() -> list[str]:
    pa_index = {"none": 0, "unset": 1, "disable": 2, "permissive": 3, "strict": 4}
    dr_index = {"none": 0, "disable": 1, "simple": 2, "mutual": 3, "istio-mutual": 4}
    wrong = []
    for row in matrix_predictions(None):
        client, server, pa_id, dr_id = row["cell"].split("/")
        want = EXPECTED_MATRIX[(client, server)][pa_index[pa_id[3:]]][dr_index[dr_id[3:]]]
        if row["outcome"] != want:
            wrong.append(f"{row['cell']}: {row['outcome']} != {want}")
    return wrong


def test_matrix_matches_the_written_table():
    assert not _matrix_differences()


def test_matrix_identity_and_wire():
    for row in matrix_predictions("1.28"):
        assert row["istio_version"] == "1.28"
        if row["outcome"] == "mtls":
            assert row["peer_identity"] == SLEEP_ID and row["wire"] == "mtls", row["cell"]
        else:
            assert row["peer_identity"] is None, row["cell"]
        if row["outcome"] in ("plaintext", "reset"):
            assert row["wire"] == "plaintext", row["cell"]


def test_naked_client_says_dr_has_no_effect():
    p = predict(scenario([dr("ISTIO_MUTUAL")], client_sidecar=False))
    assert "no effect without a client sidecar" in p.reason and p.client_tls == "plaintext"


def test_mutual_cell_wire_is_app_tls_not_istio():
    # cluster_tls.go constructUpstreamTLS sets no Istio ALPN and no outbound_ SNI for MUTUAL.
    p = predict(scenario([pa("STRICT"), dr("MUTUAL")]))
    assert (p.client_tls, p.wire, p.server_mode) == ("mutual", "app-tls", "STRICT")
    assert "auto_san_validation" in p.reason


# --- ISTIO_MUTUAL details (cluster_tls.go buildUpstreamTLSSettings, buildUpstreamClusterTLSContext) --------

OTHER_SAN = "spiffe://cluster.local/ns/other/sa/other"


def istio_mutual(*resources, **settings) -> dict:
    return scenario([*resources, dr(None, traffic_policy={"tls": tls("ISTIO_MUTUAL", **settings)})])


@pytest.mark.parametrize("resources", [[pa("STRICT")], []], ids=["strict", "permissive"])
def test_insecure_skip_verify_does_not_skip_the_san_check(resources):
    # The ISTIO_MUTUAL context always carries MatchSubjectAltNames and the mesh root; the flag changes nothing.
    p = predict(istio_mutual(*resources, insecureSkipVerify=True, subjectAltNames=[OTHER_SAN]))
    assert (p.outcome, p.rule) == ("503", "client-rejects-server-cert-503"), p.details
    assert any("insecureSkipVerify has no effect" in step for step in p.details)
    # ... and with the server's own identity (or none listed) the call still succeeds.
    for sans in (["spiffe://cluster.local/ns/httpbin/sa/httpbin"], []):
        p = predict(istio_mutual(*resources, insecureSkipVerify=True, subjectAltNames=sans))
        assert (p.outcome, p.wire) == ("mtls", "mtls"), p.details


@pytest.mark.parametrize("resources,outcome", [([pa("STRICT")], "mtls"), ([], "mtls"), ([pa("DISABLE")], "503")],
                         ids=["strict", "permissive", "disable"])
def test_istio_mutual_with_own_sni_is_not_istio_on_the_wire(resources, outcome):
    # Sni = tls.Sni replaces the outbound_ cluster name; Istio's ALPN stays. The inbound chains match ALPN
    # and transport protocol, never server names, so STRICT and PERMISSIVE accept it with the client's identity.
    p = predict(istio_mutual(*resources, sni="httpbin.httpbin.svc.cluster.local"))
    assert (p.outcome, p.wire, p.client_tls) == (outcome, "app-tls", "istio-mutual"), p.details
    assert p.peer_identity == (SLEEP_ID if outcome == "mtls" else None)
    assert "without Istio's SNI" in " ".join(p.details)


def test_istio_mutual_with_an_outbound_sni_stays_istio_mtls():
    p = predict(istio_mutual(pa("STRICT"), sni="outbound_.8000_._.httpbin.httpbin.svc.cluster.local"))
    assert (p.outcome, p.wire) == ("mtls", "mtls")


def test_istio_sni_form_agrees_with_the_wire_classifier():
    # The oracle predicts the label probes/verdict.py gives; both must read the same SNIs as Istio's.
    from probes.verdict import is_mesh_sni

    for sni in ("outbound_.8000_._.httpbin.httpbin.svc.cluster.local", "outbound_.80_.v1_.a.b.svc.cluster.local",
                "httpbin.httpbin.svc.cluster.local", "outbound_.x_._.host", "inbound_.8080_._.host", ""):
        assert bool(expectations.ISTIO_SNI.match(sni)) == is_mesh_sni(sni), sni


def test_mutation_sni_ignored_is_caught(monkeypatch):
    # An oracle that calls every ISTIO_MUTUAL flow Istio mTLS, whatever its SNI, predicts the wrong wire.
    monkeypatch.setattr(expectations, "ISTIO_SNI", re.compile(".*"))
    p = predict(istio_mutual(pa("STRICT"), sni="httpbin.httpbin.svc.cluster.local"))
    assert p.wire == "mtls"


# --- PeerAuthentication scope (policy_applier.go ComposePeerAuthentication, authentication.go) ---------

def mode_of(resources, **server):
    return predict(scenario(resources, **server)).server_mode


@pytest.mark.parametrize("resources,server,mode", [
    ([], {}, "PERMISSIVE"),
    ([pa("STRICT", ROOT_NS)], {}, "STRICT"),
    ([pa("STRICT", ROOT_NS), pa("DISABLE")], {}, "DISABLE"),
    ([pa("STRICT", ROOT_NS), pa("UNSET")], {}, "STRICT"),
    ([pa("UNSET", ROOT_NS)], {}, "PERMISSIVE"),
    ([pa(None)], {}, "PERMISSIVE"),
    ([pa("DISABLE"), pa("STRICT", name="w", selector=APP)], {}, "STRICT"),
    ([pa("DISABLE"), pa(None, name="w", selector=APP)], {}, "DISABLE"),
    ([pa("STRICT", name="w", selector=APP, ports={8080: "DISABLE"})], {}, "DISABLE"),
    ([pa("STRICT", name="w", selector=APP, ports={8000: "DISABLE"})], {}, "STRICT"),
    ([pa("STRICT", name="w", selector=APP, ports={9090: "DISABLE"})], {"target_port": 9090}, "DISABLE"),
    ([pa("STRICT"), pa("DISABLE", name="w", selector=APP, ports={8080: None})], {}, "DISABLE"),
    ([pa("STRICT", ROOT_NS, name="w", selector=APP)], {}, "PERMISSIVE"),
    ([pa("STRICT", name="w", selector={"app": "other"})], {}, "PERMISSIVE"),
    ([pa("STRICT", "sleep")], {}, "PERMISSIVE"),
    ([pa("STRICT", name="a"), pa("DISABLE", name="b")], {}, "STRICT"),
    ([pa("DISABLE", name="b"), pa("STRICT", name="a")], {}, "DISABLE"),
    ([pa("UNSET", ROOT_NS, name="a"), pa("STRICT", ROOT_NS, name="b")], {}, "PERMISSIVE"),
    ([pa("PERMISSIVE", name="a", selector=APP), pa("STRICT", name="b", selector=APP)], {}, "PERMISSIVE"),
], ids=["default", "mesh", "ns-over-mesh", "ns-unset-inherits-mesh", "mesh-unset", "ns-no-mtls",
        "workload-over-ns", "workload-no-mtls-inherits", "port-target", "port-service-ignored", "port-moved",
        "port-unset-inherits", "root-selector-ignored", "selector-no-match", "other-ns-ignored",
        "ns-oldest-wins", "ns-oldest-wins-2", "mesh-oldest-unset-wins", "workload-oldest-wins"])
def test_pa_scope(resources, server, mode):
    """Sources: policy_applier.go ComposePeerAuthentication (levels, UNSET, oldest wins, root selector
    ignored, PerPort by endpoint port), authentication.go getConfigsForWorkload (own + root namespace)."""
    assert mode_of(resources, **server) == mode


def test_a_left_out_mode_reads_as_unset_and_a_tls_block_without_mode_as_disable():
    # The parser keeps a missing mode missing (meshproof/istio_api.py); the oracle reads Istio's defaults in.
    port_without_mode = pa(None, name="httpbin", selector=APP, ports={8080: "DISABLE"})
    port_without_mode["spec"]["portLevelMtls"][8080] = {}
    assert mode_of([pa("STRICT"), port_without_mode]) == "STRICT"
    no_mode = expect(scenario_from_dict(scenario([pa("STRICT"), dr(None, traffic_policy={"tls": {}})])))
    disable = expect(scenario_from_dict(scenario([pa("STRICT"), dr("DISABLE")])))
    assert (no_mode.outcome, no_mode.rule) == (disable.outcome, disable.rule)


def test_creation_order_decides_not_the_name():
    # The scenario's list order is the creation order; names do not matter (sortConfigByCreationTime).
    a = mode_of([pa("STRICT", name="zzz"), pa("DISABLE", name="aaa")])
    b = mode_of([pa("DISABLE", name="aaa"), pa("STRICT", name="zzz")])
    assert (a, b) == ("STRICT", "DISABLE")


def test_ignored_objects_are_explained():
    p = predict(scenario([pa("STRICT", ROOT_NS, name="w", selector=APP), pa("STRICT", "sleep", name="x")]))
    text = " ".join(p.details)
    assert "istio-system/w is ignored" in text and "sleep/x is ignored" in text


# --- auto mTLS (push_context.go BestEffortInferServiceMTLSMode, mtls_checker.go) -----------------------

@pytest.mark.parametrize("resources,outcome,client_tls", [
    ([pa("DISABLE"), pa("STRICT", name="w", selector=APP)], "503", "plaintext"),
    ([pa("STRICT"), pa("DISABLE", name="w", selector=APP)], "plaintext", "plaintext"),
    ([pa("STRICT"), pa(None, name="w", selector=APP, ports={8080: "DISABLE"})], "plaintext", "plaintext"),
    ([pa("DISABLE", ROOT_NS)], "plaintext", "plaintext"),
    ([pa("DISABLE", ROOT_NS), pa("STRICT")], "mtls", "istio-mutual"),
    ([pa("DISABLE", ROOT_NS), pa("UNSET")], "plaintext", "plaintext"),
], ids=["ns-disable-hides-workload-strict", "endpoint-workload-disable", "endpoint-port-disable", "mesh-disable",
        "ns-strict-over-mesh-disable", "ns-unset-inherits-mesh-disable"])
def test_auto_mtls(resources, outcome, client_tls):
    """Sources: push_context.go BestEffortInferServiceMTLSMode (namespace/mesh only), cluster_tls.go
    buildUpstreamTLSSettings (DISABLE -> no TLS), mtls_checker.go checkMtlsEnabled (endpoint's own PA+port)."""
    p = predict(scenario(resources))
    assert (p.outcome, p.client_tls) == (outcome, client_tls), p.details


# --- DestinationRule selection (push_context.go destinationRule, destination_rule.go, sidecar.go) ------

@pytest.mark.parametrize("cell,client_tls", [
    ("dr-client-ns-beats-server-ns", "plaintext"),
    ("dr-server-ns-applies", "plaintext"),
    ("dr-server-ns-export-dot-hidden", "istio-mutual"),
    ("dr-server-ns-export-client-ns", "plaintext"),
    ("dr-root-ns-applies", "plaintext"),
    ("dr-server-ns-beats-root-ns", "istio-mutual"),
    ("dr-root-ns-export-dot-hidden", "istio-mutual"),
    ("dr-client-ns-exported-elsewhere", "istio-mutual"),
    ("dr-short-host-in-server-ns", "plaintext"),
    ("dr-short-host-in-client-ns", "istio-mutual"),
    ("dr-wildcard-client-ns-beats-exact-server-ns", "plaintext"),
    ("dr-merge-oldest-traffic-policy", "plaintext"),
    ("dr-merge-older-policy-without-tls", "istio-mutual"),
    ("dr-different-export-newest-applies", "plaintext"),
    ("dr-workload-selector-match", "plaintext"),
    ("dr-workload-selector-no-match", "istio-mutual"),
    ("dr-port-level-service-port", "plaintext"),
    ("dr-port-level-target-port-ignored", "istio-mutual"),
    ("dr-port-level-without-tls-top-disable", "plaintext"),
    ("dr-port-level-without-tls-naked-server", "plaintext"),
    ("dr-credential-name-without-selector", "plaintext"),
    ("dr-istio-mutual-custom-sni", "istio-mutual"),
    ("dr-istio-mutual-insecure-wrong-san", "istio-mutual"),
    ("dr-istio-mutual-naked-server", "istio-mutual"),
    ("dr-root-wildcard-istio-mutual-naked-server", "istio-mutual"),
    ("dr-root-wildcard-istio-mutual", "istio-mutual"),
    ("auto-mtls-naked-server", "plaintext"),
])
def test_dr_scope_cells(cell, client_tls):
    """Sources: push_context.go destinationRule/setDestinationRules (client ns, service ns, root ns, exportTo),
    config.go ResolveShortnameToFQDN/MostSpecificHostMatch, destination_rule.go mergeDestinationRule,
    sidecar.go SidecarScope.DestinationRule, util.go GetPortLevelTrafficPolicy, cluster_tls.go."""
    cells = dict(scope_scenarios())
    p = predict(cells[f"scope/{cell}"])
    assert p.client_tls == client_tls, p.details


def test_dr_top_istio_mutual_port_without_tls_keeps_endpoint_mtls():
    # util.go GetPortLevelTrafficPolicy: the port entry resets tls -> auto mTLS for the cluster;
    # mtls_checker.go trafficPolicyTLSModeForPort keeps ISTIO_MUTUAL for the endpoint label.
    p = predict(scenario([pa("DISABLE", name="w", selector=APP), dr("ISTIO_MUTUAL", ports={8000: None})]))
    assert (p.client_tls, p.outcome) == ("istio-mutual", "503")


def test_scope_cells_are_valid_and_unique():
    cells = scope_scenarios()
    assert len(cells) >= 30 and len({c for c, _ in cells}) == len(cells)
    for cell, data in cells:
        p = predict(data)
        assert p.outcome in ("mtls", "plaintext", "503", "reset"), cell


# --- versions -------------------------------------------------------------------------------------------

def test_every_supported_version_has_a_note():
    from meshproof.scenario import SUPPORTED_ISTIO_VERSIONS

    assert set(expectations.VERSION_NOTES) == set(SUPPORTED_ISTIO_VERSIONS)


def test_reachability_global_mtls_strict():
    # reachability_test.go 'global mtls strict': expectSuccess notNaked, expectMTLS notNaked.
    cells = dict(scope_scenarios())
    assert predict(cells["scope/dr-root-wildcard-istio-mutual"]).outcome == "mtls"
    assert predict(cells["scope/dr-root-wildcard-istio-mutual-naked-server"]).outcome == "503"
    assert predict(cells["scope/auto-mtls-naked-server"]).outcome == "plaintext"


def test_every_supported_version_is_an_input():
    for version in ("1.28", "1.29", "1.30"):
        assert predict(scenario([pa("STRICT")]), version).istio_version == version
    with pytest.raises(ManifestError, match="istio_version"):
        predict(scenario([]), "1.27")
    with pytest.raises(ManifestError, match="allowed: 1.28, 1.29, 1.30"):
        matrix_predictions("1.31")


def test_oracle_does_not_import_the_mesh():
    # The suites compare the oracle with the reference mesh; a shared module would hide a shared bug.
    for module in (expectations, matrix):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m and m.split(".")[0] == "cluster"], module.__name__


# --- mutation: a deliberately wrong rule makes the self-tests fail -------------------------------------

def test_mutation_wrong_table_entry_is_caught(monkeypatch):
    assert not _mismatches(CASES)
    monkeypatch.setitem(OUTCOMES, ("istio-mutual", "DISABLE"), "istio-mutual-accepted")
    assert any("istio-mutual-to-disable" in m for m in _mismatches(CASES))


def test_mutation_wrong_rule_outcome_is_caught(monkeypatch):
    monkeypatch.setitem(RULES, "naked-client-to-strict-reset", RULES["plaintext-accepted"])
    assert any("naked-client-strict" in m for m in _mismatches(CASES))


def test_mutation_newest_policy_wins_is_caught(monkeypatch):
    monkeypatch.setattr(expectations, "_oldest", lambda ps: max(ps, key=lambda p: p.order) if ps else None)
    assert mode_of([pa("STRICT", name="a"), pa("DISABLE", name="b")]) != "STRICT"


def test_mutation_auto_mtls_reading_workload_policy_is_caught(monkeypatch):
    # If auto mTLS saw the workload's STRICT (it does not), the ns-DISABLE + workload-STRICT cell would pass.
    real = expectations.server_policy

    def sees_workload(s):
        policy = real(s)
        return expectations.ServerPolicy(policy.mode, policy.mode, policy.steps)

    monkeypatch.setattr(expectations, "server_policy", sees_workload)
    p = predict(scenario([pa("DISABLE"), pa("STRICT", name="w", selector=APP)]))
    assert p.outcome != "503"


def test_mutation_strict_as_permissive_turns_the_matrix_red(monkeypatch):
    # The classic mesh bug: STRICT behaving as PERMISSIVE. It must show in exactly the STRICT rows.
    monkeypatch.setitem(OUTCOMES, ("naked", "STRICT"), "plaintext-accepted")
    monkeypatch.setitem(OUTCOMES, ("plaintext", "STRICT"), "plaintext-accepted")
    wrong = _matrix_differences()
    assert wrong and all("/pa-strict/" in w for w in wrong)
    assert len(wrong) == 5 + 1  # naked client x 5 DR modes, sidecar client with dr-disable


# --- Istio's TLS facts on the wire --------------------------------------------------------------------

def test_istio_mtls_handshake_facts_are_tls13_hidden_certificates_istio_alpn_and_sni():
    # cluster_tls.go defaultUpstreamCommonTLSContext + authn/utils/utils.go BuildInboundTLS: both sides max 1.3.
    p = predict(scenario([pa("STRICT")]))
    assert p.tls["version"] == "TLSv1.3" and p.tls["certificates_visible"] is False
    assert p.tls["alpn"] == "istio" and p.tls["sni"] == "outbound_.8000_._.httpbin.httpbin.svc.cluster.local"
    assert "defaultUpstreamCommonTLSContext" in p.tls["source"] and "BuildInboundTLS" in p.tls["source"]


def test_app_tls_success_is_judged_on_version_and_certificates_only():
    p = predict(scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "MUTUAL", subjectAltNames=["spiffe://cluster.local/ns/httpbin/sa/httpbin"])})]))
    assert (p.wire, p.tls["version"], p.tls["alpn"], p.tls["sni"]) == ("app-tls", "TLSv1.3", None, None)


def test_no_tls_facts_without_a_completed_sidecar_handshake():
    for data in (scenario([pa("DISABLE"), dr("ISTIO_MUTUAL")]), scenario([], client_sidecar=False),
                 scenario([pa("STRICT"), dr("SIMPLE")]), scenario([dr("DISABLE")])):
        assert predict(data).tls is None


def test_every_mtls_outcome_has_tls_facts():
    for cell, data in matrix_scenarios() + scope_scenarios():
        p = predict(data)
        assert (p.tls is not None) == (p.outcome == "mtls"), cell


def test_scope_has_cells_where_only_the_server_can_refuse():
    # The client accepts the server's certificate in each, so the server's own rule decides.
    cells = dict(scope_scenarios())
    rules = {cell: predict(cells[f"scope/{cell}"]).rule for cell in (
        "server-refuses-simple-mesh-ca-strict", "server-refuses-simple-insecure-strict",
        "server-refuses-mutual-mesh-certs-permissive", "server-refuses-mutual-mesh-certs-disable",
        "server-accepts-mutual-mesh-certs-strict")}
    assert rules == {"server-refuses-simple-mesh-ca-strict": "simple-to-strict-503",
                     "server-refuses-simple-insecure-strict": "simple-to-strict-503",
                     "server-refuses-mutual-mesh-certs-permissive": "app-tls-to-permissive-503",
                     "server-refuses-mutual-mesh-certs-disable": "app-tls-to-disable-503",
                     "server-accepts-mutual-mesh-certs-strict": "mutual-mesh-cert-to-strict"}


# --- Adversarial TLS clients (expect_handshake) -------------------------------------------------------

def test_every_handshake_rule_is_hit_by_the_adversary_suite_and_cited():
    from suites.adversary import adversary_cells
    from suites.expectations import HANDSHAKE_RULES, expect_handshake

    hit = {expect_handshake(scenario_from_dict(scn, cell), attempt).rule for cell, scn, attempt in adversary_cells()}
    assert hit == set(HANDSHAKE_RULES)
    for rule_id, rule in HANDSHAKE_RULES.items():
        assert "istio/istio" in rule.source, f"{rule_id} has no Istio citation"


@pytest.mark.parametrize("mode,attempt,outcome,rule", [
    # BuildInboundTLS: RequireClientCertificate on every mTLS chain (STRICT, and PERMISSIVE's Istio-ALPN chain).
    ("STRICT", "no-client-cert", "alert", "client-certificate-required"),
    ("PERMISSIVE", "istio-alpn-no-cert", "alert", "client-certificate-required"),
    # inboundPermissiveHTTPFilterChainMatchWithMxcOptions: TLS without Istio's ALPN matches no chain.
    ("PERMISSIVE", "no-client-cert", "closed", "permissive-needs-istio-alpn"),
    # inboundPlainTextHTTPFilterChainMatchOptions: DISABLE never reads a certificate.
    ("DISABLE", "mesh-cert-other-workload", "closed", "disable-has-no-tls-chain"),
    # TrustDomainsForValidation: the SAN prefix check runs even for a mesh-CA certificate.
    ("STRICT", "mesh-ca-other-trust-domain", "alert", "foreign-trust-domain"),
    ("PERMISSIVE", "other-ca", "alert", "untrusted-client-certificate"),
    ("STRICT", "mesh-cert-expired", "alert", "expired-client-certificate"),
    # Authentication is not authorization: any workload of the trust domain gets in.
    ("STRICT", "mesh-cert-other-workload", "accepted", "mesh-identity-accepted"),
    # GetMinTLSVersion: TLS 1.2 is the default minimum, so 1.2 gets in and 1.0/1.1 do not.
    ("STRICT", "tls12-only", "accepted", "mesh-identity-accepted"),
    ("PERMISSIVE", "tls10-11", "alert", "below-minimum-tls-version"),
])
def test_handshake_rule(mode, attempt, outcome, rule):
    from suites.adversary import ATTEMPTS
    from suites.expectations import expect_handshake

    p = expect_handshake(scenario_from_dict(scenario([pa(mode)], client_sidecar=False), "t"), ATTEMPTS[attempt])
    assert (p.outcome, p.rule) == (outcome, rule), p.reason
    if outcome == "accepted":
        assert p.peer_identity == ATTEMPTS[attempt].spiffe_id and p.tls_version == ATTEMPTS[attempt].versions[-1]


def test_a_handshake_needs_a_server_sidecar():
    from suites.adversary import ATTEMPTS
    from suites.expectations import expect_handshake

    with pytest.raises(ValueError, match="no sidecar"):
        expect_handshake(scenario_from_dict(scenario([], client_sidecar=False, server_sidecar=False), "t"),
                         ATTEMPTS["no-client-cert"])


# --- Cases the mutation run (make mutants) showed untested; each names the source it was read from -----

def test_dr_superset_export_merges_into_a_selector_rule_and_also_stands_alone():
    # destination_rule.go mergeDestinationRule: a rule without selector whose exportTo is a superset of an
    # existing selector rule's merges into it and is also appended on its own (only two rules without selectors,
    # or with equal ones, merge and stop there); sidecar.go then takes the standalone one for a client the
    # selector does not pick.
    p = predict(scenario([pa("STRICT"), dr("ISTIO_MUTUAL", name="other", selector={"app": "other"}),
                          dr("DISABLE", name="all", export_to=[".", "httpbin"])]))
    assert p.client_tls == "plaintext" and p.outcome == "503", p.details
    assert "DestinationRules sleep/other, sleep/all merge; the oldest trafficPolicy is kept" in p.details


def test_dr_single_rule_reports_no_merge():
    assert not any("merge" in step for step in predict(scenario([pa("STRICT"), dr("DISABLE")])).details)


def test_dr_selector_rules_with_different_selectors_stay_apart():
    # mergeDestinationRule: two rules with different workloadSelectors are never merged.
    p = predict(scenario([pa("STRICT"), dr("ISTIO_MUTUAL", name="other", selector={"app": "other"}),
                          dr("DISABLE", name="sleep", selector={"app": "sleep"})]))
    assert p.client_tls == "plaintext" and p.outcome == "503", p.details


def test_dr_exact_host_is_not_a_suffix_match():
    # config.go MostSpecificHostMatch: only a wildcard host matches by suffix.
    p = predict(scenario([pa("STRICT"), dr("DISABLE", host="xhttpbin.httpbin.svc.cluster.local")]))
    assert p.client_tls == "istio-mutual", p.details


@pytest.mark.parametrize("resources", [[pa("DISABLE", ROOT_NS)], [pa("DISABLE", ROOT_NS), pa("UNSET")]],
                         ids=["mesh-disable", "namespace-unset-inherits-mesh-disable"])
def test_auto_mtls_sees_the_mesh_mode_through_an_unset_namespace(resources):
    # push_context.go BestEffortInferServiceMTLSMode: namespace level, UNSET inherits the mesh level; a workload
    # STRICT is not seen, so the client sends plaintext and STRICT refuses it.
    p = predict(scenario(resources))
    assert (p.client_tls, p.outcome) == ("plaintext", "plaintext"), p.details
    p = predict(scenario([*resources, pa("STRICT", name="w", selector=APP)]))
    assert (p.client_tls, p.outcome) == ("plaintext", "503"), p.details


def test_explanations_name_what_decided():
    assert "no PeerAuthentication applies, so the default PERMISSIVE holds" in predict(scenario([])).details
    assert not any("no PeerAuthentication applies" in s for s in predict(scenario([pa("STRICT")])).details)
    naked = predict(scenario([], server_sidecar=False))
    assert "the server has no sidecar" in naked.reason
    assert "the server's target port 8080 is STRICT" in predict(scenario([pa("STRICT")])).reason
    ports = predict(scenario([pa("STRICT", name="w", selector=APP, ports={8000: "DISABLE"})]))
    assert "portLevelMtls[8000] does not apply to target port 8080 (that is the Service port: portLevelMtls is " \
           "keyed by the target port)" in ports.details
    reset = predict(scenario([pa("STRICT"), dr("DISABLE", ports={8000: None})]))
    assert any(s.endswith("and sets no tls, so the cluster falls back to auto mTLS") for s in reset.details)
    assert reset.reason.startswith("Auto mTLS: the DestinationRule's top-level tls mode DISABLE decides")
    short = predict(scenario([pa("STRICT"), dr("DISABLE", host="httpbin")]))
    assert ("DestinationRule sleep/httpbin host 'httpbin' resolves to httpbin.sleep.svc.cluster.local, which is "
            "not httpbin.httpbin.svc.cluster.local") in short.details
    assert not any("resolves to" in s for s in predict(scenario([pa("STRICT"), dr("DISABLE")])).details)
    kept = predict(scenario([pa("STRICT"), dr("DISABLE", ports={8000: {"mode": "ISTIO_MUTUAL"}})]))
    assert not any("sets no tls" in s for s in kept.details)


def test_a_bad_version_names_the_scenario():
    named = replace(scenario_from_dict(scenario([]), "t"), name="my-cell", istio_version="0.1")
    with pytest.raises(ManifestError, match="my-cell"):
        expect(named)


def test_explanations_of_ignored_and_losing_objects():
    # authentication.go getConfigsForWorkload + policy_applier.go ComposePeerAuthentication (oldest wins).
    conflict = predict(scenario([pa("STRICT", name="first"), pa("PERMISSIVE", name="second")]))
    losers = [s for s in conflict.details if "loses to the older" in s]
    assert losers == [("namespace-level PeerAuthentication httpbin/second loses to the older httpbin/first "
                      "(the oldest wins)")]
    unselected = predict(scenario([pa("STRICT"), pa("DISABLE", name="other", selector={"app": "other"})]))
    assert [s for s in unselected.details if "does not select" in s] == [
        "PeerAuthentication httpbin/other does not select the server (labels {'app': 'httpbin'})"]
    selected = predict(scenario([pa("STRICT", name="w", selector=APP)]))
    assert not any("does not select" in s for s in selected.details)
    hidden = predict(scenario([pa("STRICT"), dr("DISABLE", "httpbin", export_to=["other"])]))
    assert any("is not exported to sleep" in s for s in hidden.details)


def test_predictions_and_rules_are_immutable():
    import dataclasses

    for target, attribute in ((predict(scenario([])), "outcome"), (RULES["plaintext-accepted"], "outcome"),
                              (expectations.select_destination_rule(scenario_from_dict(scenario([]), "t")), "entry")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, attribute, None)
    # Every value the oracle hands out is frozen; only the merge's working entries change as rules merge.
    mutable = [name for name, value in vars(expectations).items() if isinstance(value, type)
               and dataclasses.is_dataclass(value) and value.__module__ == expectations.__name__
               and not value.__dataclass_params__.frozen]
    assert mutable == ["_Consolidated"]


def test_a_wildcard_host_matches_whole_labels():
    # config.go MostSpecificHostMatch: *.bin.httpbin.svc.cluster.local covers <x>.bin.httpbin..., not httpbin.httpbin...
    p = predict(scenario([pa("STRICT"), dr("DISABLE", host="*.bin.httpbin.svc.cluster.local")]))
    assert p.client_tls == "istio-mutual", p.details


def test_rules_with_one_selector_merge_and_the_first_policy_fills_in():
    # mergeDestinationRule: equal selectors merge (a different one is skipped, and the search goes on).
    p = predict(scenario([pa("STRICT"), dr("ISTIO_MUTUAL", name="a-other", selector={"app": "other"}),
                          dr(None, name="b-sleep", selector={"app": "sleep"}),
                          dr("DISABLE", name="c-sleep", selector={"app": "sleep"})]))
    assert (p.client_tls, p.outcome) == ("plaintext", "503"), p.details


def test_the_root_namespace_is_searched_when_the_service_namespace_hides_its_rules():
    # push_context.go destinationRule: a service-namespace rule not exported to the client is skipped and the
    # root namespace's exported rules are looked at next.
    p = predict(scenario([pa("STRICT"), dr("ISTIO_MUTUAL", "httpbin", export_to=["other"]), dr("DISABLE", ROOT_NS)]))
    assert (p.client_tls, p.outcome) == ("plaintext", "503"), p.details
    wild = predict(scenario([pa("STRICT"), dr("DISABLE", host="*.local", name="wild")]))
    assert not any("resolves to" in s for s in wild.details)


def test_an_explicit_unset_port_mode_inherits_the_workload_mode():
    # policy_applier.go ComposePeerAuthentication: a port-level UNSET inherits, spelled out or left out.
    p = predict(scenario([pa("STRICT"), pa("UNSET", name="w", selector=APP, ports={8080: "UNSET"})]))
    assert p.server_mode == "STRICT", p.details


def test_a_rule_of_an_unrelated_namespace_never_applies():
    # push_context.go destinationRule: the client's namespace, the service's, then the root namespace; no other.
    p = predict(scenario([pa("STRICT"), dr("DISABLE", "other")]))
    assert p.client_tls == "istio-mutual", p.details


def _root_client(resources):
    data = scenario(resources)
    return predict({**data, "client": {"namespace": ROOT_NS, "sidecar": True}})


def test_a_client_in_the_root_namespace_sees_the_root_private_rules_only():
    # push_context.go destinationRule: a client in the root namespace looks at the root namespace's own
    # (exportTo ".") rules first; another namespace's private rules stay invisible to it.
    assert _root_client([pa("STRICT"), dr("DISABLE", ROOT_NS, export_to=["."])]).client_tls == "plaintext"
    assert _root_client([pa("STRICT"), dr("DISABLE", "httpbin", export_to=["."])]).client_tls == "istio-mutual"
    # Nor its own namespace's rule exported to '.' and another namespace: not private, and the exported
    # rules count for the root client only when they name it or '*' ('.' is not expanded there).
    assert _root_client([pa("STRICT"), dr("DISABLE", ROOT_NS, export_to=[".", "httpbin"])]).client_tls == "istio-mutual"


def test_dr_merge_keeps_the_first_traffic_policy_that_arrives():
    # mergeDestinationRule: only a merged rule WITHOUT a top-level trafficPolicy takes the incoming one.
    p = predict(scenario([pa("STRICT"), dr(None, name="a"), dr("DISABLE", name="b"), dr("ISTIO_MUTUAL", name="c")]))
    assert (p.client_tls, p.outcome) == ("plaintext", "503"), p.details


def test_dr_two_plain_rules_with_a_superset_export_merge_and_do_not_stand_alone():
    # mergeDestinationRule: bothWithoutSelector -> appendSeparately = false, even for a superset exportTo.
    p = predict(scenario([pa("STRICT"), dr("DISABLE", name="first", export_to=["."]),
                          dr("ISTIO_MUTUAL", name="second", export_to=[".", "httpbin"])]))
    assert (p.client_tls, p.outcome) == ("plaintext", "503"), p.details


def test_dr_a_rule_merges_with_a_later_entry_after_one_it_cannot_merge_with():
    # mergeDestinationRule: `continue` to the next entry, not stop: "." merges into the "." entry, not the "*" one.
    p = predict(scenario([pa("STRICT"), dr("DISABLE", name="all", export_to=["*"]),
                          dr("ISTIO_MUTUAL", name="own", export_to=["."]), dr("DISABLE", name="own2", export_to=["."])]))
    assert (p.client_tls, p.outcome) == ("istio-mutual", "mtls"), p.details


def test_dr_selector_rules_sort_first_and_absorb_an_equal_export_plain_rule():
    # sortConfigBySelectorAndCreationTime puts selector rules first; a later plain rule with equal exportTo then
    # merges into the selector entry (appendSeparately stays false), which selects the client.
    p = predict(scenario([pa("STRICT"), dr("DISABLE", name="all", export_to=["."]),
                          dr("ISTIO_MUTUAL", name="sleep", selector={"app": "sleep"})]))
    assert (p.client_tls, p.outcome) == ("istio-mutual", "mtls"), p.details


def test_dr_a_plain_rule_with_equal_export_is_absorbed_by_a_selector_rule():
    # mergeDestinationRule: equal exportTo sets appendSeparately = false, and neither both-plain nor
    # both-selected resets it: the plain rule only merges into the selector entry, which does not select this
    # client, so no rule applies (auto mTLS).
    p = predict(scenario([pa("STRICT"), dr("DISABLE", name="all", export_to=["."]),
                          dr("ISTIO_MUTUAL", name="other", selector={"app": "other"})]))
    assert (p.client_tls, p.outcome) == ("istio-mutual", "mtls"), p.details


def test_more_explanations():
    auto = predict(scenario([]))
    assert auto.reason.startswith("Auto mTLS: the endpoint has a sidecar") and "sends Istio mTLS" in auto.reason
    assert "so the client sends plaintext" in predict(scenario([pa("DISABLE")])).reason
    target = predict(scenario([pa("STRICT"), dr("ISTIO_MUTUAL", ports={8080: {"mode": "DISABLE"}})]))
    assert ("portLevelSettings[8080] does not apply to Service port 8000 (the target port: portLevelSettings are "
            "keyed by the Service port)") in target.details
    other = predict(scenario([pa("STRICT"), dr("ISTIO_MUTUAL", ports={9999: {"mode": "DISABLE"}})]))
    assert "portLevelSettings[9999] does not apply to Service port 8000" in other.details
    wrong_san = predict(scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "MUTUAL", subjectAltNames=["spiffe://cluster.local/ns/other/sa/other"])})]))
    assert wrong_san.details[-1].startswith("subjectAltNames ['spiffe://cluster.local/ns/other/sa/other'] do not "
                                            "include spiffe://cluster.local/ns/httpbin/sa/httpbin")
    simple = predict(scenario([pa("STRICT"), dr("SIMPLE")]))
    assert any("SNI from the Host header (auto_sni)" in s for s in simple.details)
    sni = predict(scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls("SIMPLE", sni="x.example")})]))
    assert any("SNI x.example" in s for s in sni.details)
    app_tls = predict(scenario([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "MUTUAL", subjectAltNames=["spiffe://cluster.local/ns/httpbin/sa/httpbin"])})]))
    assert "filters.go" not in app_tls.tls["source"] and "filters.go" in predict(scenario([])).tls["source"]


def test_an_adversary_offering_a_range_is_judged_by_the_highest_version():
    # BuildInboundTLS: TLS 1.2 is enough, whatever older versions the ClientHello also offers.
    from suites.adversary import ATTEMPTS
    from suites.expectations import expect_handshake

    attempt = replace(ATTEMPTS["tls12-only"], versions=("TLSv1.1", "TLSv1.2"))
    p = expect_handshake(scenario_from_dict(scenario([pa("STRICT")], client_sidecar=False), "t"), attempt)
    assert (p.outcome, p.tls_version) == ("accepted", "TLSv1.2")


# --- protocol selection by port name (ConvertProtocol) ---------------------------------------------------

@pytest.mark.parametrize(("name", "port", "protocol"), [
    ("http", 8000, "HTTP"), ("http-web", 8000, "HTTP"), ("HTTP", 8000, "HTTP"), ("http2", 8000, "HTTP2"),
    ("https", 8443, "HTTPS"), ("tls-passthrough", 443, "TLS"), ("tcp", 9000, "TCP"), ("tcp-echo", 9000, "TCP"),
    ("grpc-web-ui", 8000, "GRPC-Web"), ("grpc", 8000, "GRPC"), ("mysql", 3306, "MySQL"), ("redis", 6379, "Redis"),
    ("web", 8000, "auto"), ("httpx", 8000, "auto"), ("web", 3306, "TCP"), ("smtp", 25, "TCP"), ("web", 26, "auto"),
    ("web", 53, "TCP"), ("web", 27017, "TCP"), ("web", 27018, "auto"),  # DNS and MongoDB are well-known too
])
def test_port_protocol_follows_the_name_prefix_then_well_known_ports(name, port, protocol):
    assert expectations.port_protocol(name, port) == protocol
    assert "ConvertProtocol" in expectations.SRC_PROTOCOL


@pytest.mark.parametrize(("name", "app_protocol", "protocol"), [
    ("web", "tcp", "TCP"), ("http", "tcp", "TCP"), ("tcp", "http", "HTTP"), ("web", "HTTP-x", "HTTP"),
    ("tcp", "kubernetes.io/ws", "HTTP"), ("http", "kubernetes.io/wss", "HTTPS"), ("http", "kubernetes.io/h2c", "HTTP2"),
    ("http", "example.com/custom", "auto"),
])
def test_app_protocol_comes_before_the_port_name(name, app_protocol, protocol):
    assert expectations.port_protocol(name, 8000, app_protocol) == protocol


def test_the_oracle_names_app_protocol_where_it_decides():
    banner = scenario_from_dict({**scenario([pa("STRICT")]),
                                 "server": {"app": "banner", "port_name": "http", "app_protocol": "tcp"}})
    assert "the Service port's appProtocol 'tcp' means protocol TCP (ConvertProtocol)" in expect(banner).details
    h2c = scenario_from_dict({**scenario([pa("STRICT")]), "name": "h2c",
                              "server": {"app": "banner", "app_protocol": "kubernetes.io/h2c"}})
    with pytest.raises(ManifestError, match=r"^h2c: .*server\.app_protocol: 'kubernetes.io/h2c' is valid but the "
                                            r"oracle does not"):
        expect(h2c)


@pytest.mark.parametrize(("server", "what"), [
    ({"app_protocol": "web"}, "HTTP that the client sidecar sends as simple TLS to a sniffed port"),
    ({"app_protocol": "tcp"}, "handshake rules cover HTTP ports only"),
])
def test_what_the_oracle_refuses_names_the_app_protocol_and_the_scenario(server, what):
    sniffed = scenario_from_dict({**scenario([pa("STRICT"), dr("SIMPLE")]), "name": "mine", "server": server})
    with pytest.raises(ManifestError, match=rf"^mine: .*server\.app_protocol: '{server['app_protocol']}' is valid"):
        if "handshake" in what:
            from suites.adversary import ATTEMPTS

            expectations.expect_handshake(sniffed, next(iter(ATTEMPTS.values())))
        else:
            expect(sniffed)


def test_the_oracle_refuses_what_it_has_no_rules_for_naming_the_field():
    beyond = scenario_from_dict({**scenario([pa("STRICT")]), "server": {"app": "banner", "port_name": "grpc"}})
    with pytest.raises(ManifestError, match=r"server\.port_name: 'grpc' is valid but the oracle does not handle it "
                                            r"yet: it means protocol GRPC"):
        expect(beyond)
