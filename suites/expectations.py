"""The oracle: what Istio does with one connection sleep -> httpbin's Service port (or the pod's IP and target
port), from the scenario's sidecars, PeerAuthentications and DestinationRules. This module is meshproof's
specification.

It reads as three questions, each answered the way istiod answers it, then one truth table:

1. Server: which PeerAuthentication mode guards the target port?         (`server_policy`)
2. Client: which DestinationRule does the client sidecar use for the host?  (`select_destination_rule`)
3. Client: what does the sidecar send: Istio mTLS, app TLS or plaintext?   (`client_origination`)
4. `OUTCOMES[(what the client sends, server mode)]` names the rule that decides the result of an HTTP request
   to the HTTP port; for the other apps (TCP echo, server-first banner, the app's own TLS) and for pod-IP
   requests, suites/expectations_ports.py follows the client sidecar's listener and the server sidecar's
   inbound filter chains (`_expect_port`). A request to the Service's ClusterIP is the request by name, with the
   step that says why (`_by_cluster_ip`).

Every rule carries its source (istio/istio at tags 1.28.10, 1.29.6 and 1.30.3 unless noted; the files and
functions named are the same in all three for everything modelled here, see `VERSION_NOTES`).

Assumptions, as in Istio's samples/httpbin: the Service port's name gives its protocol (`port_protocol`; by
default `http`, so the inbound side builds HTTP filter chains), the server's pod carries the injector label
`security.istio.io/tlsMode=istio` exactly when it has a sidecar, auto mTLS is on (the default), the mesh keeps
meshConfig's defaults (protocolDetectionTimeout 0s, outboundTrafficPolicy ALLOW_ANY), and the mesh CA's files
are what a user mounts for DestinationRule MUTUAL (`MESH_CERT_FILES`).

The oracle never imports from cluster/: the reference mesh decides the same questions on its own, and the
suites compare the two.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

from meshproof.istio_api import ClientTLS, DestinationRule, PeerAuthentication
from meshproof.scenario import (
    APPS,
    DESTINATIONS,
    NotSupportedYet,
    Request,
    Scenario,
    Server,
    check_istio_version,
    require_supported,
)
from meshproof.vocabulary import Outcome, Wire
from suites.expectations_ports import (
    ANSWER_TO_CLIENT_HELLO,
    APP_ARRIVAL,
    ARRIVALS,
    FAMILY,
    PORT_RULES,
    SIDECAR_TLS,
    SRC_TCP_ALPN,
    client_listener,
    inbound,
    to_naked_app,
)

ISTIO = "istio/istio"
SRC_PA_COMPOSE = f"{ISTIO} pilot/pkg/security/authn/policy_applier.go ComposePeerAuthentication"
SRC_PA_LOOKUP = f"{ISTIO} pilot/pkg/model/authentication.go getConfigsForWorkload"
SRC_NS_MODE = (f"{ISTIO} pilot/pkg/model/push_context.go BestEffortInferServiceMTLSMode + authentication.go "
               "addPeerAuthentication (namespace/mesh level only)")
SRC_AUTO_MTLS = (f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go buildUpstreamTLSSettings + "
                 "applyUpstreamTLSSettings (transport socket match on tlsMode=istio)")
SRC_EP_MTLS = f"{ISTIO} pilot/pkg/xds/endpoints/mtls_checker.go checkMtlsEnabled"
SRC_FCM = f"{ISTIO} pilot/pkg/networking/core/filterchain_options.go getFilterChainMatchOptions (HTTP port)"
SRC_DR_LOOKUP = f"{ISTIO} pilot/pkg/model/push_context.go PushContext.destinationRule + setDestinationRules"
SRC_DR_MERGE = f"{ISTIO} pilot/pkg/model/destination_rule.go mergeDestinationRule"
SRC_DR_SELECTOR = f"{ISTIO} pilot/pkg/model/sidecar.go SidecarScope.DestinationRule"
SRC_DR_PORT = f"{ISTIO} pilot/pkg/networking/util/util.go GetPortLevelTrafficPolicy"
SRC_HOST = f"{ISTIO} pilot/pkg/model/config.go ResolveShortnameToFQDN + MostSpecificHostMatch"
SRC_UPSTREAM_TLS = (f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go constructUpstreamTLS + "
                    "setAutoSniAndAutoSanValidation; envoy default_validator.cc verifySubjectAltName")
SRC_ISTIO_MUTUAL = (f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go buildUpstreamTLSSettings + "
                    "buildIstioMutualTLS + buildUpstreamClusterTLSContext (case ISTIO_MUTUAL)")
SRC_CREDENTIAL = f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go buildUpstreamClusterTLSContext (credentialName)"
SRC_REACHABILITY = f"{ISTIO} tests/integration/security/reachability_test.go TestReachability"
SRC_FILE_CERTS = f"{ISTIO} tests/integration/security/file_mounted_certs/p2p_mtls_test.go TestClientToServiceTls"
SRC_REQUIRE_CLIENT_CERT = f"{ISTIO} pilot/pkg/security/authn/utils/utils.go BuildInboundTLS (RequireClientCertificate)"
SRC_TLS_VERSIONS = (f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go defaultUpstreamCommonTLSContext (client: TLS "
                    "1.2-1.3; 'if not specified, envoy use TLSv1_2 as default for client') + "
                    "pilot/pkg/security/authn/utils/utils.go BuildInboundTLS (server: TlsMaximumProtocolVersion "
                    "TLSv1_3, minimum GetMinTLSVersion = meshMTLS.minProtocolVersion, default TLSv1_2)")
SRC_MESH_ALPN = (f"{ISTIO} pilot/pkg/xds/filters/filters.go Alpn (mtlsHTTP11ALPN istio-http/1.1,istio,http/1.1) + "
                 "pilot/pkg/networking/util/util.go ALPNInMesh ('istio' marks in-mesh traffic)")

SRC_HEADLESS_MTLS = (f"{ISTIO} pilot/pkg/model/push_context.go BestEffortInferServiceMTLSMode (a Passthrough "
                     "service: DISABLE if any endpoint lacks tlsMode=istio, else the namespace/mesh mode) + "
                     "pilot/pkg/networking/core/cluster_tls.go applyUpstreamTLSSettings (no transport socket match "
                     "on an ORIGINAL_DST cluster) + cluster.go convertResolution (Passthrough -> ORIGINAL_DST, "
                     "PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES off by default)")
SRC_ALLOW_ANY = (f"{ISTIO} pilot/pkg/networking/core/httproute.go buildCatchAllVirtualHost (allow_any: domain *, "
                 "PassthroughCluster) + generateVirtualHostDomains (Service names and VIPs, never pod IPs)")
SRC_VHOST_DOMAINS = (f"{ISTIO} pilot/pkg/networking/core/httproute.go generateVirtualHostDomains (every address of "
                     "the Service, GetAllAddressesForProxy, with and without the port)")
SRC_PROTOCOL = (f"{ISTIO} pkg/config/kube/conversion.go ConvertProtocol (the appProtocol instead of the name "
                "when set, Kubernetes' kubernetes.io/h2c, ws and wss first; a 'grpc-web' prefix, then the "
                "name up to its first '-'; an unknown name on a well-known port is TCP) + pkg/config/protocol/"
                "instance.go Parse (case-insensitive); same code at release-1.28, 1.29 and 1.30")
# pkg/config/kube/conversion.go wellKnownPorts: SMTP, DNS, MySQL, MongoDB, which protocol sniffing would break.
WELL_KNOWN_TCP_PORTS = (25, 53, 3306, 27017)
# protocol.Parse's names, lower-cased, and the protocol each gives.
PORT_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "grpc": "GRPC", "grpc-web": "GRPC-Web", "http": "HTTP",
                  "http_proxy": "HTTP_PROXY", "http2": "HTTP2", "https": "HTTPS", "tls": "TLS", "mongo": "Mongo",
                  "redis": "Redis", "mysql": "MySQL"}


# Kubernetes' standard appProtocol names, which ConvertProtocol reads from appProtocol only.
KUBERNETES_APP_PROTOCOLS = {"kubernetes.io/h2c": "HTTP2", "kubernetes.io/ws": "HTTP", "kubernetes.io/wss": "HTTPS"}


def port_protocol(port_name: str, service_port: int, app_protocol: str | None = None) -> str:
    """The protocol Istio reads from a TCP Service port: its appProtocol when set, else its name, up to the first
    '-'; "auto" (automatic protocol detection, sniffing) for a name it does not know (SRC_PROTOCOL)."""
    if app_protocol in KUBERNETES_APP_PROTOCOLS:
        return KUBERNETES_APP_PROTOCOLS[app_protocol]
    name = port_name if app_protocol is None else app_protocol
    if name.lower().startswith("grpc-web"):
        return "GRPC-Web"
    prefix = name.split("-", 1)[0].lower()
    if prefix in PORT_PROTOCOLS:
        return PORT_PROTOCOLS[prefix]
    return "TCP" if service_port in WELL_KNOWN_TCP_PORTS else "auto"


def protocol_field(server: Server) -> tuple[str, str]:
    """(scenario field, value) that gives the port its protocol: the appProtocol when set, else the name."""
    if server.app_protocol is not None:
        return "server.app_protocol", server.app_protocol
    return "server.port_name", server.port_name


def server_port_protocol(server: Server) -> str:
    return port_protocol(server.port_name, server.service_port, server.app_protocol)


# The SNI Istio sets for ISTIO_MUTUAL when the DestinationRule names none: the cluster name
# (pilot/pkg/model/service.go BuildSubsetKey). The wire classifier (probes/verdict.py) calls a flow Istio mTLS
# only with this SNI form and Istio's ALPN.
ISTIO_SNI = re.compile(r"^outbound_\.\d+_\.[^_]*_\..+$")

# What a user of Istio's docs mounts for DestinationRule MUTUAL: the workload's own mesh-CA files
# (the reference mesh mounts them in each sidecar; on kube via sidecar.istio.io/userVolumeMount).
MESH_CERT_FILES = {"clientCertificate": "/etc/certs/cert-chain.pem", "privateKey": "/etc/certs/key.pem",
                   "caCertificates": "/etc/certs/root-cert.pem"}

# The modelled functions were compared between tags 1.28.10, 1.29.6 and 1.30.3; none changes a prediction.
# A rule that starts to differ gets an entry here and a branch on scenario.istio_version.
VERSION_NOTES = {
    "1.28": "as 1.30 for every rule here (cluster_tls.go differs only for dynamic-forward-proxy clusters; "
            "filterchain_options.go is identical; listener.go, tls.go and listener_inbound.go differ in wasm, "
            "gateway and dynamic-forward-proxy code only)",
    "1.29": "as 1.30 for every rule here (BestEffortInferServiceMTLSMode reads the push context's PeerAuthentications "
            "where 1.30 takes the sidecar scope's: the same policies for these scenarios)",
    "1.30": "reference version of this table (tag 1.30.3)",
}


@dataclass(frozen=True)
class Prediction:
    outcome: Outcome
    wire: Wire  # what the client puts on the pod-to-pod link
    # The client SPIFFE ID the server side names: on an HTTP chain what the app sees in X-Forwarded-Client-Cert;
    # on a tcp_proxy chain (no XFCC, whatever the app speaks) the server sidecar's own account. None: nobody.
    peer_identity: str | None
    reason: str  # one readable sentence
    rule: str  # short rule id, a key of RULES
    source: str  # citation
    client_tls: str  # "istio-mutual" | "mutual" | "simple" | "plaintext"
    server_mode: str  # STRICT | PERMISSIVE | DISABLE | "no-sidecar"
    istio_version: str = ""
    details: tuple[str, ...] = field(default=())  # the decisions that led here, in order
    # For a handshake the two sidecars complete: what a passive observer must see of it (`wire_tls`).
    tls: dict | None = None
    envoy: dict | None = None  # for a 503: EnvoyReport.to_json() plus its source, what the client must report

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(outcome=str(self.outcome), wire=str(self.wire), details=list(self.details))
        return data


@dataclass(frozen=True)
class EnvoyReport:
    """Which 503: what the client sidecar must report when it answers one. A 503 alone says only that
    something failed (no route, no healthy upstream, a warming cluster, a TLS failure all give one)."""

    flags: str  # %RESPONSE_FLAGS%: UF connection failure (URX: retries exhausted), UC connection termination
    failure: str | None  # a phrase of %UPSTREAM_TRANSPORT_FAILURE_REASON%; None: no TLS failure reported
    server_counter: str | None  # a server sidecar failure counter that moved first (where the target reads it)
    says: str
    attempts: int  # TCP connections the client sidecar opens to the server for the one request (RETRIED or 1)

    def to_json(self) -> dict:
        return asdict(self)


SRC_FLAGS = ("envoyproxy/envoy source/common/stream_info/utility.cc ResponseFlagUtils (UF, UC, URX) and "
             "source/common/tls/ssl_socket.cc drainErrorQueue / NotReadySslSocket (TLS_error:...:TLS_error_end), as "
             f"Istio's default access log prints them; {ISTIO} pilot/pkg/networking/core/route/retry/retry.go "
             "DefaultPolicy (2 retries on connect-failure)")
# Istio's default outbound retry policy (DefaultPolicy: NumRetries 2, RetryOn connect-failure,refused-stream,...)
# retries a connection that fails before the request is sent, each time on a new connection: 1 + 2. A connection
# the server closes once it was opened is not retried (RetryOn has no "reset"): 1.
DEFAULT_RETRIES = 2
RETRIED = 1 + DEFAULT_RETRIES
# The 503s of the table, by what went wrong. Counters only where the server counts before the client
# answers (it closed the connection): a counter bumped later would belong to the next probe.
CLOSED_AFTER_CONNECT = EnvoyReport("UC", None, "no_filter_chain_match",
                                   "upstream connection termination: the server closed the connection after it "
                                   "was opened, no TLS failure (its listener matched no filter chain)", attempts=1)
HANDSHAKE_RESET = EnvoyReport("URX,UF", "Connection reset by peer", "no_filter_chain_match",
                              "upstream connection failure, the TLS handshake reset by the server (its listener "
                              "matched no filter chain), retries exhausted", attempts=RETRIED)
NOT_TLS = EnvoyReport("URX,UF", "WRONG_VERSION_NUMBER", None,
                      "upstream connection failure, TLS_error WRONG_VERSION_NUMBER (the answer was not TLS), "
                      "retries exhausted", attempts=RETRIED)
NO_CLIENT_CERT = EnvoyReport("UC", None, "ssl.fail_verify_no_cert",
                             "upstream connection termination after the TLS 1.3 handshake: the server refused "
                             "the connection for want of a client certificate", attempts=1)
SERVER_CERT_REFUSED = EnvoyReport("URX,UF", "CERTIFICATE_VERIFY_FAILED", None,
                                  "upstream connection failure, TLS_error CERTIFICATE_VERIFY_FAILED, retries exhausted",
                                  attempts=RETRIED)
NO_SECRET = EnvoyReport("URX,UF", "Secret is not supplied by SDS", None,
                        "upstream connection failure before a byte is sent (the TLS context has no certificate), "
                        "retries exhausted", attempts=RETRIED)


@dataclass(frozen=True)
class Rule:
    outcome: Outcome
    wire: Wire | None  # None: whatever the client sends (Istio mTLS or app TLS)
    identity: bool  # the app sees the client's SPIFFE ID
    says: str  # the end of the reason sentence
    source: str
    envoy: EnvoyReport | None = None  # for a 503: what the client sidecar must report


# The truth table's cells. Wire is what the client sends first: a plaintext request leaves the client even
# when the server then closes the connection.
RULES: dict[str, Rule] = {
    "naked-client-to-strict-reset": Rule(
        Outcome.RESET, Wire.PLAINTEXT, False,
        "STRICT has only TLS filter chains, so the plaintext connection matches none and is closed",
        f"{SRC_FCM} inboundStrictHTTPFilterChainMatchOptions; {SRC_REACHABILITY} 'mtls strict' (notFromNaked)"),
    "plaintext-accepted": Rule(
        Outcome.PLAINTEXT, Wire.PLAINTEXT, False,
        "the server side accepts plaintext, so the request arrives in cleartext",
        f"{SRC_FCM} inboundPermissiveHTTPFilterChainMatchWithMxcOptions / inboundPlainTextHTTPFilterChainMatchOptions"),
    "plaintext-to-naked-server": Rule(
        Outcome.PLAINTEXT, Wire.PLAINTEXT, False,
        "no sidecar intercepts on the server, so httpbin answers the plaintext request",
        f"{SRC_REACHABILITY} 'global mtls permissive' (notToNaked gets mTLS, naked gets plaintext)"),
    "sidecar-plaintext-to-strict-503": Rule(
        Outcome.UNAVAILABLE, Wire.PLAINTEXT, False,
        "STRICT closes the plaintext connection and the client sidecar answers 503",
        f"{SRC_FCM} inboundStrictHTTPFilterChainMatchOptions; {SRC_REACHABILITY} 'migration tls disabled'",
        envoy=CLOSED_AFTER_CONNECT),
    "istio-mutual-accepted": Rule(
        Outcome.MTLS, Wire.MTLS, True,
        "the server's mTLS chain (Istio ALPN) terminates it and sets X-Forwarded-Client-Cert",
        f"{SRC_FCM}; {SRC_REACHABILITY} 'mtls strict' / 'mtls permissive' (expectMTLS notNaked)"),
    "istio-mutual-to-disable-503": Rule(
        Outcome.UNAVAILABLE, Wire.MTLS, False,
        "a DISABLE server has only plaintext filter chains, the TLS handshake fails and the client sidecar "
        "answers 503",
        f"{SRC_FCM} inboundPlainTextHTTPFilterChainMatchOptions",
        envoy=HANDSHAKE_RESET),
    "tls-to-naked-server-503": Rule(
        Outcome.UNAVAILABLE, None, False,
        "httpbin without a sidecar speaks plaintext HTTP, the TLS handshake fails and the client sidecar "
        "answers 503",
        f"{SRC_AUTO_MTLS} (user-supplied TLS is not a transport socket match); {SRC_REACHABILITY} "
        "'migration tls mutual' (only the sidecar subset succeeds)",
        envoy=NOT_TLS),
    "app-tls-to-permissive-503": Rule(
        Outcome.UNAVAILABLE, Wire.APP_TLS, False,
        "PERMISSIVE on an HTTP port matches TLS only with Istio's ALPN, so TLS without it matches no chain and "
        "the client sidecar answers 503",
        f"{SRC_FCM} inboundPermissiveHTTPFilterChainMatchWithMxcOptions ('We do not need to handle other simple "
        "TLS')",
        envoy=HANDSHAKE_RESET),
    "app-tls-to-disable-503": Rule(
        Outcome.UNAVAILABLE, Wire.APP_TLS, False,
        "a DISABLE server has only plaintext filter chains, so the TLS handshake fails and the client sidecar "
        "answers 503",
        f"{SRC_FCM} inboundPlainTextHTTPFilterChainMatchOptions",
        envoy=HANDSHAKE_RESET),
    "simple-to-strict-503": Rule(
        Outcome.UNAVAILABLE, Wire.APP_TLS, False,
        "STRICT requires a client certificate and SIMPLE sends none, so the server sidecar ends the handshake and "
        "the client sidecar answers 503",
        SRC_REQUIRE_CLIENT_CERT,
        envoy=NO_CLIENT_CERT),
    "mutual-mesh-cert-to-strict": Rule(
        Outcome.MTLS, Wire.APP_TLS, True,
        "STRICT's HTTP chain matches any TLS with a mesh-signed client certificate (no ALPN match), so the "
        "request succeeds with the client's identity in X-Forwarded-Client-Cert, but without Istio's ALPN and "
        "SNI on the wire",
        f"{SRC_FCM} inboundStrictHTTPFilterChainMatchOptions; {SRC_FILE_CERTS}"),
    "client-cert-unavailable-503": Rule(
        Outcome.UNAVAILABLE, Wire.NONE, False,
        "nothing is sent: Envoy keeps the cluster waiting for the missing certificate secret",
        f"{SRC_UPSTREAM_TLS} (file certificates are served over SDS: constructSdsSecretConfigFromFile)",
        envoy=NO_SECRET),
    "client-rejects-server-cert-503": Rule(
        Outcome.UNAVAILABLE, None, False,
        "the client sidecar cannot verify the server's certificate, so it aborts the handshake and answers 503",
        SRC_UPSTREAM_TLS,
        envoy=SERVER_CERT_REFUSED),
}

# (what the client sends, effective server mode) -> rule. "naked" is a client without a sidecar.
OUTCOMES: dict[tuple[str, str], str] = {
    ("naked", "STRICT"): "naked-client-to-strict-reset",
    ("naked", "PERMISSIVE"): "plaintext-accepted",
    ("naked", "DISABLE"): "plaintext-accepted",
    ("naked", "no-sidecar"): "plaintext-to-naked-server",
    ("plaintext", "STRICT"): "sidecar-plaintext-to-strict-503",
    ("plaintext", "PERMISSIVE"): "plaintext-accepted",
    ("plaintext", "DISABLE"): "plaintext-accepted",
    ("plaintext", "no-sidecar"): "plaintext-to-naked-server",
    ("istio-mutual", "STRICT"): "istio-mutual-accepted",
    ("istio-mutual", "PERMISSIVE"): "istio-mutual-accepted",
    ("istio-mutual", "DISABLE"): "istio-mutual-to-disable-503",
    ("istio-mutual", "no-sidecar"): "tls-to-naked-server-503",
    ("simple", "STRICT"): "simple-to-strict-503",
    ("simple", "PERMISSIVE"): "app-tls-to-permissive-503",
    ("simple", "DISABLE"): "app-tls-to-disable-503",
    ("simple", "no-sidecar"): "tls-to-naked-server-503",
    ("mutual", "STRICT"): "mutual-mesh-cert-to-strict",
    ("mutual", "PERMISSIVE"): "app-tls-to-permissive-503",
    ("mutual", "DISABLE"): "app-tls-to-disable-503",
    ("mutual", "no-sidecar"): "tls-to-naked-server-503",
}


# ---------------------------------------------------------------------------------------------------------
# 1. The server: PeerAuthentication
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerPolicy:
    mode: str  # STRICT | PERMISSIVE | DISABLE | "no-sidecar"
    namespace_mode: str  # what auto mTLS believes: mesh/namespace level only (never UNSET)
    steps: tuple[str, ...]


def _set_mode(mode: str | None) -> bool:
    return mode not in (None, "UNSET")  # spec.mtls or its mode absent is UNSET (isMtlsModeUnset)


def _tls_mode(settings: ClientTLS) -> str:
    """A tls block without mode is DISABLE, proto3's default enum value (istio/api
    networking/v1alpha3/destination_rule.proto ClientTLSSettings.TLSmode: DISABLE = 0)."""
    return settings.mode or "DISABLE"


def _oldest(policies: list[PeerAuthentication]) -> PeerAuthentication | None:
    # Creation timestamps decide; the scenario creates resources in list order, >= 1 s apart.
    return min(policies, key=lambda p: p.order) if policies else None


def server_policy(scenario: Scenario) -> ServerPolicy:
    """The effective PeerAuthentication mode on the server's target port, and the namespace-level mode that
    the client's auto mTLS sees. Sources: SRC_PA_LOOKUP, SRC_PA_COMPOSE, SRC_NS_MODE."""
    server, root = scenario.server, scenario.root_namespace
    pas = [r for r in scenario.resources if isinstance(r, PeerAuthentication)]
    steps: list[str] = []

    # getConfigsForWorkload: only the workload's own namespace and the root namespace are looked at.
    for pa in pas:
        if pa.namespace not in (server.namespace, root):
            steps.append(f"PeerAuthentication {pa.namespace}/{pa.name} is ignored: it is neither in the server's "
                         f"namespace nor in the root namespace {root}")
    mesh_level = [p for p in pas if p.namespace == root and not p.selector]
    ns_level = [p for p in pas if p.namespace == server.namespace != root and not p.selector]
    workload_level = [p for p in pas if p.namespace == server.namespace != root and p.selector
                      and _selects(p.selector, server.labels)]
    for p in pas:
        if p.namespace == root and p.selector:
            steps.append(f"PeerAuthentication {p.namespace}/{p.name} is ignored: a selector policy in the root "
                         "namespace is never a workload policy (ComposePeerAuthentication)")
        elif p.namespace == server.namespace != root and p.selector and not _selects(p.selector, server.labels):
            steps.append(f"PeerAuthentication {p.namespace}/{p.name} does not select the server "
                         f"(labels {server.labels})")
    chosen = {}
    for level, candidates in (("mesh", mesh_level), ("namespace", ns_level), ("workload", workload_level)):
        oldest = _oldest(candidates)
        chosen[level] = oldest
        for p in candidates:
            if p is not oldest:
                steps.append(f"{level}-level PeerAuthentication {p.namespace}/{p.name} loses to the older "
                             f"{oldest.namespace}/{oldest.name} (the oldest wins)")

    # Auto mTLS hint: namespace level, else mesh level, else PERMISSIVE; UNSET inherits.
    mesh, namespace, workload = chosen["mesh"], chosen["namespace"], chosen["workload"]
    mesh_mode = (mesh.mode if _set_mode(mesh.mode) else "PERMISSIVE") if mesh else None
    if namespace is not None:
        namespace_mode = namespace.mode if _set_mode(namespace.mode) else (mesh_mode or "PERMISSIVE")
    else:
        namespace_mode = mesh_mode or "PERMISSIVE"

    # ComposePeerAuthentication: PERMISSIVE, overridden by mesh, namespace, workload unless UNSET.
    mode = "PERMISSIVE"
    if not (mesh or namespace or workload):
        steps.append("no PeerAuthentication applies, so the default PERMISSIVE holds")
    for level, policy in (("mesh", mesh), ("namespace", namespace), ("workload", workload)):
        if policy is None:
            continue
        if _set_mode(policy.mode):
            mode = policy.mode
            steps.append(f"{level}-level PeerAuthentication {policy.namespace}/{policy.name} sets {mode}")
        else:
            steps.append(f"{level}-level PeerAuthentication {policy.namespace}/{policy.name} is UNSET and inherits "
                         f"{mode}")
    if workload is not None:
        if server.target_port in workload.port_level:
            port_mode = workload.port_level[server.target_port]
            if port_mode is not None and _set_mode(port_mode):
                mode = port_mode
                steps.append(f"portLevelMtls[{server.target_port}] of {workload.namespace}/{workload.name} sets "
                             f"{port_mode}")
            else:
                steps.append(f"portLevelMtls[{server.target_port}] is UNSET and inherits {mode}")
        for port in workload.port_level:
            if port != server.target_port:
                note = " (that is the Service port: portLevelMtls is keyed by the target port)" \
                    if port == server.service_port else ""
                steps.append(f"portLevelMtls[{port}] does not apply to target port {server.target_port}{note}")
    if not server.sidecar:
        steps.append("the server has no sidecar, so no PeerAuthentication is enforced")
        return ServerPolicy("no-sidecar", namespace_mode, tuple(steps))
    return ServerPolicy(mode, namespace_mode, tuple(steps))


