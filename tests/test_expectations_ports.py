"""Self-tests of the oracle beyond one HTTP port (suites/expectations_ports.py and its use in
suites/expectations.py): TCP, server-first and app-TLS apps, port names, headless Services and pod-IP requests.
Each case names the Istio source its expectation was read from; each decision has a twin case where it flips,
and deliberately broken rules turn cases red.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshproof.istio_api import ManifestError
from meshproof.scenario import NotSupportedYet, Request, scenario_from_dict
from meshproof.vocabulary import Outcome, Wire
from suites import expectations
from suites import expectations_ports as ports
from suites.cells import dr, pa, scenario, tls
from suites.expectations import expect

SLEEP_ID = "spiffe://cluster.local/ns/sleep/sa/sleep"
M, P, A, R, T = Outcome.MTLS, Outcome.PLAINTEXT, Outcome.APP_TLS, Outcome.RESET, Outcome.TIMEOUT
W_MTLS, W_APP, W_PLAIN, W_NONE = Wire.MTLS, Wire.APP_TLS, Wire.PLAINTEXT, Wire.NONE
WORKLOAD_DISABLE = pa("DISABLE", name="workload", selector={"app": "httpbin"})
SAN = ["spiffe://cluster.local/ns/httpbin/sa/httpbin"]


def cell(resources=(), to="service", **kw) -> dict:
    data = scenario(list(resources), **kw)
    if to != "service":
        data["request"] = {"to": to}
    return data


def predict(data: dict, version: str | None = None):
    return expect(scenario_from_dict({**data, **({"istio_version": version} if version else {})}, "test"))


# (id, scenario, outcome, wire, rule, source the expectation was read from). Identity: the client's SPIFFE ID
# exactly when the outcome is mtls (the server sidecar accepted its mesh certificate).
CASES = [
    # --- the client sidecar's listener
    ("banner-sniffed-port", cell(app="banner", port_name="web"), T, W_NONE, "outbound-sniffing-waits-timeout",
     "listener.go buildListenerFromEntry: HTTP inspector, ListenerFiltersTimeout = protocolDetectionTimeout (0s)"),
    ("banner-http-port", cell(app="banner", port_name="http"), T, W_NONE, "outbound-sniffing-waits-timeout",
     "listener.go buildSidecarOutboundListener: an HTTP port on 0.0.0.0 matches http/1.1,h2c after an inspector"),
    ("banner-tcp-port", cell(app="banner", port_name="tcp"), M, W_MTLS, "mtls-terminated",
     "tls.go buildSidecarOutboundTCPFilterChainOpts: tcp_proxy, no listener filter; the client's TLS speaks first"),
    ("tcp-unknown-cert-file", cell([pa("STRICT"), dr(None, traffic_policy={"tls": {
        "mode": "MUTUAL", "clientCertificate": "/etc/other/cert.pem", "privateKey": "/etc/other/key.pem"}})],
        app="tcp-echo", port_name="tcp"), R, W_NONE, "client-cert-unavailable-reset",
     "cluster_tls.go constructSdsSecretConfigFromFile: the cluster has no certificate"),
    ("tcp-mutual-auto-san-strict", cell([pa("STRICT"), dr("MUTUAL")], app="tcp-echo", port_name="tcp"), R, W_APP,
     "client-rejects-server-cert-reset", "cluster_tls.go setAutoSniAndAutoSanValidation; envoy verifySubjectAltName"),
    ("tcp-mutual-san-strict", cell([pa("STRICT"), dr(None, traffic_policy={"tls": tls("MUTUAL", subjectAltNames=SAN)})],
                                   app="tcp-echo", port_name="tcp"), M, W_APP, "mtls-terminated",
     "filterchain_options.go inboundStrictTCPFilterChainMatchOptions: any TLS with a mesh client certificate"),
    # --- the server sidecar's inbound chains
    ("banner-naked-permissive-tcp", cell(client_sidecar=False, app="banner", port_name="tcp"), T, W_NONE,
     "inbound-inspector-waits-timeout", ("listener_inbound.go populateListenerFilters (PERMISSIVE TCP has a tls "
     "chain: TLS inspector) + buildInboundListener (no listener filter timeout)")),
    ("banner-naked-strict-tcp", cell([pa("STRICT")], client_sidecar=False, app="banner", port_name="tcp"), T, W_NONE,
     "inbound-inspector-waits-timeout", "inboundStrictTCPFilterChainMatchOptions: a tls chain, so a TLS inspector"),
    ("banner-naked-disable-tcp", cell([pa("DISABLE")], client_sidecar=False, app="banner", port_name="tcp"), P,
     W_PLAIN, "tcp-plaintext-accepted", "inboundPlainTextTCPFilterChainMatchOptions: raw_buffer only, no inspector"),
    ("banner-naked-disable-http", cell([pa("DISABLE")], client_sidecar=False, app="banner", port_name="http"), T,
     W_NONE, "hcm-waits-timeout", "inboundPlainTextHTTPFilterChainMatchOptions: an HCM opens no upstream first"),
    ("banner-naked-disable-sniffed", cell([pa("DISABLE")], client_sidecar=False, app="banner", port_name="web"), T,
     W_NONE, "inbound-inspector-waits-timeout", ("inboundPlainTextFilterChainMatchOptions: http/1.1,h2c chain, "
     "so an HTTP inspector")),
    ("banner-disable-tcp-sidecar", cell([pa("DISABLE")], app="banner", port_name="tcp"), P, W_PLAIN,
     "tcp-plaintext-accepted", "auto mTLS off for DISABLE; raw_buffer tcp_proxy chain"),
    ("banner-plaintext-dr-strict", cell([pa("STRICT"), dr("DISABLE")], app="banner", port_name="tcp"), T, W_NONE,
     "inbound-inspector-waits-timeout", "a plaintext tcp_proxy connection carries nothing until the greeting"),
    ("echo-naked-strict-tcp", cell([pa("STRICT")], client_sidecar=False, app="tcp-echo", port_name="tcp"), R,
     W_PLAIN, "no-filter-chain-reset", "inboundStrictTCPFilterChainMatchOptions: tls only"),
    ("echo-naked-permissive-tcp", cell(client_sidecar=False, app="tcp-echo", port_name="tcp"), P, W_PLAIN,
     "tcp-plaintext-accepted", "inboundPermissiveTCPFilterChainMatchWithMxcOptions: raw_buffer chain"),
    ("echo-plaintext-dr-strict", cell([pa("STRICT"), dr("DISABLE")], app="tcp-echo", port_name="tcp"), R, W_PLAIN,
     "no-filter-chain-reset", "reachability 'migration tls disabled', for TCP: no 503, the connection closes"),
    ("https-naked-strict-tcp", cell([pa("STRICT")], client_sidecar=False, app="https", port_name="https"), R, W_APP,
     "client-cert-required-reset", "authn/utils.go BuildInboundTLS RequireClientCertificate"),
    ("https-naked-strict-http", cell([pa("STRICT")], client_sidecar=False, app="https", port_name="http"), R, W_APP,
     "client-cert-required-reset", "inboundStrictHTTPFilterChainMatchOptions: any TLS is terminated"),
    ("https-naked-permissive-http", cell(client_sidecar=False, app="https", port_name="http"), R, W_APP,
     "no-filter-chain-reset", ("inboundPermissiveHTTPFilterChainMatchWithMxcOptions ('We do not need to handle "
     "other simple TLS')")),
    ("https-sidecar-permissive-http", cell(app="https", port_name="http"), R, W_APP, "no-filter-chain-reset",
     "the client's PassthroughFilterChain adds no TLS; the server's HTTP port wants Istio's ALPN"),
    ("https-naked-disable-http", cell([pa("DISABLE")], client_sidecar=False, app="https", port_name="http"), R, W_APP,
     "not-http-to-hcm-reset", "inboundPlainTextHTTPFilterChainMatchOptions: raw_buffer HCM gets a ClientHello"),
    ("echo-sidecar-permissive-http", cell(app="tcp-echo", port_name="http"), R, W_PLAIN, "not-http-to-hcm-reset",
     "PassthroughFilterChain on the client, the HTTP chain on the server"),
    ("httpbin-pod-ip-permissive", cell(to="pod-ip"), P, W_PLAIN, "hcm-plaintext-accepted",
     "buildVirtualOutboundListener + buildDefaultPassthroughCluster: no TLS to a pod IP"),
    ("https-naked-permissive-tcp", cell(client_sidecar=False, app="https", port_name="tls"), A, W_APP,
     "app-tls-passed-through", "inboundPermissiveTCPFilterChainMatchWithMxcOptions 'Plain TLS' chain"),
    ("https-naked-permissive-sniffed", cell(client_sidecar=False, app="https", port_name="web"), A, W_APP,
     "app-tls-passed-through", "inboundPermissiveFilterChainMatchWithMxcOptions FCM 5 (one-way TLS: TCP proxy)"),
    ("https-sidecar-disable-tcp", cell([pa("DISABLE")], app="https", port_name="tcp"), A, W_APP,
     "app-tls-passed-through", "auto mTLS off; raw_buffer chain without a TLS inspector"),
    ("echo-auto-mtls-tcp", cell(app="tcp-echo", port_name="tcp"), M, W_MTLS, "mtls-terminated",
     "cluster_tls.go ALPNInMeshWithMxc + inboundPermissiveTCPFilterChainMatchWithMxcOptions (allIstioMtlsALPNs)"),
    ("https-auto-mtls-strict-sniffed", cell([pa("STRICT")], app="https", port_name="web"), M, W_MTLS,
     "mtls-terminated", "inboundStrictFilterChainMatchOptions: tls TCP chain (istio-peer-exchange is no HTTP ALPN)"),
    ("banner-istio-mutual-to-disable", cell([pa("DISABLE"), dr("ISTIO_MUTUAL")], app="banner", port_name="tcp"), R,
     W_PLAIN, "sidecar-tls-reaches-app-reset", ("inboundPlainTextTCPFilterChainMatchOptions: raw_buffer, no inspector; "
     "the greeting meets the sidecar's handshake and crosses the link in cleartext")),
    ("https-simple-to-permissive", cell([dr("SIMPLE")], app="https", port_name="tcp"), R, W_APP,
     "sidecar-tls-reaches-app-reset", ("PERMISSIVE TCP passes TLS without Istio's ALPN through untouched; the sidecar "
     "does not trust the app's self-signed certificate")),
    ("https-istio-mutual-naked-server", cell([dr("ISTIO_MUTUAL")], server_sidecar=False, app="https",
                                             port_name="tcp"), R, W_MTLS, "sidecar-tls-reaches-app-reset",
     "cluster_tls.go applyUpstreamTLSSettings: a user ISTIO_MUTUAL has no socket match"),
    # --- httpbin on ports not named http
    ("httpbin-tcp-port", cell(port_name="tcp"), M, W_MTLS, "mtls-terminated",
     "tcp_proxy both sides; the server sidecar's account names the client (no XFCC over tcp_proxy)"),
    ("httpbin-tcp-port-naked-strict", cell([pa("STRICT")], client_sidecar=False, port_name="tcp"), R, W_PLAIN,
     "no-filter-chain-reset", "inboundStrictTCPFilterChainMatchOptions: tls only"),
    ("httpbin-tcp-port-dr-disable-strict", cell([pa("STRICT"), dr("DISABLE")], port_name="tcp"), R, W_PLAIN,
     "no-filter-chain-reset", "tcp_proxy answers no 503: the connection just closes"),
    ("httpbin-sniffed-port", cell([pa("STRICT")], port_name="web"), M, W_MTLS, "istio-mutual-accepted",
     "inboundStrictFilterChainMatchOptions: istio-http/1.1 (the outbound alpn filter) meets the HTTP chain"),
    ("httpbin-sniffed-port-naked", cell(client_sidecar=False, port_name="web"), P, W_PLAIN, "hcm-plaintext-accepted",
     "inboundPermissiveFilterChainMatchWithMxcOptions: the HTTP inspector's http/1.1 picks the HTTP chain"),
    ("httpbin-pod-ip-same-port-strict", cell([pa("STRICT")], to="pod-ip", service_port=8080), "503", W_PLAIN,
     "sidecar-plaintext-to-strict-503", "httproute.go buildCatchAllVirtualHost: the allow_any route, no TLS"),
    ("httpbin-pod-ip-same-port-dr", cell([pa("STRICT"), dr("ISTIO_MUTUAL")], to="pod-ip", service_port=8080), "503",
     W_PLAIN, "sidecar-plaintext-to-strict-503", "PassthroughCluster: the Service's DestinationRule never applies"),
    # --- no server sidecar
    ("echo-naked-server", cell(server_sidecar=False, app="tcp-echo", port_name="tcp"), P, W_PLAIN,
     "plaintext-to-naked-app", "defaultTransportSocketMatch: no tlsMode=istio label, no TLS"),
    ("https-naked-server-http", cell(server_sidecar=False, app="https", port_name="http"), A, W_APP,
     "app-tls-to-naked-app", "PassthroughFilterChain on the client, nothing on the server"),
    # --- headless Services (port == targetPort)
    ("headless-http", cell(headless=True, service_port=8080), M, W_MTLS, "istio-mutual-accepted",
     "push_context.go BestEffortInferServiceMTLSMode: every endpoint has a sidecar, namespace PERMISSIVE"),
    ("headless-http-workload-disable", cell([WORKLOAD_DISABLE], headless=True, service_port=8080), "503", W_MTLS,
     "istio-mutual-to-disable-503", ("cluster_tls.go: no transport socket match on ORIGINAL_DST; workload policy "
     "unseen")),
    ("headless-tcp-workload-disable", cell([WORKLOAD_DISABLE], headless=True, service_port=8080, app="banner",
                                           port_name="tcp"), R, W_PLAIN, "sidecar-tls-reaches-app-reset",
     "as headless-http-workload-disable, through tcp_proxy: the app gets Istio's ClientHello, greets in cleartext"),
    ("headless-naked-server", cell(headless=True, service_port=8080, server_sidecar=False), P, W_PLAIN,
     "plaintext-to-naked-server", "BestEffortInferServiceMTLSMode: an endpoint without tlsMode=istio -> DISABLE"),
    ("headless-namespace-disable", cell([pa("DISABLE")], headless=True, service_port=8080, app="tcp-echo",
                                        port_name="tcp"), P, W_PLAIN, "tcp-plaintext-accepted",
     "BestEffortInferServiceMTLSMode: namespace DISABLE"),
    # --- pod-IP requests
    ("pod-ip-strict", cell([pa("STRICT")], to="pod-ip"), R, W_PLAIN, "no-filter-chain-reset",
     "PassthroughCluster has no TLS; inboundStrictHTTPFilterChainMatchOptions (istio/istio#31319)"),
    ("pod-ip-istio-mutual-dr", cell([dr("ISTIO_MUTUAL")], to="pod-ip", app="tcp-echo", port_name="tcp"), P, W_PLAIN,
     "tcp-plaintext-accepted", "PassthroughCluster: no DestinationRule applies"),
    ("pod-ip-headless-same-port", cell(to="pod-ip", headless=True, service_port=8080, app="tcp-echo",
                                       port_name="tcp"), M, W_MTLS, "mtls-terminated",
     "listener.go: a headless Service's TCP port gets a listener per endpoint at podIP:port"),
    ("pod-ip-same-port-http", cell(to="pod-ip", service_port=8080, app="banner", port_name="http"), T, W_NONE,
     "outbound-sniffing-waits-timeout", "the HTTP port's 0.0.0.0:8080 listener takes podIP:8080 too"),
    ("pod-ip-other-port-http", cell(to="pod-ip", app="banner", port_name="http"), T, W_NONE,
     "inbound-inspector-waits-timeout", "no client listener; the server's PERMISSIVE HTTP port has a TLS inspector"),
    # The client accepts the server's certificate (the mesh CA, or no check): only STRICT's requirement refuses.
    ("tcp-simple-mesh-ca-strict", cell([pa("STRICT"), dr(None, traffic_policy={"tls": tls(
        "SIMPLE", caCertificates="/etc/certs/root-cert.pem", subjectAltNames=SAN)})], app="tcp-echo", port_name="tcp"),
     R, W_APP, "client-cert-required-reset",
     "filterchain_options.go inboundStrictTCPFilterChainMatchOptions; authn utils: require_client_certificate"),
    # A sniffed port under DISABLE has an HTTP inspector but no TLS inspector: the sidecar's TLS is read as
    # raw_buffer that is not HTTP, meets the TCP chain and reaches the app, which answers it with its own TLS.
    *[(f"https-sniffed-disable-{mode.lower()}", cell([pa("DISABLE"), dr(mode)], app="https", port_name="web"), R, wire,
       "sidecar-tls-reaches-app-reset", "listener_inbound.go populateListenerFilters; inboundPlainTextFilterChainMatchOptions")
      for mode, wire in (("ISTIO_MUTUAL", W_MTLS), ("MUTUAL", W_APP), ("SIMPLE", W_APP))],
]


@pytest.mark.parametrize("case_id,data,outcome,wire,rule,source", CASES, ids=[c[0] for c in CASES])
def test_rule(case_id, data, outcome, wire, rule, source):
    p = predict(data)
    assert (p.outcome, p.wire, p.rule) == (outcome, wire, rule), f"{case_id} ({source}): {p.reason} {p.details}"
    assert p.peer_identity == (SLEEP_ID if outcome == M else None), case_id
    assert p.reason.endswith(".") and p.source
    assert (p.tls is not None) == (outcome == M)


def test_every_port_rule_is_hit_and_cited():
    hit = {predict(data).rule for _, data, *_ in CASES}
    assert set(ports.PORT_RULES) <= hit, f"rules without a self-test: {set(ports.PORT_RULES) - hit}"
    for rule_id, rule in ports.PORT_RULES.items():
        assert "istio/istio" in rule.source, f"{rule_id} has no Istio citation"


# --- the whole table for the three apps, written out from the chains, by hand --------------------------
# Columns: PeerAuthentication none, STRICT, PERMISSIVE, DISABLE; cells: (outcome, wire).
TABLE = {
    ("tcp-echo", "tcp", True): [(M, W_MTLS), (M, W_MTLS), (M, W_MTLS), (P, W_PLAIN)],
    ("tcp-echo", "tcp", False): [(P, W_PLAIN), (R, W_PLAIN), (P, W_PLAIN), (P, W_PLAIN)],
    ("tcp-echo", "http", True): [(R, W_PLAIN)] * 4,
    ("tcp-echo", "web", True): [(M, W_MTLS), (M, W_MTLS), (M, W_MTLS), (P, W_PLAIN)],
    ("tcp-echo", "web", False): [(P, W_PLAIN), (R, W_PLAIN), (P, W_PLAIN), (P, W_PLAIN)],
    ("banner", "tcp", True): [(M, W_MTLS), (M, W_MTLS), (M, W_MTLS), (P, W_PLAIN)],
    ("banner", "tcp", False): [(T, W_NONE), (T, W_NONE), (T, W_NONE), (P, W_PLAIN)],
    ("banner", "web", True): [(T, W_NONE)] * 4,
    ("banner", "http", False): [(T, W_NONE)] * 4,
    ("https", "https", True): [(M, W_MTLS), (M, W_MTLS), (M, W_MTLS), (A, W_APP)],
    ("https", "https", False): [(A, W_APP), (R, W_APP), (A, W_APP), (A, W_APP)],
    ("https", "http", True): [(R, W_APP)] * 4,
    ("https", "web", False): [(A, W_APP), (R, W_APP), (A, W_APP), (A, W_APP)],
}


@pytest.mark.parametrize("key", list(TABLE), ids=["-".join(map(str, k)) for k in TABLE])
@pytest.mark.parametrize("version", ["1.28", "1.29", "1.30"])
def test_the_table(key, version):
    app, port_name, client_sidecar = key
    got = [(p.outcome, p.wire) for p in (
        predict(cell([pa(mode)] if mode else [], client_sidecar=client_sidecar, app=app, port_name=port_name),
                version) for mode in (None, "STRICT", "PERMISSIVE", "DISABLE"))]
    assert got == TABLE[key]


def test_tcp_mtls_shows_the_tcp_cluster_alpn_and_the_service_sni():
    p = predict(cell(app="tcp-echo", port_name="tcp"))
    assert p.tls["alpn"] == "istio-peer-exchange"
    assert p.tls["sni"] == "outbound_.8000_._.httpbin.httpbin.svc.cluster.local"
    assert p.client_tls == "istio-mutual" and p.envoy is None
    assert "istio-peer-exchange" in ports.ARRIVALS["istio-mtls"].alpn


def test_inspectors_follow_the_chains():
    expected = {("HTTP", "STRICT"): (True, False), ("HTTP", "PERMISSIVE"): (True, False),
                ("HTTP", "DISABLE"): (False, False), ("AUTO", "STRICT"): (True, False),
                ("AUTO", "PERMISSIVE"): (True, True), ("AUTO", "DISABLE"): (False, True),
                ("TCP", "STRICT"): (True, False), ("TCP", "PERMISSIVE"): (True, False),
                ("TCP", "DISABLE"): (False, False)}
    assert {k: ports.inspectors(v) for k, v in ports.INBOUND_CHAINS.items()} == expected


def test_port_names_pick_the_family():
    assert [ports.FAMILY[p] for p in ("HTTP", "TCP", "TLS", "HTTPS", "auto")] == ["HTTP", "TCP", "TCP", "TCP", "AUTO"]


# --- each decision flips ------------------------------------------------------------------------------

@pytest.mark.parametrize("before,after", [
    (cell(app="banner", port_name="web"), cell(app="banner", port_name="tcp")),  # sniffing vs tcp_proxy
    (cell([pa("DISABLE")], client_sidecar=False, app="banner", port_name="tcp"),
     cell([pa("PERMISSIVE")], client_sidecar=False, app="banner", port_name="tcp")),  # inspector or not
    (cell(client_sidecar=False, app="https", port_name="tcp"),
     cell([pa("STRICT")], client_sidecar=False, app="https", port_name="tcp")),  # app TLS through or terminated
    (cell([WORKLOAD_DISABLE], service_port=8080), cell([WORKLOAD_DISABLE], service_port=8080, headless=True)),
    (cell([pa("STRICT")]), cell([pa("STRICT")], to="pod-ip")),  # Service vs pod IP
    (cell([pa("STRICT")], to="cluster-ip"), cell([pa("STRICT")], to="pod-ip")),  # ClusterIP vs pod IP
    (cell(app="tcp-echo", port_name="tcp"), cell(app="tcp-echo", port_name="http")),  # TCP vs HTTP port name
])
def test_a_decision_flips_the_outcome(before, after):
    assert predict(before).outcome != predict(after).outcome


# --- the ClusterIP: reached as the Service by name, and the step says why ------------------------------
# (id, scenario, outcome, wire, rule, what the first step says, the source it adds). HTTP: httproute.go
# generateVirtualHostDomains appends every address of the Service (GetAllAddressesForProxy) with and without the
# port, so the Host header VIP:port picks the Service's virtual host (tags 1.28.10, 1.29.6, 1.30.3 alike); TCP and
# a client without a sidecar: the name resolves to the VIP anyway.
CLUSTER_IP = [
    ("cluster-ip-strict", cell([pa("STRICT")], to="cluster-ip"), M, W_MTLS, "istio-mutual-accepted",
     "Host header <ClusterIP>:8000 is one of the Service's virtual host domains", "generateVirtualHostDomains"),
    ("cluster-ip-permissive", cell([pa("PERMISSIVE")], to="cluster-ip"), M, W_MTLS, "istio-mutual-accepted",
     "Host header <ClusterIP>:8000 is one of the Service's virtual host domains", "generateVirtualHostDomains"),
    ("cluster-ip-dr-disable", cell([dr("DISABLE")], to="cluster-ip"), P, W_PLAIN, "plaintext-accepted",
     "Host header <ClusterIP>:8000 is one of the Service's virtual host domains", "generateVirtualHostDomains"),
    ("cluster-ip-naked-client-strict", cell([pa("STRICT")], client_sidecar=False, to="cluster-ip"), R, W_PLAIN,
     "naked-client-to-strict-reset", "the node sends it to the pod (kube-proxy)", None),
    ("cluster-ip-tcp-strict", cell([pa("STRICT")], to="cluster-ip", app="tcp-echo", port_name="tcp"), M, W_MTLS,
     "mtls-terminated", "the client sidecar's listener takes the connection", None),
]


@pytest.mark.parametrize("case_id,data,outcome,wire,rule,says,source", CLUSTER_IP, ids=[c[0] for c in CLUSTER_IP])
def test_a_call_to_the_cluster_ip_is_the_call_by_name_and_says_why(case_id, data, outcome, wire, rule, says, source):
    p = predict(data)
    assert (p.outcome, p.wire, p.rule) == (outcome, wire, rule), f"{case_id}: {p.reason} {p.details}"
    assert p.details[0].startswith("the client calls the ClusterIP and port 8000: ") and says in p.details[0]
    by_name = predict({**data, "request": {"to": "service"}})
    assert p.details[1:] == by_name.details and p.reason == by_name.reason
    assert (source in p.source) if source else p.source == by_name.source
    assert "generateVirtualHostDomains" not in by_name.source  # a name matches without the VIP


def test_a_headless_service_has_no_cluster_ip_for_the_oracle_either():
    with pytest.raises(ManifestError, match="request.to"):
        predict(cell(headless=True, service_port=8080, to="cluster-ip"))


def test_mutation_no_vip_in_the_domains_is_caught(monkeypatch):
    """An oracle that read the ClusterIP as an address no virtual host names (the pod IP's path: allow_any,
    PassthroughCluster) would predict cleartext where the Service's own auto mTLS applies."""
    real = expectations.expect
    monkeypatch.setattr(expectations, "_by_cluster_ip",
                        lambda scenario: real(replace(scenario, request=Request("pod-ip"))))
    [strict, permissive, *_] = CLUSTER_IP
    assert predict(strict[1]).outcome != strict[2] and predict(permissive[1]).outcome != permissive[2]


