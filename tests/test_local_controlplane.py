"""The reference mesh's control plane decisions, without a mesh: scopes, precedence, DR choice, generated TLS.

These need no root. Each asserts a decision Istio's code makes (see cluster/local/controlplane.py for the
source files), including cases where a naive reading gives another answer.
"""

from __future__ import annotations

import pytest

from cluster.local import controlplane as cp
from meshproof.istio_api import ManifestError, parse_resources

ROOT = "istio-system"
SERVER = cp.Pod("s", "bar", {"app": "httpbin", "security.istio.io/tlsMode": "istio"}, "httpbin", "10.0.0.3", True,
                "/c/s", "/sds/s")
CLIENT = cp.Pod("c", "foo", {"app": "sleep"}, "sleep", "10.0.0.2", True, "/c/c", "/sds/c")
SERVICE = cp.Service("httpbin", "bar", "10.251.0.1", 8000, 8080, (SERVER,))


def pa(name, ns, mode=None, selector=None, ports=None):
    spec = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {p: {"mode": m} for p, m in ports.items()}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def dr(name, ns, mode, host="httpbin.bar.svc.cluster.local", export_to=None, selector=None, port_modes=None, **tls):
    spec = {"host": host, "trafficPolicy": {"tls": {"mode": mode, **tls}}}
    if export_to is not None:
        spec["exportTo"] = export_to
    if selector:
        spec["workloadSelector"] = {"matchLabels": selector}
    if port_modes:
        spec["trafficPolicy"]["portLevelSettings"] = [{"port": {"number": p}, "tls": {"mode": m}}
                                                      for p, m in port_modes.items()]
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def server_mode(*docs, port=8080):
    resources = parse_resources(list(docs))
    return cp.port_mtls(SERVER, port, [r for r in resources if isinstance(r, cp.PeerAuthentication)], ROOT)


def chosen_dr(*docs, client=CLIENT):
    resources = parse_resources(list(docs))
    merged, _ = cp.select_destination_rule(client, SERVICE, [r for r in resources if isinstance(r, cp.DestinationRule)],
                                           ROOT, cp.policy_keys(list(docs)))
    return f"{merged.rule.namespace}/{merged.rule.name}" if merged else None


@pytest.mark.parametrize(("docs", "expected"), [
    ((), "PERMISSIVE"),
    ((pa("m", ROOT, "STRICT"),), "STRICT"),
    ((pa("m", ROOT, "STRICT"), pa("n", "bar", "DISABLE")), "DISABLE"),
    ((pa("m", ROOT, "STRICT"), pa("n", "bar", "UNSET")), "STRICT"),  # UNSET inherits
    ((pa("n", "bar", "STRICT"), pa("w", "bar", "DISABLE", {"app": "httpbin"})), "DISABLE"),
    ((pa("n", "bar", "STRICT"), pa("w", "bar", "DISABLE", {"app": "other"})), "STRICT"),  # selector misses
    ((pa("w", ROOT, "DISABLE", {"app": "httpbin"}),), "PERMISSIVE"),  # selector in root namespace: ignored
    ((pa("old", "bar", "STRICT"), pa("new", "bar", "DISABLE")), "STRICT"),  # oldest wins
    ((pa("n", "foo", "STRICT"),), "PERMISSIVE"),  # another namespace
    ((pa("w", "bar", "STRICT", {"app": "httpbin"}, {8080: "DISABLE"}),), "DISABLE"),  # port level, target port
    ((pa("w", "bar", "STRICT", {"app": "httpbin"}, {8000: "DISABLE"}),), "STRICT"),  # service port: no match
    ((pa("n", "bar", "DISABLE"), pa("w", "bar", None, {"app": "httpbin"}, {8080: "UNSET"})), "DISABLE"),
])
def test_peer_authentication_scope_and_precedence(docs, expected):
    assert server_mode(*docs) == expected