def _selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


# ---------------------------------------------------------------------------------------------------------
# 2. The client: which DestinationRule
# ---------------------------------------------------------------------------------------------------------

@dataclass
class _Consolidated:
    """One entry of istiod's per-host DestinationRule list (several rules may merge into one)."""

    first: DestinationRule  # the rule whose namespace, selector and exportTo the entry keeps
    export_to: frozenset[str]
    tls: ClientTLS | None
    port_tls: dict[int, ClientTLS | None]
    has_traffic_policy: bool
    names: list[str]


def _resolved_host(dr: DestinationRule) -> str:
    if dr.host == "*" or "." in dr.host:
        return dr.host
    return f"{dr.host}.{dr.namespace}.svc.cluster.local"


def _host_key(hosts: set[str], needle: str) -> str | None:
    """MostSpecificHostMatch: the exact host, else the longest wildcard that covers it."""
    if needle in hosts:
        return needle
    wildcards = [h for h in hosts if h.startswith("*") and needle.endswith(h[1:])]
    return max(wildcards, key=len) if wildcards else None


def _export_set(dr: DestinationRule) -> frozenset[str]:
    return frozenset(["."]) if dr.workload_selector is not None else frozenset(dr.export_to)


def _merge(pool: list[DestinationRule]) -> dict[str, list[_Consolidated]]:
    """mergeDestinationRule with ENABLE_ENHANCED_DESTINATIONRULE_MERGE (default on): rules for one host with
    equal exportTo merge, the oldest top-level trafficPolicy wins; different exportTo stay separate entries."""
    by_host: dict[str, list[_Consolidated]] = {}
    # sortConfigBySelectorAndCreationTime: selector rules first, then oldest first
    for dr in sorted(pool, key=lambda d: (d.workload_selector is None, d.order)):
        host, export = _resolved_host(dr), _export_set(dr)
        entries = by_host.setdefault(host, [])
        append_separately = True
        for entry in entries:
            if export == entry.export_to:
                append_separately = False
            elif entry.export_to and export >= entry.export_to:
                append_separately = True  # merge into it and also stand alone
            else:
                append_separately = True
                continue
            with_selector = (dr.workload_selector is not None, entry.first.workload_selector is not None)
            if all(with_selector) and dr.workload_selector != entry.first.workload_selector:
                append_separately = True
                continue
            if not any(with_selector) or all(with_selector):
                append_separately = False
            entry.names.append(f"{dr.namespace}/{dr.name}")
            if not entry.has_traffic_policy and dr.has_traffic_policy:
                entry.tls, entry.port_tls, entry.has_traffic_policy = dr.tls, dict(dr.port_tls), True
        if append_separately or not entries:
            entries.append(_Consolidated(dr, export, dr.tls, dict(dr.port_tls), dr.has_traffic_policy,
                                         [f"{dr.namespace}/{dr.name}"]))
    return by_host