def test_mutation_no_plain_tls_chain_is_caught(monkeypatch):
    """Without PERMISSIVE TCP's 'Plain TLS' chain the app's own TLS would be refused: the cases see it."""
    chains = ports.INBOUND_CHAINS[("TCP", "PERMISSIVE")]
    monkeypatch.setitem(ports.INBOUND_CHAINS, ("TCP", "PERMISSIVE"),
                        tuple(c for c in chains if not (c.transport == "tls" and not c.terminates)))
    assert predict(cell(client_sidecar=False, app="https", port_name="tls")).rule == "no-filter-chain-reset"


def test_mutation_a_listener_filter_timeout_is_caught(monkeypatch):
    """Were the inspector to give up and go on as raw_buffer (a timeout), the banner would pass PERMISSIVE."""
    monkeypatch.setattr(ports, "inspectors", lambda chains: (False, False))
    assert predict(cell(client_sidecar=False, app="banner", port_name="tcp")).outcome == P


def test_mutation_alpn_preference_is_caught(monkeypatch):
    """A matcher that took the first chain in Istio's order, ignoring ALPN specificity, would pass Istio mTLS
    through PERMISSIVE TCP unterminated."""
    chains = ports.INBOUND_CHAINS[("TCP", "PERMISSIVE")]
    monkeypatch.setitem(ports.INBOUND_CHAINS, ("TCP", "PERMISSIVE"), (chains[1], chains[0], chains[2]))
    assert predict(cell(app="tcp-echo", port_name="tcp")).rule == "mtls-terminated"  # specificity, not order
    monkeypatch.setitem(ports.INBOUND_CHAINS, ("TCP", "PERMISSIVE"), (chains[1],))
    assert predict(cell(app="banner", port_name="tcp")).rule == "sidecar-tls-reaches-app-reset"