@pytest.mark.parametrize(("docs", "expected"), [
    ((), None),
    ((dr("svc", "bar", "DISABLE"),), "bar/svc"),
    ((dr("svc", "bar", "DISABLE"), dr("cli", "foo", "SIMPLE")), "foo/cli"),  # client namespace first
    ((dr("svc", "bar", "DISABLE", export_to=["."]),), None),  # not exported to foo
    ((dr("svc", "bar", "DISABLE", export_to=["foo"]),), "bar/svc"),
    ((dr("root", ROOT, "DISABLE"), dr("svc", "bar", "SIMPLE")), "bar/svc"),  # service namespace before root
    ((dr("root", ROOT, "DISABLE"),), f"{ROOT}/root"),
    ((dr("short", "foo", "DISABLE", host="httpbin"),), None),  # short name resolves to httpbin.foo...
    ((dr("short", "bar", "DISABLE", host="httpbin"),), "bar/short"),
    ((dr("wild", "foo", "DISABLE", host="*.bar.svc.cluster.local"),), "foo/wild"),
    ((dr("sel", "foo", "DISABLE", selector={"app": "other"}), dr("svc", "bar", "SIMPLE")), None),  # local hit wins
    ((dr("sel", "foo", "DISABLE", selector={"app": "sleep"}),), "foo/sel"),
])
def test_destination_rule_choice(docs, expected):
    assert chosen_dr(*docs) == expected


def _cluster(*docs, client=CLIENT):
    resources = parse_resources(list(docs))
    cluster, decision = cp.outbound_cluster(
        client, SERVICE, [r for r in resources if isinstance(r, cp.PeerAuthentication)],
        [r for r in resources if isinstance(r, cp.DestinationRule)], ROOT, cp.policy_keys(list(docs)))
    return cluster, decision


def _upstream(socket):
    return socket["typed_config"]


