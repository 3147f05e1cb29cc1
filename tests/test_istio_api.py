"""Validation of PeerAuthentication and DestinationRule (meshproof/istio_api.py): what Istio's validating
webhook refuses is refused here, with one message naming the file, the resource, the field and what is allowed.

Sources: istio/istio 1.30.3 pkg/config/validation/validation.go (ValidatePeerAuthentication,
ValidateDestinationRule, validateTrafficPolicy, validatePortTrafficPolicies, validateExportTo,
validateWorkloadSelector), pkg/config/validation/agent/validation.go ValidateTLS, pkg/config/visibility
Instance.Validate, and the enums in istio/api.
"""

from __future__ import annotations

import pytest

from meshproof.istio_api import ClientTLS, DestinationRule, ManifestError, PeerAuthentication, parse_resources
from suites.matrix import dr, pa

CERTS = {"clientCertificate": "/etc/certs/cert-chain.pem", "privateKey": "/etc/certs/key.pem"}


def with_spec(manifest: dict, **spec) -> dict:
    return {**manifest, "spec": {**manifest["spec"], **spec}}


def dr_tls(settings: dict, **spec) -> dict:
    return with_spec(dr(None), trafficPolicy={"tls": settings}, **spec)


def test_valid_records():
    parsed = parse_resources([
        pa("STRICT", selector={"app": "httpbin"}, ports={8080: "DISABLE", 9090: None}),
        dr("MUTUAL", export_to=["."], ports={8000: {"mode": "DISABLE"}, 9000: None}),
    ], "f.yaml")
    peer, rule = parsed
    assert peer == PeerAuthentication("default", "httpbin", 0, {"app": "httpbin"}, "STRICT",
                                      {8080: "DISABLE", 9090: None})
    assert isinstance(rule, DestinationRule) and rule.order == 1 and rule.export_to == (".",)
    assert rule.tls.mode == "MUTUAL" and rule.tls.client_certificate == "/etc/certs/cert-chain.pem"
    assert rule.port_tls == {8000: ClientTLS("DISABLE"), 9000: None} and rule.has_traffic_policy


def test_a_left_out_mode_stays_left_out():
    # The parser decides no semantics: UNSET (PeerAuthentication) and DISABLE (tls) are for the oracle and
    # the reference mesh's control plane to read into a missing mode.
    peer, rule = parse_resources([with_spec(pa(None, selector={"app": "httpbin"}), mtls={}, portLevelMtls={8080: {}}),
                                  dr_tls({}, )], "f.yaml")
    assert peer.mode is None and peer.port_level == {8080: None} and rule.tls.mode is None


def test_absent_mtls_and_traffic_policy():
    peer, rule = parse_resources([pa(None), dr(None)], "f.yaml")
    assert peer.mode is None and rule.tls is None and not rule.has_traffic_policy


def test_accepted_edge_cases():
    # Accepted by the webhook: insecureSkipVerify with a CA only matters for SIMPLE/MUTUAL (ValidateTLS);
    # credentialName alone for MUTUAL; a selector DR exported to its own namespace by name.
    parse_resources([dr_tls({"mode": "ISTIO_MUTUAL", "insecureSkipVerify": True, "caCertificates": "/ca.pem"}),
                     with_spec(dr_tls({"mode": "MUTUAL", "credentialName": "cred"}), exportTo=["sleep"],
                               workloadSelector={"matchLabels": {"app": "sleep"}})
                     | {"metadata": {"name": "two", "namespace": "sleep"}}], "f.yaml")