# --- what stays refused ------------------------------------------------------------------------------

@pytest.mark.parametrize("data,field", [
    (cell(app="tcp-echo", port_name="grpc"), "server.port_name"),
    (cell(app="tcp-echo", port_name="udp"), "server.port_name"),
    (cell(headless=True), "server.headless"),  # port 8000 != targetPort 8080
    # TLS that a sniffed port's tcp_proxy chains take
    (cell([pa("DISABLE"), dr("ISTIO_MUTUAL")], port_name="web"), "server.port_name"),
    (cell([dr("MUTUAL")], port_name="web"), "server.port_name"),
    # the line echo answers Istio's ClientHello only if it happens to hold a newline
    (cell([pa("DISABLE"), dr("ISTIO_MUTUAL")], app="tcp-echo", port_name="tcp"), "server.app"),
    (cell([dr("ISTIO_MUTUAL")], server_sidecar=False, app="tcp-echo", port_name="tcp"), "server.app"),
])
def test_what_is_not_modelled_is_refused_naming_the_field(data, field):
    with pytest.raises(NotSupportedYet) as err:
        predict(data)
    assert err.value.field_path == field and "is valid but the oracle does not" in err.value.problem


def test_the_default_http_port_is_untouched_by_the_new_paths():
    """httpbin on the HTTP port of a ClusterIP Service stays on the HTTP truth table."""
    p = predict(cell())
    assert p.rule == "istio-mutual-accepted" and p.tls["alpn"] == "istio"