def _visible_locally(dr: DestinationRule) -> bool:
    export = _export_set(dr)
    return not export or bool(export & {"*", ".", dr.namespace})


def _private_only(dr: DestinationRule) -> bool:
    export = _export_set(dr)
    return len(export) == 1 and bool(export & {".", dr.namespace})


def _exported_to(entry: _Consolidated, client_ns: str) -> bool:
    return not entry.export_to or "*" in entry.export_to or client_ns in entry.export_to


@dataclass(frozen=True)
class ChosenRule:
    entry: _Consolidated | None
    steps: tuple[str, ...]


def select_destination_rule(scenario: Scenario) -> ChosenRule:
    """The DestinationRule the client sidecar applies to the server's host. Sources: SRC_DR_LOOKUP, SRC_HOST,
    SRC_DR_MERGE, SRC_DR_SELECTOR."""
    client, server, root = scenario.client, scenario.server, scenario.root_namespace
    drs = [r for r in scenario.resources if isinstance(r, DestinationRule)]
    steps: list[str] = []
    for dr in drs:
        if _resolved_host(dr) != server.host and _host_key({_resolved_host(dr)}, server.host) is None:
            steps.append(f"DestinationRule {dr.namespace}/{dr.name} host {dr.host!r} resolves to "
                         f"{_resolved_host(dr)}, which is not {server.host}")

    stages = []
    if client.namespace != root:
        stages.append((f"the client's namespace {client.namespace}",
                       [d for d in drs if d.namespace == client.namespace and _visible_locally(d)], None))
    else:
        stages.append((f"the root namespace {root} (the client lives there)",
                       [d for d in drs if d.namespace == root and _private_only(d)], None))
    stages.append((f"the service's namespace {server.namespace}",
                   [d for d in drs if d.namespace == server.namespace and not _private_only(d)], client.namespace))
    stages.append((f"the root namespace {root}",
                   [d for d in drs if d.namespace == root and not _private_only(d)], client.namespace))

    for where, pool, exported_for in stages:
        by_host = _merge(pool)
        key = _host_key(set(by_host), server.host)
        if key is None:
            continue
        entries = by_host[key]
        if exported_for is not None:
            hidden = [e for e in entries if not _exported_to(e, exported_for)]
            for e in hidden:
                steps.append(f"DestinationRule {', '.join(e.names)} in {where} is not exported to "
                             f"{exported_for} (exportTo {sorted(e.export_to)})")
            entries = [e for e in entries if _exported_to(e, exported_for)]
            if not entries:
                continue
        for e in entries:
            if len(e.names) > 1:
                steps.append(f"DestinationRules {', '.join(e.names)} merge; the oldest trafficPolicy is kept")
        chosen = _sidecar_pick(entries, client.namespace, client.labels, steps)
        if chosen is None:
            steps.append(f"no DestinationRule in {where} applies to the client (workloadSelector does not match)")
            return ChosenRule(None, tuple(steps))
        steps.append(f"the client uses DestinationRule {', '.join(chosen.names)} from {where} (host {key})")
        return ChosenRule(chosen, tuple(steps))
    steps.append("no DestinationRule applies to the client for this host")
    return ChosenRule(None, tuple(steps))