# (id, manifest, field path the message must name, words the message must contain)
INVALID = [
    ("unknown-kind", {**pa("STRICT"), "kind": "AuthorizationPolicy"}, "kind", "allowed: PeerAuthentication"),
    ("wrong-api-version", {**pa("STRICT"), "apiVersion": "networking.istio.io/v1"}, "apiVersion",
     "allowed: security.istio.io/v1"),
    ("no-metadata", {k: v for k, v in pa("STRICT").items() if k != "metadata"}, "metadata", "required"),
    ("bad-name", {**pa("STRICT"), "metadata": {"name": "Bad_Name", "namespace": "httpbin"}}, "metadata.name",
     "DNS-1123"),
    ("no-namespace", {**pa("STRICT"), "metadata": {"name": "x"}}, "metadata.namespace", "required"),
    ("spec-not-mapping", {**pa("STRICT"), "spec": ["x"]}, "spec", "mapping"),
    ("pa-typo", with_spec(pa(None), mtsl={"mode": "STRICT"}), "spec.mtsl", "allowed: selector, mtls, portLevelMtls"),
    ("pa-mtls-not-mapping", with_spec(pa(None), mtls="STRICT"), "spec.mtls", "{mode: STRICT}"),
    ("pa-unknown-mode", pa("STRICTER"), "spec.mtls.mode", "allowed: UNSET, DISABLE, PERMISSIVE, STRICT"),
    ("pa-lowercase-mode", pa("strict"), "spec.mtls.mode", "allowed: UNSET"),
    ("pa-port-level-without-selector", with_spec(pa(None), portLevelMtls={8080: {"mode": "DISABLE"}}),
     "spec.portLevelMtls", "requires a workload selector"),
    ("pa-port-level-empty", with_spec(pa(None, selector={"app": "httpbin"}), portLevelMtls={}),
     "spec.portLevelMtls", "at least one port"),
    ("pa-port-zero", pa(None, selector={"app": "httpbin"}, ports={0: "STRICT"}), "spec.portLevelMtls[0]",
     "1-65535"),
    ("pa-port-too-big", pa(None, selector={"app": "httpbin"}, ports={70000: "STRICT"}),
     "spec.portLevelMtls[70000]", "1-65535"),
    ("pa-port-mode", pa(None, selector={"app": "httpbin"}, ports={8080: "OFF"}), "spec.portLevelMtls[8080].mode",
     "allowed: UNSET"),
    ("pa-selector-wildcard", pa("STRICT", selector={"app": "*"}), "spec.selector.matchLabels.app",
     "not a valid label value"),
    ("pa-selector-typo", with_spec(pa("STRICT"), selector={"matchLabel": {"app": "x"}}),
     "spec.selector.matchLabel", "allowed: matchLabels"),
    ("dr-no-host", with_spec(dr("DISABLE"), host=""), "spec.host", "required"),
    ("dr-bad-host", with_spec(dr("DISABLE"), host="http://httpbin"), "spec.host", "service host name"),
    ("dr-unknown-tls-mode", dr_tls({"mode": "ISTIO_MTLS"}), "spec.trafficPolicy.tls.mode",
     "allowed: DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"),
    ("dr-tls-typo", dr_tls({"mode": "SIMPLE", "caCertificate": "/ca.pem"}), "spec.trafficPolicy.tls.caCertificate",
     "unknown field"),
    ("dr-mutual-without-cert", dr_tls({"mode": "MUTUAL"}), "spec.trafficPolicy.tls.clientCertificate",
     "required for mode MUTUAL"),
    ("dr-mutual-without-key", dr_tls({"mode": "MUTUAL", "clientCertificate": "/c.pem"}),
     "spec.trafficPolicy.tls.privateKey", "required for mode MUTUAL"),
    ("dr-credential-and-files", dr_tls({"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/x.pem"}),
     "spec.trafficPolicy.tls.credentialName", "cannot be combined"),
    ("dr-simple-insecure-with-ca", dr_tls({"mode": "SIMPLE", "insecureSkipVerify": True, "caCertificates": "/c"}),
     "spec.trafficPolicy.tls.insecureSkipVerify", "mode SIMPLE"),
    ("dr-mutual-insecure-with-san", dr_tls({"mode": "MUTUAL", "insecureSkipVerify": True,
                                            "subjectAltNames": ["x"], **CERTS}),
     "spec.trafficPolicy.tls.insecureSkipVerify", "mode MUTUAL"),
    ("dr-empty-traffic-policy", with_spec(dr(None), trafficPolicy={}), "spec.trafficPolicy", "at least one of"),
    ("dr-traffic-policy-typo", with_spec(dr(None), trafficPolicy={"tsl": {"mode": "DISABLE"}}),
     "spec.trafficPolicy.tsl", "unknown field"),
    ("dr-port-setting-without-port", with_spec(dr(None), trafficPolicy={"portLevelSettings": [
        {"tls": {"mode": "DISABLE"}}]}), "spec.trafficPolicy.portLevelSettings[0].port", "number"),
    ("dr-port-setting-only-port", with_spec(dr(None), trafficPolicy={"portLevelSettings": [
        {"port": {"number": 8000}}]}), "spec.trafficPolicy.portLevelSettings[0]", "at least one of"),
    ("dr-port-setting-twice", with_spec(dr(None), trafficPolicy={"portLevelSettings": [
        {"port": {"number": 8000}, "tls": {"mode": "DISABLE"}},
        {"port": {"number": 8000}, "tls": {"mode": "SIMPLE"}}]}),
     "spec.trafficPolicy.portLevelSettings[1].port.number", "listed twice"),
    ("dr-export-none", dr("DISABLE", export_to=["~"]), "spec.exportTo", "allowed values are '.', '*'"),
    ("dr-export-star-and-more", dr("DISABLE", export_to=["*", "httpbin"]), "spec.exportTo", "'*' cannot"),
    ("dr-export-dot-and-own", dr("DISABLE", export_to=[".", "sleep"]), "spec.exportTo", "duplicate"),
    ("dr-export-bad-ns", dr("DISABLE", export_to=["Not_A_NS"]), "spec.exportTo", "namespace name"),
    ("dr-selector-exported-away", dr("DISABLE", selector={"app": "sleep"}, export_to=["httpbin"]),
     "spec.exportTo", "workloadSelector"),
    ("dr-subset-without-name", with_spec(dr(None), subsets=[{"labels": {"v": "1"}}]), "spec.subsets[0].name",
     "needs a name"),
    # Wrong types in ClientTLSSettings: the CRD schema refuses them, nothing is converted.
    ("tls-san-string", dr_tls({"mode": "ISTIO_MUTUAL", "subjectAltNames": "spiffe://cluster.local/ns/a/sa/b"}),
     "spec.trafficPolicy.tls.subjectAltNames", "must be a list of strings"),
    ("tls-san-not-all-strings", dr_tls({"mode": "ISTIO_MUTUAL", "subjectAltNames": ["spiffe://a", 5]}),
     "spec.trafficPolicy.tls.subjectAltNames", "must be a list of strings"),
    ("tls-insecure-string", dr_tls({"mode": "SIMPLE", "insecureSkipVerify": "false"}),
     "spec.trafficPolicy.tls.insecureSkipVerify", "allowed: true, false"),
    ("tls-insecure-number", dr_tls({"mode": "SIMPLE", "insecureSkipVerify": 0}),
     "spec.trafficPolicy.tls.insecureSkipVerify", "allowed: true, false"),
    ("tls-sni-number", dr_tls({"mode": "ISTIO_MUTUAL", "sni": 5}), "spec.trafficPolicy.tls.sni", "must be a string"),
    ("tls-cert-list", dr_tls({"mode": "MUTUAL", **CERTS, "clientCertificate": ["/c.pem"]}),
     "spec.trafficPolicy.tls.clientCertificate", "must be a string"),
    ("tls-ca-crl-number", dr_tls({"mode": "SIMPLE", "caCrl": 1}), "spec.trafficPolicy.tls.caCrl", "must be a string"),
    ("port-tls-sni-number", with_spec(dr(None), trafficPolicy={"portLevelSettings": [
        {"port": {"number": 8000}, "tls": {"mode": "ISTIO_MUTUAL", "sni": 8000}}]}),
     "spec.trafficPolicy.portLevelSettings[0].tls.sni", "must be a string"),
    ("subsets-not-list", with_spec(dr(None), subsets={"name": "v1"}), "spec.subsets", "must be a list"),
    ("subset-labels-number", with_spec(dr(None), subsets=[{"name": "v1", "labels": 3}]), "spec.subsets[0].labels",
     "mapping of label key to string value"),
    ("subset-label-value-number", with_spec(dr(None), subsets=[{"name": "v1", "labels": {"version": 1}}]),
     "spec.subsets[0].labels.version", "not a valid label value"),
    ("subset-label-bad-key", with_spec(dr(None), subsets=[{"name": "v1", "labels": {"bad key": "x"}}]),
     "spec.subsets[0].labels", "not a valid label key"),
    ("subset-typo", with_spec(dr(None), subsets=[{"name": "v1", "lables": {"v": "1"}}]), "spec.subsets[0].lables",
     "allowed: name, labels, trafficPolicy"),
    ("pa-selector-bad-prefix", pa("STRICT", selector={"Bad_Prefix/app": "x"}), "spec.selector.matchLabels",
     "not a valid label key"),
    ("pa-selector-empty-prefix", pa("STRICT", selector={"/app": "x"}), "spec.selector.matchLabels",
     "not a valid label key"),
    ("dr-subset-bad-tls", with_spec(dr(None), subsets=[{"name": "v1", "trafficPolicy": {"tls": {"mode": "X"}}}]),
     "spec.subsets[0].trafficPolicy.tls.mode", "allowed: DISABLE"),
]