def test_an_http_chain_behind_mtls_is_left_to_the_http_table():
    with pytest.raises(ValueError, match="HTTP truth table"):
        ports.inbound("HTTP", "STRICT", "istio-mtls", "http-request")


def test_the_handshake_rules_refuse_a_port_that_is_not_http():
    from suites.expectations import expect_handshake

    with pytest.raises(NotSupportedYet, match="HTTP ports only"):
        expect_handshake(scenario_from_dict(cell(port_name="tcp")), attempt=None)


@pytest.mark.parametrize(("app", "wire"), [("banner", Wire.PLAINTEXT), ("httpbin", Wire.PLAINTEXT),
                                           ("https", Wire.MTLS)])
def test_sidecar_tls_reaching_the_app_shows_the_apps_answer_on_the_wire(app, wire):
    """Istio's ClientHello that reaches the app unterminated gets the app's own answer: banner's greeting and
    httpbin's 400 cross the link in cleartext (a hop with cleartext either way is plaintext on the wire), the
    https app answers in TLS."""
    p = predict(cell([dr("ISTIO_MUTUAL")], server_sidecar=False, app=app, port_name="tcp"))
    assert (p.rule, p.outcome, p.wire) == ("sidecar-tls-reaches-app-reset", Outcome.RESET, wire)