def _sidecar_pick(entries: list[_Consolidated], client_ns: str, labels: dict[str, str],
                  steps: list[str]) -> _Consolidated | None:
    """SidecarScope.DestinationRule: a matching workloadSelector rule of the client's namespace wins at once;
    otherwise the *last* rule without a selector."""
    catch_all = None
    for entry in entries:
        selector = entry.first.workload_selector
        if selector is None:
            if catch_all is not None:
                steps.append(f"DestinationRule {', '.join(catch_all.names)} is shadowed by the later "
                             f"{', '.join(entry.names)} (different exportTo, kept apart; the last one applies)")
            catch_all = entry
        elif entry.first.namespace == client_ns and _selects(selector, labels):
            return entry
        else:
            steps.append(f"DestinationRule {', '.join(entry.names)} has a workloadSelector that does not select "
                         "the client")
    return catch_all


# ---------------------------------------------------------------------------------------------------------
# 3. The client: what goes on the wire
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Origination:
    sends: str  # "naked" | "plaintext" | "istio-mutual" | "simple" | "mutual"
    rule: str | None  # set when the client decides the outcome on its own
    steps: tuple[str, ...]
    # Why the client would refuse the server sidecar's certificate. It only comes to that when a server chain
    # accepts the ClientHello: STRICT for any TLS, PERMISSIVE only for Istio's ALPN; otherwise the server
    # refuses at filter chain match, before it sends a certificate.
    rejects_server_cert: str | None = None
    # ISTIO_MUTUAL with a DestinationRule sni that is not of Istio's outbound_ form: Istio's ALPN goes out
    # without Istio's SNI, so the wire is not recognisable as Istio mTLS.
    foreign_sni: bool = False