def test_istio_mutual_sni_alpn_and_server_identity():
    cluster, _ = _cluster(dr("d", "foo", "ISTIO_MUTUAL"))
    tls = _upstream(cluster["transport_socket"])
    assert tls["sni"] == "outbound_.8000_._.httpbin.bar.svc.cluster.local"
    # What Istio's istio.alpn filter makes the ClientHello offer for an HTTP/1.1 service.
    assert tls["common_tls_context"]["alpn_protocols"] == ["istio-http/1.1", "istio"]
    assert tls["common_tls_context"]["tls_params"]["tls_maximum_protocol_version"] == "TLSv1_3"
    sans = tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
    assert {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/bar/sa/httpbin"}} in \
        sans["match_typed_subject_alt_names"]
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"]["max_requests_per_connection"] == 1


def test_auto_mtls_only_to_sidecar_endpoints_and_never_when_service_namespace_disables():
    cluster, decision = _cluster()
    assert [m["name"] for m in cluster["transport_socket_matches"]] == ["tlsMode-istio", "tlsMode-disabled"]
    assert decision["endpoints_tls_mode_istio"] == [SERVER.ip]
    cluster, _ = _cluster(pa("n", "bar", "DISABLE"))
    assert "transport_socket_matches" not in cluster and "transport_socket" not in cluster
    # A workload-level DISABLE leaves the cluster auto but takes the endpoint's tlsMode label away.
    cluster, decision = _cluster(pa("w", "bar", "DISABLE", {"app": "httpbin"}))
    assert "transport_socket_matches" in cluster and decision["endpoints_tls_mode_istio"] == [None]


def test_mutual_mesh_cert_paths_resolve_to_the_workloads_files_with_auto_sni():
    cluster, _ = _cluster(dr("d", "foo", "MUTUAL", clientCertificate="/etc/certs/cert-chain.pem",
                             privateKey="/etc/certs/key.pem", caCertificates="/etc/certs/root-cert.pem"))
    common = _upstream(cluster["transport_socket"])["common_tls_context"]
    assert common["tls_certificates"][0]["certificate_chain"]["filename"] == "/c/c/cert-chain.pem"
    assert common["validation_context"]["trusted_ca"]["filename"] == "/c/c/root-cert.pem"
    assert "alpn_protocols" not in common
    upstream = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["upstream_http_protocol_options"]
    assert upstream == {"auto_sni": True, "auto_san_validation": True}


def test_mutual_with_a_certificate_file_the_mesh_lacks_is_a_clear_error():
    with pytest.raises(ManifestError, match=r"DestinationRule foo/d: spec.trafficPolicy.tls.clientCertificate"):
        _cluster(dr("d", "foo", "MUTUAL", clientCertificate="/nowhere/cert.pem", privateKey="/etc/certs/key.pem"))


def test_rules_for_one_host_merge_and_the_oldest_traffic_policy_wins():
    _, decision = _cluster(dr("first", "foo", "DISABLE"), dr("second", "foo", "ISTIO_MUTUAL"))
    assert decision["destination_rule"] == ["foo/first", "foo/second"] and decision["tls_mode"] == "DISABLE"
    older = dr("first", "foo", "ISTIO_MUTUAL")
    older["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"maxConnections": 10}}}
    _, decision = _cluster(older, dr("second", "foo", "DISABLE"))
    assert decision["tls_mode"] is None  # the older trafficPolicy (without tls) hides the newer tls
    # Different exportTo: kept apart, and the newest rule without a selector applies.
    _, decision = _cluster(dr("first", "foo", "ISTIO_MUTUAL"), dr("second", "foo", "DISABLE", export_to=["."]))
    assert decision["destination_rule"] == ["foo/second"] and decision["tls_mode"] == "DISABLE"


def test_a_tls_block_without_mode_is_disable_and_a_port_without_mode_inherits():
    doc = dr("d", "foo", "DISABLE")
    del doc["spec"]["trafficPolicy"]["tls"]["mode"]
    cluster, decision = _cluster(pa("n", "bar", "STRICT"), doc)
    assert decision["tls_mode"] == "DISABLE" and "transport_socket" not in cluster
    assert "transport_socket_matches" not in cluster
    port_without_mode = pa("w", "bar", None, {"app": "httpbin"}, {8080: "DISABLE"})
    port_without_mode["spec"]["portLevelMtls"][8080] = {}
    assert server_mode(pa("n", "bar", "STRICT"), port_without_mode) == "STRICT"


def test_port_level_entry_without_tls_resets_the_cluster_but_not_the_endpoint_label():
    doc = dr("d", "foo", "DISABLE")
    doc["spec"]["trafficPolicy"]["portLevelSettings"] = [{"port": {"number": 8000}, "connectionPool": {"tcp": {"maxConnections": 5}}}]
    cluster, decision = _cluster(doc)
    assert decision["tls_mode"] is None and "transport_socket_matches" in cluster  # auto mTLS
    assert decision["endpoints_tls_mode_istio"] == [None]  # ... to an endpoint the DISABLE rule unlabels


def test_port_level_tls_overrides_the_rule_for_the_service_port():
    cluster, decision = _cluster(dr("d", "foo", "ISTIO_MUTUAL", port_modes={8000: "DISABLE"}))
    assert decision["tls_mode"] == "DISABLE" and "transport_socket" not in cluster


@pytest.mark.parametrize(("mode", "chains"), [
    ("STRICT", [("8080_mtls", "tls", None)]),
    ("PERMISSIVE", [("8080_mtls", "tls", cp.ISTIO_ALPNS), ("8080_plaintext", "raw_buffer", None)]),
    ("DISABLE", [("8080_plaintext", "raw_buffer", None)]),  # TLS matches no chain: closed, no HTTP 400
])
def test_inbound_chains_per_mode(mode, chains):
    got = cp.inbound_chains(SERVER, 8080, mode)
    assert [(c["name"], c["filter_chain_match"].get("transport_protocol"),
             c["filter_chain_match"].get("application_protocols")) for c in got] == chains
    for chain in got:
        if "transport_socket" in chain:
            assert chain["transport_socket"]["typed_config"]["require_client_certificate"] is True
        hcm = chain["filters"][0]["typed_config"]
        assert hcm["forward_client_cert_details"] == "APPEND_FORWARD"
        assert hcm["set_current_client_cert_details"]["uri"] is True


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_passthrough_chains_follow_the_workload_mode(mode):
    chains = cp.inbound_chains(SERVER, None, mode)
    assert all("destination_port" not in c["filter_chain_match"] for c in chains)
    transports = [c["filter_chain_match"]["transport_protocol"] for c in chains]
    assert transports == {"STRICT": ["tls"], "PERMISSIVE": ["tls", "raw_buffer"], "DISABLE": ["raw_buffer"]}[mode]


def _credential_dr(selector=None, mode="SIMPLE", name="httpbin-ca", **tls):
    return dr("cred", "foo", mode, selector=selector, credentialName=name, **tls)


def test_credential_name_without_selector_sends_no_tls():
    cluster, decision = _cluster(_credential_dr())
    assert "transport_socket" not in cluster and "transport_socket_matches" not in cluster
    assert "no TLS context" in decision["note"]


@pytest.mark.parametrize(("selector", "mode", "name"), [
    ({"app": "sleep"}, "SIMPLE", "httpbin-ca"),
    ({"app": "sleep"}, "MUTUAL", "httpbin-ca"),
    (None, "SIMPLE", "configmap://httpbin-ca"),  # a ConfigMap is readable by anyone: no short cut
])
def test_credential_name_otherwise_waits_for_a_secret_that_never_arrives(selector, mode, name):
    cluster, decision = _cluster(_credential_dr(selector, mode, name))
    context = _upstream(cluster["transport_socket"])
    common = context["common_tls_context"]
    secret_name = name if "://" in name else f"kubernetes://{name}"
    [cert] = common["tls_certificate_sds_secret_configs"]
    ca = common["combined_validation_context"]["validation_context_sds_secret_config"]
    assert (cert["name"], ca["name"]) == (secret_name, secret_name + "-cacert")
    for sds in (cert, ca):
        assert sds["sds_config"]["path_config_source"]["path"] == cp.SECRET_NEVER_SERVED
    assert "tls_certificates" not in common and "alpn_protocols" not in common
    assert "never arrives" in decision["note"]
    upstream = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["upstream_http_protocol_options"]
    assert upstream == {"auto_sni": True, "auto_san_validation": True}


def test_credential_name_with_insecure_skip_verify_waits_for_the_certificate_only():
    cluster, _ = _cluster(_credential_dr({"app": "sleep"}, "MUTUAL", insecureSkipVerify=True))
    common = _upstream(cluster["transport_socket"])["common_tls_context"]
    assert "combined_validation_context" not in common and len(common["tls_certificate_sds_secret_configs"]) == 1


# --- Service port protocols, TCP and sniffed chains, headless Services ----------------------------------------

TCP_SERVER = cp.Pod("s", "bar", {"app": "httpbin", "security.istio.io/tlsMode": "istio"}, "httpbin", "10.0.0.3",
                    True, "/c/s", "/sds/s")


def service(port_name, vip="10.251.0.1", port=8000):
    return cp.Service("httpbin", "bar", vip, port, 8080, (TCP_SERVER,), port_name)


@pytest.mark.parametrize(("name", "port", "protocol"), [
    ("http", 8000, cp.HTTP), ("http-web", 8000, cp.HTTP), ("HTTP", 8000, cp.HTTP),
    ("tcp", 8000, cp.TCP), ("tcp-echo", 8000, cp.TCP), ("tls", 8000, cp.TCP), ("https-app", 8000, cp.TCP),
    ("mysql", 8000, cp.TCP), ("web", 8000, cp.AUTO), ("httpbin", 8000, cp.AUTO),  # prefix before '-' only
    ("web", 3306, cp.TCP), ("web", 25, cp.TCP),  # well-known server-first ports are TCP when unnamed
    ("grpc", 8000, "HTTP2"), ("grpc-web", 8000, "HTTP2"), ("udp", 8000, "UDP"),
])
def test_port_protocol_from_the_port_name(name, port, protocol):
    assert cp.port_protocol(port, name) == protocol


@pytest.mark.parametrize(("name", "app_protocol", "protocol"), [
    ("web", "tcp", cp.TCP), ("http", "tcp", cp.TCP), ("tcp", "http", cp.HTTP), ("web", "HTTP-x", cp.HTTP),
    ("tcp", "kubernetes.io/ws", cp.HTTP), ("http", "kubernetes.io/wss", cp.TCP), ("http", "kubernetes.io/h2c", "HTTP2"),
    ("http", "example.com/custom", cp.AUTO),  # a domain-prefixed name Istio does not know: sniffed
])
def test_app_protocol_comes_before_the_port_name(name, app_protocol, protocol):
    assert cp.port_protocol(8000, name, app_protocol) == protocol


def _summary(chains):
    return [(c["name"], c["filter_chain_match"]["transport_protocol"], c["filter_chain_match"].get("application_protocols"),
             "transport_socket" in c, c["filters"][0]["name"].rsplit(".", 1)[-1]) for c in chains]


@pytest.mark.parametrize(("protocol", "mode", "chains"), [
    (cp.TCP, "STRICT", [("8080_tcp_mtls", "tls", None, True, "tcp_proxy")]),
    (cp.TCP, "PERMISSIVE", [("8080_tcp_mtls", "tls", cp.ISTIO_ALPNS, True, "tcp_proxy"),
                            ("8080_tcp_tls", "tls", None, False, "tcp_proxy"),  # an app's own TLS passes through
                            ("8080_tcp_plaintext", "raw_buffer", None, False, "tcp_proxy")]),
    (cp.TCP, "DISABLE", [("8080_tcp_plaintext", "raw_buffer", None, False, "tcp_proxy")]),
    (cp.AUTO, "STRICT", [("8080_http_mtls", "tls", cp.MTLS_HTTP_ALPNS, True, "http_connection_manager"),
                         ("8080_tcp_mtls", "tls", None, True, "tcp_proxy")]),
    (cp.AUTO, "PERMISSIVE", [("8080_http_mtls", "tls", cp.MTLS_HTTP_ALPNS, True, "http_connection_manager"),
                             ("8080_http_plaintext", "raw_buffer", ["http/1.1", "h2c"], False, "http_connection_manager"),
                             ("8080_tcp_mtls", "tls", ["istio-peer-exchange", "istio"], True, "tcp_proxy"),
                             ("8080_tcp_plaintext", "raw_buffer", None, False, "tcp_proxy"),
                             ("8080_tcp_tls", "tls", None, False, "tcp_proxy")]),
    (cp.AUTO, "DISABLE", [("8080_http_plaintext", "raw_buffer", ["http/1.1", "h2c"], False, "http_connection_manager"),
                          ("8080_tcp_plaintext", "raw_buffer", None, False, "tcp_proxy")]),
])
def test_inbound_chains_per_protocol_and_mode(protocol, mode, chains):
    got = cp.inbound_chains(TCP_SERVER, 8080, mode, protocol)
    assert _summary(got) == chains
    for chain in got:
        assert chain["filter_chain_match"]["destination_port"] == 8080
        config = chain["filters"][0]["typed_config"]
        if chain["filters"][0]["name"].endswith("tcp_proxy"):
            assert config["cluster"] == "inbound|8080||"
        if "transport_socket" in chain:
            context = chain["transport_socket"]["typed_config"]
            assert context["require_client_certificate"] is True
            # No metadata exchange here: the server never agrees to istio-peer-exchange.
            assert "istio-peer-exchange" not in context["common_tls_context"]["alpn_protocols"]


def _inbound(port_name, *docs, service_port=8000):
    resources = parse_resources(list(docs))
    config = cp.compile_sidecar(TCP_SERVER, [service(port_name, port=service_port)], resources, ROOT)
    [inbound] = [listener for listener in config.listeners if listener["name"] == "virtualInbound"]
    return inbound, config


def _filters(listener):
    return {f["name"].rsplit(".", 1)[-1]: f.get("filter_disabled") for f in listener["listener_filters"]}


def test_inspectors_run_only_where_a_chain_needs_them():
    port_8080 = {"destination_port_range": {"start": 8080, "end": 8081}}
    # DISABLE TCP: nothing is read before the app speaks, so a server-first app greets a plaintext client.
    inbound, _ = _inbound("tcp", pa("n", "bar", "DISABLE"))
    assert _filters(inbound) == {"original_dst": None, "tls_inspector": port_8080}
    # PERMISSIVE TCP: the TLS inspector waits for the client's first bytes (a server-first app waits too).
    inbound, _ = _inbound("tcp")
    assert _filters(inbound) == {"original_dst": None, "tls_inspector": None}
    # Auto: the HTTP inspector only on the sniffed port, and not under STRICT (all TLS there).
    inbound, _ = _inbound("web")
    assert _filters(inbound) == {"original_dst": None, "tls_inspector": None, "http_inspector": {"not_match": port_8080}}
    inbound, _ = _inbound("web", pa("n", "bar", "STRICT"))
    assert _filters(inbound) == {"original_dst": None, "tls_inspector": None}
    inbound, _ = _inbound("web", pa("n", "bar", "DISABLE"))
    assert _filters(inbound) == {"original_dst": None, "tls_inspector": port_8080,
                                 "http_inspector": {"not_match": port_8080}}
    # HTTP ports keep the TLS inspector in every mode (KNOWN_DIFFERENCES "inbound listener filters").
    inbound, _ = _inbound("http", pa("n", "bar", "DISABLE"))
    assert _filters(inbound) == {"original_dst": None, "tls_inspector": None}
    # Every inbound tcp_proxy logs the peer it verified (with_peer_identity_log), the probe's server account.
    tcp, _ = _inbound("tcp")
    assert all("access_log" in f["typed_config"] for c in tcp["filter_chains"] for f in c["filters"]
               if f["name"].endswith("tcp_proxy"))
    # meshConfig protocolDetectionTimeout 0s: no inspector ever gives up.
    assert (inbound["listener_filters_timeout"], inbound["continue_on_listener_filters_timeout"]) == ("0s", True)


def _outbound(svc, *docs, client=CLIENT):
    resources = parse_resources(list(docs))
    config = cp.compile_sidecar(client, [svc], resources, ROOT)
    listeners = {listener["name"]: listener for listener in config.listeners}
    return listeners, {c["name"]: c for c in config.clusters}


def _alpn(cluster, match="tlsMode-istio"):
    socket = cluster.get("transport_socket") or next(m["transport_socket"] for m in cluster["transport_socket_matches"]
                                                     if m["name"] == match)
    return socket["typed_config"]["common_tls_context"]["alpn_protocols"]


def test_a_tcp_port_is_a_tcp_proxy_on_the_vip_with_istio_tcp_alpn():
    listeners, clusters = _outbound(service("tcp"))
    assert listeners["virtualOutbound"]["use_original_dst"] is True
    tcp = listeners["10.251.0.1_8000"]
    assert tcp["bind_to_port"] is False and "listener_filters" not in tcp and tcp["listener_filters_timeout"] == "0s"
    [chain] = tcp["filter_chains"]
    assert chain["filters"][0]["typed_config"]["cluster"] == "outbound|8000||httpbin.bar.svc.cluster.local"
    cluster = clusters["outbound|8000||httpbin.bar.svc.cluster.local"]
    assert _alpn(cluster) == ["istio-peer-exchange", "istio"]
    assert "typed_extension_protocol_options" not in cluster  # no HTTP options on a tcp_proxy cluster


def test_an_auto_port_sniffs_and_sends_http_and_tcp_to_their_own_clusters():
    listeners, clusters = _outbound(service("web"))
    sniffed = listeners["10.251.0.1_8000"]
    assert [f["name"] for f in sniffed["listener_filters"]] == ["envoy.filters.listener.http_inspector"]
    assert (sniffed["listener_filters_timeout"], sniffed["continue_on_listener_filters_timeout"]) == ("0s", True)
    [http] = sniffed["filter_chains"]
    assert http["filter_chain_match"] == {"application_protocols": ["http/1.1", "h2c"], "transport_protocol": "raw_buffer"}
    [vhost] = http["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
    assert vhost["routes"][0]["route"]["cluster"] == "outbound|8000||httpbin.bar.svc.cluster.local~http"
    tcp = sniffed["default_filter_chain"]["filters"][0]["typed_config"]
    assert tcp["cluster"] == "outbound|8000||httpbin.bar.svc.cluster.local"
    assert _alpn(clusters["outbound|8000||httpbin.bar.svc.cluster.local~http"]) == ["istio-http/1.1", "istio"]
    assert _alpn(clusters["outbound|8000||httpbin.bar.svc.cluster.local"]) == ["istio-peer-exchange", "istio"]


def test_an_http_port_listens_on_every_address_and_passes_other_hosts_and_non_http_through():
    listeners, _ = _outbound(service("http"))
    http = listeners["0.0.0.0_8000"]
    assert [f["name"] for f in http["listener_filters"]] == ["envoy.filters.listener.http_inspector"]
    vhosts = http["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
    assert [(v["domains"], v["routes"][0]["route"]["cluster"]) for v in vhosts] == [
        (["httpbin.bar.svc.cluster.local", "httpbin.bar.svc.cluster.local:8000", "10.251.0.1", "10.251.0.1:8000"],
         "outbound|8000||httpbin.bar.svc.cluster.local"), (["*"], "PassthroughCluster")]
    assert vhosts[0]["routes"][0]["route"]["retry_policy"]["num_retries"] == 2
    assert http["default_filter_chain"]["filters"][0]["typed_config"]["cluster"] == "PassthroughCluster"
    # A pooled connection to another Host would carry a later cell's request under the old policy.
    options = cp.passthrough_cluster()["typed_extension_protocol_options"]
    assert options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "common_http_protocol_options"]["max_requests_per_connection"] == 1


def test_headless_is_original_dst_with_mtls_to_every_endpoint_and_a_listener_per_endpoint():
    listeners, clusters = _outbound(service("tcp", vip=None))
    assert "10.0.0.3_8000" in listeners and not any(name.startswith("10.251.") for name in listeners)
    cluster = clusters["outbound|8000||httpbin.bar.svc.cluster.local"]
    assert (cluster["type"], cluster["lb_policy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")
    assert "load_assignment" not in cluster and "transport_socket_matches" not in cluster
    assert _alpn(cluster) == ["istio-peer-exchange", "istio"]  # even to an endpoint without a sidecar
    # The service namespace's DISABLE still turns auto mTLS off, and so does one endpoint without a sidecar
    # (push_context.go BestEffortInferServiceMTLSMode).
    _, clusters = _outbound(service("tcp", vip=None), pa("n", "bar", "DISABLE"))
    assert "transport_socket" not in clusters["outbound|8000||httpbin.bar.svc.cluster.local"]
    naked = cp.Service("httpbin", "bar", None, 8000, 8080, (TCP_SERVER, CLIENT), "tcp")
    _, clusters = _outbound(naked, pa("n", "bar", "STRICT"))
    assert "transport_socket" not in clusters["outbound|8000||httpbin.bar.svc.cluster.local"]
    # HTTP stays on 0.0.0.0:port; the endpoint's own sidecar gets no listener for itself.
    listeners, _ = _outbound(service("http", vip=None))
    assert "0.0.0.0_8000" in listeners
    listeners, _ = _outbound(service("tcp", vip=None), client=TCP_SERVER)
    assert set(listeners) == {"virtualOutbound", "virtualInbound"}


def test_the_reference_mesh_refuses_a_port_name_it_cannot_serve_before_anything_starts():
    from cluster.local.backend import LocalBackend
    from meshproof.scenario import NotSupportedYet, scenario_from_dict

    scenario = scenario_from_dict({"server": {"port_name": "grpc-api"}}, "cell")
    with pytest.raises(NotSupportedYet, match=r"server.port_name: 'grpc-api' means HTTP2, which the reference mesh"):
        LocalBackend().deploy(scenario)