@pytest.mark.parametrize("name", ["mysql", "mongo", "redis-cache"])
def test_database_port_names_are_plain_tcp(name):
    """Istio reads MySQL, Mongo and Redis from the name but builds them a plain tcp_proxy unless a protocol filter
    is switched on (off by default): a server-first MySQL under PERMISSIVE meets the TLS inspector as on tcp."""
    for data in ({"client_sidecar": False, "app": "banner"}, {"app": "tcp-echo"}, {"app": "https"}):
        named, tcp = predict(cell(port_name=name, **data)), predict(cell(port_name="tcp", **data))
        assert (named.outcome, named.wire, named.rule, named.peer_identity) == \
            (tcp.outcome, tcp.wire, tcp.rule, tcp.peer_identity)
    assert predict(cell(client_sidecar=False, app="banner", port_name=name)).outcome == Outcome.TIMEOUT


# --- the chains and what the server sidecar sees, as the details say them ---------------------------------
# Written out from getFilterChainMatchOptions (filterchain_options.go): transport[+ALPNs]->[terminate+]filters.
ISTIO_HTTP = "istio-http/1.0/istio-http/1.1/istio-h2"
CHAINS_READ = {
    ("HTTP", "STRICT"): "tls->terminate+http",
    ("HTTP", "PERMISSIVE"): f"tls+istio/istio-peer-exchange/{ISTIO_HTTP}->terminate+http, raw_buffer->http",
    ("HTTP", "DISABLE"): "raw_buffer->http",
    ("AUTO", "STRICT"): f"tls+{ISTIO_HTTP}->terminate+http, tls->terminate+tcp",
    ("AUTO", "PERMISSIVE"): (f"tls+{ISTIO_HTTP}->terminate+http, raw_buffer+http/1.1/h2c->http, "
                             "tls+istio-peer-exchange/istio->terminate+tcp, raw_buffer->tcp, tls->tcp"),
    ("AUTO", "DISABLE"): "raw_buffer+http/1.1/h2c->http, raw_buffer->tcp",
    ("TCP", "STRICT"): "tls->terminate+tcp",
    ("TCP", "PERMISSIVE"): f"tls+istio/istio-peer-exchange/{ISTIO_HTTP}->terminate+tcp, tls->tcp, raw_buffer->tcp",
    ("TCP", "DISABLE"): "raw_buffer->tcp",
}