def client_origination(scenario: Scenario, policy: ServerPolicy, chosen: ChosenRule) -> Origination:
    """Sources: SRC_DR_PORT, SRC_AUTO_MTLS, SRC_EP_MTLS, SRC_UPSTREAM_TLS, SRC_CREDENTIAL."""
    client, server = scenario.client, scenario.server
    if not client.sidecar:
        has_dr = any(isinstance(r, DestinationRule) for r in scenario.resources)
        note = " (a DestinationRule has no effect without a client sidecar)" if has_dr else ""
        return Origination("naked", None, (f"the client has no sidecar and sends plaintext{note}",))
    steps: list[str] = []
    entry = chosen.entry
    cluster_tls = entry.tls if entry else None
    endpoint_mode = _tls_mode(cluster_tls) if cluster_tls else None
    if entry and server.service_port in entry.port_tls:
        # Port-level settings replace the top level wholesale for the cluster (no inheritance) ...
        cluster_tls = entry.port_tls[server.service_port]
        steps.append(f"portLevelSettings[{server.service_port}] replaces the top-level policy for the Service port"
                     + ("" if cluster_tls else " and sets no tls, so the cluster falls back to auto mTLS"))
        # ... but the endpoint check keeps the top-level tls mode when the port sets none (mtls_checker.go).
        if cluster_tls is not None:
            endpoint_mode = _tls_mode(cluster_tls)
    for port in (entry.port_tls if entry else {}):
        if port != server.service_port:
            note = " (the target port: portLevelSettings are keyed by the Service port)" \
                if port == server.target_port else ""
            steps.append(f"portLevelSettings[{port}] does not apply to Service port {server.service_port}{note}")

    if cluster_tls is None:
        if server.headless:
            return _auto_mtls_headless(scenario, policy, steps)
        return _auto_mtls(scenario, policy, endpoint_mode, steps)
    mode = _tls_mode(cluster_tls)
    if mode == "DISABLE":
        return Origination("plaintext", None, (*steps, "the DestinationRule sets tls DISABLE: plaintext"))
    if mode == "ISTIO_MUTUAL":
        return _istio_mutual(cluster_tls, server.spiffe_id, steps)
    sends = mode.lower()
    if cluster_tls.credential_name and not entry.first.workload_selector \
            and not cluster_tls.credential_name.startswith("configmap://"):
        return Origination("plaintext", None, (
            *steps, (f"{mode} with credentialName but no workloadSelector: istiod builds no TLS context for a "
            "sidecar (buildUpstreamClusterTLSContext), so the sidecar sends plaintext")))
    steps.append(f"the DestinationRule sets {mode}: TLS without Istio's ALPN, SNI "
                 f"{cluster_tls.sni or 'from the Host header (auto_sni)'}")
    missing = _missing_cert_material(cluster_tls)
    if missing:
        return Origination(sends, "client-cert-unavailable-503", (*steps, missing))
    if not server.sidecar:
        return Origination(sends, None, tuple(steps))
    trusted, why = _verifies_server(cluster_tls, scenario)
    return Origination(sends, None, tuple(steps), None if trusted else why)


def _istio_mutual(tls: ClientTLS, spiffe: str, steps: list[str]) -> Origination:
    """A DestinationRule's ISTIO_MUTUAL. Source: SRC_ISTIO_MUTUAL."""
    steps.append("the DestinationRule sets ISTIO_MUTUAL: Istio mTLS to every endpoint, sidecar or not")
    if tls.insecure_skip_verify:
        # The ISTIO_MUTUAL context always validates with the mesh root (SDS ROOTCA) and MatchSubjectAltNames.
        # buildIstioMutualTLS drops the flag in 1.28/1.29; 1.30 keeps it for dynamic-forward-proxy clusters only.
        steps.append("insecureSkipVerify has no effect with ISTIO_MUTUAL: the server certificate is still checked "
                     "against the mesh root CA and the expected identities")
    foreign_sni = bool(tls.sni) and not ISTIO_SNI.match(tls.sni)
    if foreign_sni:
        # The inbound filter chains match transport protocol and ALPN only, never the SNI
        # (filterchain_options.go FilterChainMatchOptions has no server names), so the server still accepts.
        steps.append(f"the DestinationRule's sni {tls.sni!r} replaces Istio's outbound_ SNI, so Istio's ALPN goes "
                     "out without Istio's SNI and the wire does not read as Istio mTLS")
    rejects = None
    if tls.subject_alt_names and spiffe not in tls.subject_alt_names:
        # buildUpstreamTLSSettings: the DR's subjectAltNames replace the service accounts.
        rejects = f"subjectAltNames {list(tls.subject_alt_names)} do not include the server's {spiffe}"
    return Origination("istio-mutual", None, tuple(steps), rejects, foreign_sni)