@pytest.mark.parametrize("manifest,field_path,words", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused(manifest, field_path, words):
    with pytest.raises(ManifestError) as err:
        parse_resources([pa("PERMISSIVE", name="ok"), manifest], "scenario.yaml")
    assert err.value.field_path == field_path
    message = str(err.value)
    assert message.startswith("scenario.yaml: resources[1] ") and f": {field_path}: " in message
    assert words in message and "\n" not in message


def test_duplicate_name_is_refused():
    with pytest.raises(ManifestError, match="metadata.name: already exists"):
        parse_resources([pa("STRICT"), pa("DISABLE")], "f.yaml")


def test_resources_must_be_a_list():
    with pytest.raises(ManifestError, match="must be a list"):
        parse_resources({"kind": "PeerAuthentication"}, "f.yaml")


def test_every_invalid_case_differs_from_a_valid_one():
    # Each refused manifest is a small edit of one that parses: the check, not the fixture, refuses it.
    parse_resources([pa("STRICT", selector={"app": "httpbin"}, ports={8080: "DISABLE"}),
                     dr("MUTUAL", name="m"), dr("DISABLE", name="d", export_to=["."]),
                     with_spec(dr(None, name="s"), subsets=[{"name": "v1"}])], "f.yaml")


def test_typed_tls_fields_are_read_as_written():
    # The well-typed versions of the refused type cases parse, into exactly the values written.
    san = "spiffe://cluster.local/ns/a/sa/b"
    peer, rule, port_rule, subset_rule = parse_resources([
        pa("STRICT", selector={"app.kubernetes.io/name": "httpbin"}),
        dr_tls({"mode": "ISTIO_MUTUAL", "subjectAltNames": [san], "sni": "x.example", "insecureSkipVerify": False}),
        with_spec(dr(None, name="p"), trafficPolicy={"portLevelSettings": [
            {"port": {"number": 8000}, "tls": {"mode": "ISTIO_MUTUAL", "sni": "8000.example"}}]}),
        with_spec(dr(None, name="s"), subsets=[{"name": "v1", "labels": {"version": "v1", "example.com/tier": ""}}]),
    ], "f.yaml")
    assert peer.selector == {"app.kubernetes.io/name": "httpbin"}
    assert rule.tls == ClientTLS("ISTIO_MUTUAL", sni="x.example", subject_alt_names=(san,))
    assert port_rule.port_tls[8000].sni == "8000.example" and subset_rule.subsets == ("v1",)
    # insecureSkipVerify is a nullable BoolValue: null reads as unset, true as true.
    nullable = parse_resources([dr_tls({"mode": "SIMPLE", "insecureSkipVerify": None}),
                                dr_tls({"mode": "SIMPLE", "insecureSkipVerify": True}) | {
                                    "metadata": {"name": "t", "namespace": "sleep"}}], "f.yaml")
    assert [r.tls.insecure_skip_verify for r in nullable] == [False, True]