@pytest.mark.parametrize(("family", "mode"), list(CHAINS_READ))
def test_the_details_read_each_ports_chains_as_istio_builds_them(family, mode):
    _, steps = ports.inbound(family, mode, "client-first", "client-first")
    assert steps[0] == f"the server's {family} port under {mode} has the filter chains [{CHAINS_READ[(family, mode)]}]"


def test_the_details_say_what_the_server_sidecar_sees():
    _, tls_steps = ports.inbound("TCP", "STRICT", "istio-mtls", "client-first")
    assert tls_steps[1] == (f"{ports.ARRIVALS['istio-mtls'].says} is seen as tls with application protocols "
                            "['istio', 'istio-peer-exchange']")
    _, plain_steps = ports.inbound("TCP", "STRICT", "client-first", "client-first")
    assert plain_steps[1] == f"{ports.ARRIVALS['client-first'].says} is seen as raw_buffer"


def test_the_rule_tables_cannot_be_changed_in_place():
    import dataclasses

    for record in (ports.INBOUND_CHAINS[("TCP", "STRICT")][0], ports.ARRIVALS["istio-mtls"],
                   ports.PORT_RULES["mtls-terminated"]):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.says = "changed"  # type: ignore[misc]


def test_a_foreign_sni_keeps_istio_mtls_but_not_its_look_on_the_wire():
    custom = predict(cell([pa("STRICT"), dr(None, traffic_policy={"tls": tls("ISTIO_MUTUAL", sni="db.example.com")})],
                          app="tcp-echo", port_name="tcp"))
    assert (custom.outcome, custom.wire, custom.rule) == (M, W_APP, "mtls-terminated")
    assert custom.reason.startswith("The DestinationRule's sni 'db.example.com' replaces Istio's outbound_ SNI")