def _auto_mtls(scenario: Scenario, policy: ServerPolicy, endpoint_mode: str | None,
               steps: list[str]) -> Origination:
    server = scenario.server
    if policy.namespace_mode == "DISABLE":
        # buildUpstreamTLSSettings: serviceMTLSMode DISABLE -> no TLS at all; workload/port policies are unseen.
        return Origination("plaintext", None, (*steps, (
            "auto mTLS: the namespace/mesh-level PeerAuthentication of the service is DISABLE, so the client "
            "sends plaintext (auto mTLS ignores workload and port-level policies)")))
    # The endpoint check can only clear the injector's tlsMode=istio label, never add it (endpoint_builder.go
    # buildEnvoyLbEndpoint), so a sidecar-less endpoint always gets plaintext.
    if not server.sidecar:
        mtls, why = False, "the endpoint has no tlsMode=istio label (no sidecar)"
    elif endpoint_mode is not None:
        mtls = endpoint_mode == "ISTIO_MUTUAL"
        why = f"the DestinationRule's top-level tls mode {endpoint_mode} decides the endpoint's tlsMode label"
    else:
        mtls = policy.mode != "DISABLE"
        why = f"the endpoint has a sidecar and its PeerAuthentication on port {server.target_port} is {policy.mode}"
    sends = "istio-mutual" if mtls else "plaintext"
    return Origination(sends, None, (*steps, (f"auto mTLS: {why}, so the client sends "
                                     f"{'Istio mTLS' if mtls else 'plaintext'}")))


def _auto_mtls_headless(scenario: Scenario, policy: ServerPolicy, steps: list[str]) -> Origination:
    """A headless Service's cluster is ORIGINAL_DST: it has no endpoints to match a transport socket on, so auto
    mTLS puts Istio mTLS on the whole cluster or nothing. Source: SRC_HEADLESS_MTLS."""
    if not scenario.server.sidecar:
        why = "its endpoint has no tlsMode=istio label (no sidecar), so the service's mode is DISABLE"
    elif policy.namespace_mode == "DISABLE":
        why = "the namespace/mesh-level PeerAuthentication is DISABLE"
    else:
        return Origination("istio-mutual", None, (*steps, (
            "auto mTLS on a headless Service (ORIGINAL_DST cluster): every endpoint has a sidecar and the "
            f"namespace/mesh-level mode is {policy.namespace_mode}, so the client sends Istio mTLS to the whole "
            "cluster (workload and port-level policies are not consulted)")))
    return Origination("plaintext", None, (*steps, (f"auto mTLS on a headless Service (ORIGINAL_DST cluster): "
                                                    f"{why}, so the client sends plaintext")))


def _missing_cert_material(tls: ClientTLS) -> str | None:
    """Certificate files or secrets the sidecar does not have: the cluster waits for them and never connects."""
    if tls.credential_name:
        return (f"credentialName {tls.credential_name!r} names a secret meshproof never creates, so the cluster "
                "has no certificates and the sidecar answers 503 without connecting")
    for attr, name in (("client_certificate", "clientCertificate"), ("private_key", "privateKey"),
                       ("ca_certificates", "caCertificates")):
        path = getattr(tls, attr)
        if path and path != MESH_CERT_FILES[name]:
            return (f"{name} {path!r} is not a file the sidecar has (meshproof mounts {MESH_CERT_FILES[name]}), "
                    "so the cluster has no certificates and the sidecar answers 503 without connecting")
    return None


def _verifies_server(tls: ClientTLS, scenario: Scenario) -> tuple[bool, str]:
    """Does the client sidecar accept the server sidecar's mesh certificate (a SPIFFE URI SAN only)?"""
    if tls.insecure_skip_verify:
        return True, "insecureSkipVerify: the server certificate is not checked"
    if not tls.ca_certificates:
        return False, ("no caCertificates: the sidecar trusts the system CA bundle, which does not hold the mesh CA "
                       "(constructUpstreamTLS CaCertificatePath 'system')")
    spiffe = scenario.server.spiffe_id
    if tls.subject_alt_names:
        ok = spiffe in tls.subject_alt_names
        return ok, f"subjectAltNames {list(tls.subject_alt_names)} {'include' if ok else 'do not include'} {spiffe}"
    if tls.sni:
        return True, "sni is set and no subjectAltNames: no SAN check (setAutoSniAndAutoSanValidation)"
    return False, ("no sni and no subjectAltNames: istiod sets auto_san_validation, Envoy checks the Host name "
                   f"against the server certificate's SANs, and a mesh certificate carries only {spiffe}")


# ---------------------------------------------------------------------------------------------------------
# 4. The verdict
# ---------------------------------------------------------------------------------------------------------

# What the oracle predicts, per dimension (None: every valid value); `modelled_protocol` refuses the rest.
ORACLE_HANDLES = {"server.app": APPS, "server.port_name": None, "server.headless": (False, True),
                  "request.to": DESTINATIONS}


def expect(scenario: Scenario) -> Prediction:
    """What Istio does with one connection sleep -> httpbin (the Service's name or ClusterIP and port, or the pod's
    IP and target port) in this scenario."""
    # Scenario files are checked on load; this catches a version set afterwards (--istio-version).
    check_istio_version(scenario.istio_version, scenario.name or "scenario", "istio_version")
    require_supported(scenario, "the oracle", handles=ORACLE_HANDLES)
    if scenario.request.to == "cluster-ip":
        return _by_cluster_ip(scenario)
    protocol = modelled_protocol(scenario)
    policy = server_policy(scenario)
    chosen = select_destination_rule(scenario) if scenario.client.sidecar else ChosenRule(None, ())
    server, to = scenario.server, scenario.request.to
    if server.app == "httpbin" and scenario.client.sidecar:
        path, why = client_listener(protocol, server.app, to, server.headless,
                                    server.service_port == server.target_port)
        if path == "hcm":
            return _expect_http(scenario, policy, *_http_origination(scenario, protocol, policy, chosen, why))
    if server.app == "httpbin" and protocol == "HTTP" and to == "service":
        return _expect_http(scenario, policy, chosen, client_origination(scenario, policy, chosen))
    return _expect_port(scenario, protocol, policy, chosen)


# request.to cluster-ip: the Service's name resolves to its ClusterIP, so a call to the ClusterIP is the call by
# name, except for the Host header of an HTTP request. How each client path sees it, and the source that says so.
BY_CLUSTER_IP = {
    "hcm": (("its Host header <ClusterIP>:{port} is one of the Service's virtual host domains "
             "(generateVirtualHostDomains adds every address of the Service, with and without the port), so the "
             "client sidecar routes it to the Service's cluster as it routes the Service's name"), SRC_VHOST_DOMAINS),
    "sidecar": (("the Service's name resolves to that address, so the client sidecar's listener takes the "
                 "connection as it takes a call by name"), None),
    "no-sidecar": (("the Service's name resolves to that address, so the node sends it to the pod (kube-proxy) as "
                    "it sends a call by name"), None),
}


def _by_cluster_ip(scenario: Scenario) -> Prediction:
    """A call to the Service's ClusterIP and port: the prediction for the Service by name, with why."""
    by_name = expect(replace(scenario, request=Request("service")))
    server = scenario.server
    path = "no-sidecar"
    if scenario.client.sidecar:
        listener, _ = client_listener(modelled_protocol(scenario), server.app, "service", server.headless,
                                      server.service_port == server.target_port)
        path = "hcm" if listener == "hcm" else "sidecar"
    says, source = BY_CLUSTER_IP[path]
    step = f"the client calls the ClusterIP and port {server.service_port}: " + says.format(port=server.service_port)
    return replace(by_name, details=(step, *by_name.details),
                   source=f"{by_name.source}; {source}" if source else by_name.source)


def modelled_protocol(scenario: Scenario) -> str:
    """The Service port's protocol, or NotSupportedYet for a combination the rules do not cover."""
    server = scenario.server
    protocol = server_port_protocol(server)

    def refuse(field_path: str, value: object, why: str) -> NotSupportedYet:
        return NotSupportedYet(scenario.name or "scenario", "scenario", field_path,
                               f"{value!r} is valid but the oracle does not handle it yet: {why}")
    if protocol not in FAMILY:
        raise refuse(*protocol_field(server),
                     f"it means protocol {protocol}; the oracle handles names that mean HTTP, TCP, TLS, HTTPS, "
                     "MySQL, Mongo, Redis or protocol sniffing")
    if server.headless and server.service_port != server.target_port:
        raise refuse("server.headless", True, "a headless Service whose port differs from its targetPort (clients "
                     "connect to podIP:port, where the app does not listen)")
    return protocol


def _http_origination(scenario: Scenario, protocol: str, policy: ServerPolicy, chosen: ChosenRule,
                      why: str) -> tuple[ChosenRule, Origination]:
    """What the client sidecar's HTTP connection manager sends, on an HTTP or sniffed port."""
    if scenario.request.to == "pod-ip":
        # The HTTP listener 0.0.0.0:<port> takes podIP:<port> too; the Host header is the pod IP, which no
        # Service's virtual host names, so the catch-all allow_any route (outboundTrafficPolicy ALLOW_ANY, the
        # default) sends it to PassthroughCluster: no TLS, no DestinationRule.
        return ChosenRule(None, ()), Origination("plaintext", None, (
            (f"{why}; the Host header is the pod IP, which no virtual host names, so the allow_any route sends the "
            "request to PassthroughCluster without TLS (httproute.go buildCatchAllVirtualHost)"),))
    origin = client_origination(scenario, policy, chosen)
    if protocol == "auto" and (origin.sends in ("mutual", "simple") or
                               (origin.sends == "istio-mutual" and policy.mode == "DISABLE")):
        # A sniffed port's server chains differ from an HTTP port's for these: TLS without Istio's HTTP ALPN
        # meets a tcp_proxy chain (getFilterChainMatchOptions, ListenerProtocolAuto), not a refusal.
        field_path, value = protocol_field(scenario.server)
        raise NotSupportedYet(scenario.name or "scenario", "scenario", field_path,
                              f"{value!r} is valid but the oracle does not handle it yet: HTTP "
                              f"that the client sidecar sends as {origin.sends} TLS to a sniffed port under "
                              f"{policy.mode} (the port's tcp_proxy chains take it)")
    if protocol == "auto":
        origin = replace(origin, steps=((f"{why}; the sniffed port's server chains take Istio's HTTP ALPN "
                                        "(istio-http/1.1) or plaintext HTTP as an HTTP port's do"), *origin.steps))
    return chosen, origin


def _expect_http(scenario: Scenario, policy: ServerPolicy, chosen: ChosenRule, origin: Origination) -> Prediction:
    """An HTTP request through the client sidecar's HTTP connection manager (or from a client without one) to
    an HTTP or sniffed port: the truth table OUTCOMES."""
    rule_id = origin.rule or OUTCOMES[(origin.sends, policy.mode)]
    presents_cert = policy.mode == "STRICT" or (policy.mode == "PERMISSIVE" and origin.sends == "istio-mutual")
    if origin.rejects_server_cert and presents_cert:
        # TLS 1.3: the client checks the server's certificate before it sends its own.
        rule_id = "client-rejects-server-cert-503"
        origin = replace(origin, steps=(*origin.steps, origin.rejects_server_cert))
    rule = RULES[rule_id]
    wire = rule.wire or (Wire.MTLS if origin.sends == "istio-mutual" else Wire.APP_TLS)
    if wire == Wire.MTLS and origin.foreign_sni:
        wire = Wire.APP_TLS
    client_tls = "plaintext" if origin.sends == "naked" else origin.sends
    identity = scenario.client.spiffe_id if rule.identity else None
    reason = _reason(origin.steps[-1], scenario, policy, rule.says)
    via_passthrough = scenario.request.to == "pod-ip" and scenario.client.sidecar
    return Prediction(outcome=rule.outcome, wire=wire, peer_identity=identity, reason=reason, rule=rule_id,
                      source=f"{rule.source}; {SRC_ALLOW_ANY}" if via_passthrough else rule.source,
                      client_tls=client_tls, server_mode=policy.mode,
                      istio_version=scenario.istio_version,
                      details=policy.steps + chosen.steps + origin.steps,
                      tls=wire_tls(scenario, wire) if rule.outcome == Outcome.MTLS else None,
                      envoy={**rule.envoy.to_json(), "source": SRC_FLAGS} if rule.envoy else None)


def _expect_port(scenario: Scenario, protocol: str, policy: ServerPolicy, chosen: ChosenRule) -> Prediction:
    """A TCP, server-first or app-TLS app, or a pod-IP destination: the client sidecar's listener, then the
    server sidecar's inbound chains (suites/expectations_ports.py)."""
    client, server = scenario.client, scenario.server
    field_path, value = protocol_field(server)
    said = "appProtocol" if field_path == "server.app_protocol" else "name"
    steps = [f"the Service port's {said} {value!r} means protocol {protocol} (ConvertProtocol)"]
    if client.sidecar:
        path, why = client_listener(protocol, server.app, scenario.request.to, server.headless,
                                    server.service_port == server.target_port)
    else:
        has_dr = any(isinstance(r, DestinationRule) for r in scenario.resources)
        path, why = "passthrough", ("the client has no sidecar and sends the app's bytes as they are"
                                    + (" (a DestinationRule has no effect without a client sidecar)" if has_dr else ""))
    steps.append(why)
    own = outer = APP_ARRIVAL[server.app]
    client_tls, foreign_sni, rule_id = "plaintext", False, None
    if path == "sniffing-waits":
        rule_id = "outbound-sniffing-waits-timeout"
    elif path == "tcp-proxy":
        origin = client_origination(scenario, policy, chosen)
        steps += [*chosen.steps, *origin.steps]
        client_tls, foreign_sni = origin.sends, origin.foreign_sni
        outer = SIDECAR_TLS.get(origin.sends, own)
        if origin.rule == "client-cert-unavailable-503":
            rule_id = "client-cert-unavailable-reset"
    client_said = steps[-1]  # the reason leads with the client's side; the chains are in the details
    if rule_id is None and policy.mode == "no-sidecar":
        rule_id = to_naked_app(outer)
    elif rule_id is None:
        rule_id, chain_steps = inbound(FAMILY[protocol], policy.mode, outer, own)
        steps += chain_steps
        # TLS 1.3: the client checks the server's certificate before it sends its own.
        if path == "tcp-proxy" and origin.rejects_server_cert and \
                rule_id in ("mtls-terminated", "client-cert-required-reset"):
            rule_id = "client-rejects-server-cert-reset"
            steps.append(origin.rejects_server_cert)
            client_said = origin.rejects_server_cert
    rule = PORT_RULES[rule_id]
    wire = rule.wire or ARRIVALS[outer].wire
    if rule_id == "sidecar-tls-reaches-app-reset":
        # The app's answer to the ClientHello is on the wire too: a hop with cleartext either way is plaintext.
        if server.app not in ANSWER_TO_CLIENT_HELLO:
            raise NotSupportedYet(scenario.name or "scenario", "scenario", "server.app",
                                  f"{server.app!r} is valid but the oracle does not predict it here: the sidecar's "
                                  "TLS reaches the line echo, which answers only if the ClientHello happens to hold "
                                  "a newline (reset or timeout by chance)")
        wire = ANSWER_TO_CLIENT_HELLO[server.app] or wire
    if wire == Wire.MTLS and foreign_sni:
        wire = Wire.APP_TLS
    reason = _reason(client_said, scenario, policy, rule.says)
    return Prediction(outcome=rule.outcome, wire=wire,
                      peer_identity=client.spiffe_id if rule.identity else None, reason=reason, rule=rule_id,
                      source=rule.source, client_tls=client_tls, server_mode=policy.mode,
                      istio_version=scenario.istio_version, details=policy.steps + tuple(steps),
                      tls=wire_tls(scenario, wire, tcp=True) if rule.outcome == Outcome.MTLS else None)


def _reason(last_step: str, scenario: Scenario, policy: ServerPolicy, says: str) -> str:
    """One sentence: the client's last decision, the server's mode, the rule."""
    server_text = "the server has no sidecar" if policy.mode == "no-sidecar" else \
        f"the server's target port {scenario.server.target_port} is {policy.mode}"
    return f"{last_step[0].upper()}{last_step[1:]}; {server_text}; {says}."