def test_a_destination_rule_is_said_to_do_nothing_without_a_client_sidecar():
    with_rule = predict(cell([pa("STRICT"), dr("DISABLE")], client_sidecar=False, app="tcp-echo", port_name="tcp"))
    without = predict(cell([pa("STRICT")], client_sidecar=False, app="tcp-echo", port_name="tcp"))
    said = "the client has no sidecar and sends the app's bytes as they are"
    assert f"{said} (a DestinationRule has no effect without a client sidecar)" in with_rule.details
    assert said in without.details
    assert without.reason.startswith("The client has no sidecar and sends the app's bytes as they are;")


def test_a_sniffed_http_port_says_its_chains_take_http_as_an_http_ports_do():
    sniffed = predict(cell([pa("STRICT")], port_name="web"))
    named = predict(cell([pa("STRICT")], port_name="http"))
    says = "the sniffed port's server chains take Istio's HTTP ALPN (istio-http/1.1) or plaintext HTTP"
    assert any(says in step for step in sniffed.details) and not any(says in step for step in named.details)


def test_the_line_echo_behind_a_sidecar_tls_it_cannot_answer_is_refused_naming_the_scenario():
    data = {**cell([pa("DISABLE"), dr("ISTIO_MUTUAL")], app="tcp-echo", port_name="tcp"), "name": "echo"}
    with pytest.raises(NotSupportedYet, match=r"^echo: .*server\.app: 'tcp-echo' is valid but the oracle does not"):
        expect(scenario_from_dict(data))


def test_a_headless_port_other_than_its_target_is_refused_naming_the_value():
    data = {**cell(headless=True, app="tcp-echo", port_name="tcp"), "name": "hl"}
    with pytest.raises(NotSupportedYet, match=r"^hl: .*server\.headless: True is valid but the oracle"):
        expect(scenario_from_dict(data))