def wire_tls(scenario: Scenario, wire: Wire, tcp: bool = False) -> dict:
    """What the wire shows of a handshake between two sidecars that completes (outcome mtls).

    Both sides offer TLS 1.2 to 1.3, so they settle on TLS 1.3, where the certificates travel encrypted: a
    certificate seen in clear means a downgrade (SRC_TLS_VERSIONS). Istio mTLS also carries the in-mesh ALPN
    `istio` and the cluster name as SNI (SRC_MESH_ALPN, SRC_ISTIO_MUTUAL); app TLS (DestinationRule MUTUAL, or
    ISTIO_MUTUAL with its own sni) is judged on version and certificates only.
    A tcp_proxy cluster (`tcp`) offers istio-peer-exchange before istio (SRC_TCP_ALPN): the wire shows which
    kind of cluster sent it.
    """
    server = scenario.server
    istio = wire == Wire.MTLS
    return {"version": "TLSv1.3", "certificates_visible": False,
            "alpn": ("istio-peer-exchange" if tcp else "istio") if istio else None,
            "sni": f"outbound_.{server.service_port}_._.{server.host}" if istio else None,
            "source": f"{SRC_TLS_VERSIONS}; {SRC_TCP_ALPN if tcp else SRC_MESH_ALPN}" if istio else SRC_TLS_VERSIONS}


# ---------------------------------------------------------------------------------------------------------
# 5. Adversarial TLS clients: a workload without a sidecar speaks its own TLS to the server pod's port
# ---------------------------------------------------------------------------------------------------------

TRUST_DOMAIN = "cluster.local"
SRC_TRUST_DOMAIN = (f"{ISTIO} pilot/pkg/networking/plugin/authn/util.go TrustDomainsForValidation + "
                    "pilot/pkg/security/model/authentication.go ApplyToCommonTLSContext (URI SAN prefix "
                    "spiffe://<trust domain>/ for the mesh's trust domain and its aliases)")
SRC_CLIENT_CHAIN = (f"{ISTIO} pilot/pkg/security/model/authentication.go ApplyToCommonTLSContext (client "
                    "certificates validated against the mesh root, SDS secret ROOTCA)")
SRC_MIN_TLS = (f"{ISTIO} pilot/pkg/security/authn/utils/utils.go BuildInboundTLS + GetMinTLSVersion "
               "(TlsMinimumProtocolVersion: meshMTLS.minProtocolVersion, default TLSv1_2)")
# allIstioMtlsALPNs: what PERMISSIVE's TLS chain on an HTTP port matches (pilot/pkg/networking/core/listener.go).
PERMISSIVE_TLS_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")
OLDER_THAN_TLS12 = ("SSLv3", "TLSv1", "TLSv1.1")


@dataclass(frozen=True)
class HandshakeRule:
    outcome: str  # "accepted" | "alert" (the server ends the handshake with a TLS alert) | "closed" (no TLS answer)
    refusal: str | None  # what refused, as the server's own counters name it; None when accepted
    says: str
    source: str


HANDSHAKE_RULES: dict[str, HandshakeRule] = {
    "disable-has-no-tls-chain": HandshakeRule(
        "closed", "no-filter-chain",
        "a DISABLE port has only plaintext filter chains: the ClientHello matches none and the connection is "
        "closed without a TLS answer", f"{SRC_FCM} inboundPlainTextHTTPFilterChainMatchOptions"),
    "permissive-needs-istio-alpn": HandshakeRule(
        "closed", "no-filter-chain",
        "PERMISSIVE on an HTTP port matches TLS only with one of Istio's ALPNs: without one the ClientHello "
        "matches no chain and the connection is closed without a TLS answer",
        f"{SRC_FCM} inboundPermissiveHTTPFilterChainMatchWithMxcOptions (allIstioMtlsALPNs)"),
    "below-minimum-tls-version": HandshakeRule(
        "alert", "handshake-failed",
        "the server's TLS context starts at TLS 1.2: an older ClientHello gets a protocol_version alert",
        SRC_MIN_TLS),
    "client-certificate-required": HandshakeRule(
        "alert", "no-client-certificate",
        "the mTLS chain requires a client certificate: the server ends the handshake with an alert",
        SRC_REQUIRE_CLIENT_CERT),
    "untrusted-client-certificate": HandshakeRule(
        "alert", "certificate-rejected",
        "the client certificate does not chain to the mesh root: the server ends the handshake with an alert",
        SRC_CLIENT_CHAIN),
    "expired-client-certificate": HandshakeRule(
        "alert", "certificate-rejected",
        "the client certificate has expired: the server ends the handshake with an alert (Istio never sets "
        "allow_expired_certificate)", f"{SRC_CLIENT_CHAIN}; envoy default_validator.cc doVerifyCertChain"),
    "foreign-trust-domain": HandshakeRule(
        "alert", "trust-domain",
        "the client certificate's SPIFFE ID is of another trust domain: the SAN check refuses it, mesh CA or not",
        SRC_TRUST_DOMAIN),
    "mesh-identity-accepted": HandshakeRule(
        "accepted", None,
        "a mesh certificate of the trust domain is all mTLS asks for, whichever workload it names: the request "
        "reaches the app with that identity in X-Forwarded-Client-Cert (authorization is AuthorizationPolicy's "
        "job, not PeerAuthentication's)", f"{SRC_TRUST_DOMAIN}; {SRC_MIN_TLS}"),
}


@dataclass(frozen=True)
class HandshakePrediction:
    outcome: str
    refusal: str | None
    peer_identity: str | None  # the URI the app sees when accepted
    tls_version: str | None  # what the handshake settles on when accepted
    rule: str
    reason: str
    source: str
    server_mode: str

    def to_json(self) -> dict:
        return asdict(self)


def expect_handshake(scenario: Scenario, attempt) -> HandshakePrediction:
    """What the server sidecar does with a sidecar-less client's own TLS straight to its target port.

    `attempt` has certificate (None, "mesh", "self-signed", "other-ca"), spiffe_id, expired, alpn and versions
    (offered, oldest first), as cluster.backend.TlsAttempt. The server must have a sidecar and an HTTP port:
    a TCP or sniffed port's chains pass TLS they do not terminate through to the app."""
    if server_port_protocol(scenario.server) != "HTTP":
        field_path, value = protocol_field(scenario.server)
        raise NotSupportedYet(scenario.name or "scenario", "scenario", field_path,
                              f"{value!r} is valid but the oracle's handshake rules cover HTTP ports only")
    mode = server_policy(scenario).mode
    if mode == "no-sidecar":
        raise ValueError("expect_handshake: the server has no sidecar, so no PeerAuthentication guards it")
    trust_domain = (attempt.spiffe_id or "").removeprefix("spiffe://").partition("/")[0]
    if mode == "DISABLE":
        rule_id = "disable-has-no-tls-chain"
    elif mode == "PERMISSIVE" and not set(attempt.alpn) & set(PERMISSIVE_TLS_ALPNS):
        rule_id = "permissive-needs-istio-alpn"
    elif attempt.versions[-1] in OLDER_THAN_TLS12:
        rule_id = "below-minimum-tls-version"
    elif attempt.certificate is None:
        rule_id = "client-certificate-required"
    elif attempt.certificate != "mesh":
        rule_id = "untrusted-client-certificate"
    elif attempt.expired:
        rule_id = "expired-client-certificate"
    elif trust_domain != TRUST_DOMAIN:
        rule_id = "foreign-trust-domain"
    else:
        rule_id = "mesh-identity-accepted"
    rule = HANDSHAKE_RULES[rule_id]
    accepted = rule.outcome == "accepted"
    return HandshakePrediction(
        outcome=rule.outcome, refusal=rule.refusal, peer_identity=attempt.spiffe_id if accepted else None,
        tls_version=attempt.versions[-1] if accepted else None, rule=rule_id,
        reason=f"The server's target port {scenario.server.target_port} is {mode}; {rule.says}.",
        source=rule.source, server_mode=mode)
