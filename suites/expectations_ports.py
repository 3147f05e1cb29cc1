"""The oracle beyond one HTTP request to a ClusterIP Service's port: what the client sidecar's listener does with
a TCP echo, a server-first banner or the app's own TLS, and which inbound filter chain of the server sidecar
takes what then arrives. suites/expectations.py asks these two questions and builds the prediction.

The inbound side is Istio's filter chain table transcribed (`INBOUND_CHAINS`, from getFilterChainMatchOptions)
and Envoy's filter chain match run over it (`inbound`): the chains decide which listener filters inspect the
port, the inspectors decide what of the first bytes is seen, and the chain that matches decides what happens.

Sources are istio/istio at tags 1.28.10, 1.29.6 and 1.30.3: the functions named here are the same in the three
for everything modelled (the diffs between the tags touch dynamic-forward-proxy, wasm and gateway code only).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshproof.vocabulary import Outcome, Wire

ISTIO = "istio/istio"
SRC_CHAINS = f"{ISTIO} pilot/pkg/networking/core/filterchain_options.go getFilterChainMatchOptions"
SRC_ALPNS = (f"{ISTIO} pilot/pkg/networking/core/listener.go mtlsHTTPALPNs, allIstioMtlsALPNs, mtlsTCPWithMxcALPNs, "
             "plaintextHTTPALPNs")
SRC_INSPECTORS = (f"{ISTIO} pilot/pkg/networking/core/listener_inbound.go populateListenerFilters (a TLS inspector "
                  "on a port with a tls chain, an HTTP inspector on one whose chain names http/1.1 or h2c)")
SRC_NO_TIMEOUT = (f"{ISTIO} pilot/pkg/networking/core/listener_inbound.go buildInboundListener "
                  "(ListenerFiltersTimeout = meshConfig.protocolDetectionTimeout) + pkg/config/mesh/mesh.go "
                  "DefaultMeshConfig (protocolDetectionTimeout 0s); envoy listener.proto listener_filters_timeout "
                  "('Specify 0 to disable the timeout')")
SRC_OUTBOUND_SNIFFING = (f"{ISTIO} pilot/pkg/networking/core/listener.go buildListenerFromEntry (HTTP inspector, "
                         "ListenerFiltersTimeout = meshConfig.protocolDetectionTimeout, default 0s: none) + "
                         "buildSidecarOutboundListener (auto ports: TCP and HTTP chains; HTTP ports on 0.0.0.0: the "
                         "HTTP chain matches http/1.1 and h2c, the rest falls to the PassthroughFilterChain)")
SRC_OUTBOUND_TCP = (f"{ISTIO} pilot/pkg/networking/core/tls.go buildSidecarOutboundTCPFilterChainOpts / "
                    "buildSidecarOutboundTLSFilterChainOpts (tcp_proxy to outbound|port||host; a Service with a VIP "
                    "needs no SNI match, so no TLS inspector)")
SRC_PASSTHROUGH = (f"{ISTIO} pilot/pkg/networking/core/listener_builder.go buildVirtualOutboundListener (no "
                   "listener filters) + cluster_builder.go buildDefaultPassthroughCluster (ORIGINAL_DST, no TLS)")
SRC_TCP_ALPN = (f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go buildUpstreamClusterTLSContext (ISTIO_MUTUAL on "
                "a non-HTTP/2 cluster: util.ALPNInMeshWithMxc istio-peer-exchange,istio)")
SRC_CLIENT_CERT = f"{ISTIO} pilot/pkg/security/authn/utils/utils.go BuildInboundTLS (RequireClientCertificate)"

# The protocols whose listeners are modelled, and the listener protocol each gives (istio/istio
# pilot/pkg/networking/networking.go ModelProtocolToListenerProtocol): TLS and HTTPS get TCP filter chains, and
# so do MySQL, Mongo and Redis, whose protocol filters Istio adds only when asked (pilot/pkg/features/xds.go
# PILOT_ENABLE_MYSQL_FILTER / PILOT_ENABLE_REDIS_FILTER, default false): a plain tcp_proxy, as for tcp.
FAMILY = {"HTTP": "HTTP", "TCP": "TCP", "TLS": "TCP", "HTTPS": "TCP", "MySQL": "TCP", "Mongo": "TCP", "Redis": "TCP",
          "auto": "AUTO"}

_ISTIO_HTTP = ("istio-http/1.0", "istio-http/1.1", "istio-h2")  # mtlsHTTPALPNs
_ALL_ISTIO = ("istio", "istio-peer-exchange", *_ISTIO_HTTP)  # allIstioMtlsALPNs
_ISTIO_TCP = ("istio-peer-exchange", "istio")  # mtlsTCPWithMxcALPNs
_PLAIN_HTTP = ("http/1.1", "h2c")  # plaintextHTTPALPNs without PILOT_HTTP10


@dataclass(frozen=True)
class Chain:
    """One inbound filter chain of the target port: what it matches and what it does."""

    transport: str  # "tls" | "raw_buffer"
    alpns: tuple[str, ...]  # application protocols it matches; () matches any
    terminates: bool  # the sidecar's mTLS context (client certificate required) ends the TLS
    filters: str  # "http": an HTTP connection manager | "tcp": tcp_proxy to the app


# getFilterChainMatchOptions, per listener protocol and PeerAuthentication mode, in Istio's order.
INBOUND_CHAINS: dict[tuple[str, str], tuple[Chain, ...]] = {
    ("HTTP", "STRICT"): (Chain("tls", (), True, "http"),),  # inboundStrictHTTPFilterChainMatchOptions
    ("HTTP", "PERMISSIVE"): (Chain("tls", _ALL_ISTIO, True, "http"),  # inboundPermissiveHTTPFilterChainMatchWithMxc
                             Chain("raw_buffer", (), False, "http")),
    ("HTTP", "DISABLE"): (Chain("raw_buffer", (), False, "http"),),  # inboundPlainTextHTTPFilterChainMatchOptions
    ("AUTO", "STRICT"): (Chain("tls", _ISTIO_HTTP, True, "http"),  # inboundStrictFilterChainMatchOptions
                         Chain("tls", (), True, "tcp")),
    ("AUTO", "PERMISSIVE"): (Chain("tls", _ISTIO_HTTP, True, "http"),  # inboundPermissiveFilterChainMatchWithMxc
                             Chain("raw_buffer", _PLAIN_HTTP, False, "http"),
                             Chain("tls", _ISTIO_TCP, True, "tcp"),
                             Chain("raw_buffer", (), False, "tcp"),
                             Chain("tls", (), False, "tcp")),  # one-way TLS of the app: passed through
    ("AUTO", "DISABLE"): (Chain("raw_buffer", _PLAIN_HTTP, False, "http"),  # inboundPlainTextFilterChainMatchOptions
                          Chain("raw_buffer", (), False, "tcp")),
    ("TCP", "STRICT"): (Chain("tls", (), True, "tcp"),),  # inboundStrictTCPFilterChainMatchOptions
    ("TCP", "PERMISSIVE"): (Chain("tls", _ALL_ISTIO, True, "tcp"),  # inboundPermissiveTCPFilterChainMatchWithMxc
                            Chain("tls", (), False, "tcp"),  # "Plain TLS": the app's own TLS passes through
                            Chain("raw_buffer", (), False, "tcp")),
    ("TCP", "DISABLE"): (Chain("raw_buffer", (), False, "tcp"),),  # inboundPlainTextTCPFilterChainMatchOptions
}


@dataclass(frozen=True)
class Arrival:
    """What reaches the server pod's target port first."""

    says: str
    tls: bool  # a ClientHello comes first
    alpn: tuple[str, ...]  # what that ClientHello offers
    client_cert: bool  # the client sends a mesh certificate when the server asks for one
    speaks_first: bool  # False: the client waits for the server's greeting before it sends anything
    http: bool  # the first bytes are an HTTP/1.1 request
    wire: Wire  # what the client's side puts on the pod-to-pod link


ARRIVALS: dict[str, Arrival] = {
    "istio-mtls": Arrival("Istio mTLS from the client sidecar's tcp_proxy (ALPN istio-peer-exchange, istio)", True,
                          _ISTIO_TCP, True, True, False, Wire.MTLS),
    "mesh-cert-tls": Arrival("the client sidecar's DestinationRule MUTUAL TLS (mesh certificate, no ALPN)", True, (),
                             True, True, False, Wire.APP_TLS),
    "tls-no-cert": Arrival("the client sidecar's DestinationRule SIMPLE TLS (no client certificate, no ALPN)", True,
                           (), False, True, False, Wire.APP_TLS),
    "app-tls": Arrival("the app's own ClientHello in cleartext TCP (curl -k: ALPN h2, http/1.1, no client "
                       "certificate)", True, ("h2", "http/1.1"), False, True, False, Wire.APP_TLS),
    "client-first": Arrival("the canary line in cleartext (not the start of an HTTP request)", False, (), False, True,
                            False, Wire.PLAINTEXT),
    "silent": Arrival("nothing: the banner client waits for the server's greeting", False, (), False, False, False,
                      Wire.NONE),
    "http-request": Arrival("a cleartext HTTP/1.1 request", False, (), False, True, True, Wire.PLAINTEXT),
}
# What each app's probe client sends on its own (the probe clients).
APP_ARRIVAL = {"httpbin": "http-request", "tcp-echo": "client-first", "banner": "silent", "https": "app-tls"}
# What each app answers a client sidecar's ClientHello that reaches it unterminated, as the wire shows the hop:
# httpbin's 400 and banner's greeting cross in cleartext; the https app answers in TLS (the ClientHello's wire
# stands). The line echo is missing: it answers only a ClientHello that happens to hold a newline (reset or a
# wait past the deadline by chance), so there is no prediction for it.
ANSWER_TO_CLIENT_HELLO: dict[str, Wire | None] = {"httpbin": Wire.PLAINTEXT, "banner": Wire.PLAINTEXT, "https": None}
SIDECAR_TLS = {"istio-mutual": "istio-mtls", "mutual": "mesh-cert-tls", "simple": "tls-no-cert"}


@dataclass(frozen=True)
class PortRule:
    outcome: Outcome
    wire: Wire | None  # None: what the client sent (`Arrival.wire`)
    identity: bool  # the server sidecar accepted the client's mesh certificate
    says: str
    source: str


PORT_RULES: dict[str, PortRule] = {
    # --- the client sidecar decides
    "outbound-sniffing-waits-timeout": PortRule(
        Outcome.TIMEOUT, Wire.NONE, False,
        "the client sidecar's listener sniffs the protocol with an HTTP inspector and no timeout "
        "(protocolDetectionTimeout 0s), and a server-first client sends nothing, so nothing happens",
        f"{SRC_OUTBOUND_SNIFFING}; {SRC_NO_TIMEOUT}"),
    "client-cert-unavailable-reset": PortRule(
        Outcome.RESET, Wire.NONE, False,
        "the cluster's TLS context has no certificate, so tcp_proxy cannot connect and closes the client's "
        "connection", f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go buildUpstreamClusterTLSContext"),
    "client-rejects-server-cert-reset": PortRule(
        Outcome.RESET, None, False,
        "the client sidecar cannot verify the server sidecar's certificate, so it aborts the handshake and "
        "tcp_proxy closes the client's connection",
        f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go constructUpstreamTLS + setAutoSniAndAutoSanValidation"),
    # --- the server sidecar's inbound chains decide
    "inbound-inspector-waits-timeout": PortRule(
        Outcome.TIMEOUT, Wire.NONE, False,
        "a listener filter inspects this port and waits for the client's first bytes without a timeout "
        "(protocolDetectionTimeout 0s), while a server-first client waits for the greeting: nothing happens",
        f"{SRC_INSPECTORS}; {SRC_NO_TIMEOUT}"),
    "hcm-waits-timeout": PortRule(
        Outcome.TIMEOUT, Wire.NONE, False,
        "the port's only chain is an HTTP connection manager, which opens no connection to the app before a "
        "request, while a server-first client waits for the greeting: nothing happens",
        f"{SRC_CHAINS} inboundPlainTextHTTPFilterChainMatchOptions"),
    "no-filter-chain-reset": PortRule(
        Outcome.RESET, None, False,
        "no filter chain of the port matches what arrived, so the server sidecar closes the connection",
        f"{SRC_CHAINS}; {SRC_ALPNS}"),
    "client-cert-required-reset": PortRule(
        Outcome.RESET, None, False,
        "the matching chain terminates TLS with the sidecar's mTLS context, which requires a client certificate, "
        "and none comes: the server sidecar ends the handshake", f"{SRC_CHAINS}; {SRC_CLIENT_CERT}"),
    "not-http-to-hcm-reset": PortRule(
        Outcome.RESET, None, False,
        "the matching chain is an HTTP connection manager and what arrived is not HTTP: a codec error closes "
        "the connection", f"{SRC_CHAINS} (HTTP chains only, the port is declared HTTP)"),
    "hcm-plaintext-accepted": PortRule(
        Outcome.PLAINTEXT, Wire.PLAINTEXT, False,
        "the port's plaintext HTTP chain takes the request and httpbin answers it in cleartext",
        f"{SRC_CHAINS} inboundPermissiveHTTPFilterChainMatchWithMxcOptions / "
        "inboundPlainTextHTTPFilterChainMatchOptions (raw_buffer)"),
    "tcp-plaintext-accepted": PortRule(
        Outcome.PLAINTEXT, Wire.PLAINTEXT, False,
        "a raw_buffer tcp_proxy chain passes the bytes to the app, which answers in cleartext",
        f"{SRC_CHAINS} (raw_buffer TCP chain)"),
    "app-tls-passed-through": PortRule(
        Outcome.APP_TLS, Wire.APP_TLS, False,
        "a tcp_proxy chain that does not terminate TLS passes the app's own TLS through to the app",
        f"{SRC_CHAINS} (PERMISSIVE: 'Plain TLS' / one-way TLS chain; DISABLE: raw_buffer, no TLS inspector)"),
    "mtls-terminated": PortRule(
        Outcome.MTLS, None, True,
        "the matching chain terminates the TLS with the client's mesh certificate and tcp_proxy passes the bytes "
        "to the app: the server sidecar's account names the client (TCP carries no XFCC)",
        f"{SRC_CHAINS}; {SRC_ALPNS}; {SRC_TCP_ALPN}"),
    "sidecar-tls-reaches-app-reset": PortRule(
        Outcome.RESET, None, False,
        "the client sidecar's TLS reaches the app, which does not speak it (or presents a certificate the "
        "sidecar does not trust): the handshake fails and the connection is closed",
        f"{SRC_CHAINS} (no chain that terminates it); {ISTIO} pilot/pkg/networking/core/cluster_tls.go "
        "applyUpstreamTLSSettings"),
    # --- no server sidecar: the app itself
    "plaintext-to-naked-app": PortRule(
        Outcome.PLAINTEXT, Wire.PLAINTEXT, False,
        "no sidecar intercepts on the server, so the app answers in cleartext",
        f"{ISTIO} tests/integration/security/reachability_test.go (naked workloads get plaintext)"),
    "app-tls-to-naked-app": PortRule(
        Outcome.APP_TLS, Wire.APP_TLS, False,
        "no sidecar intercepts on the server, so the app's own TLS reaches the app",
        f"{ISTIO} pilot/pkg/networking/core/cluster_tls.go defaultTransportSocketMatch (no TLS added)"),
}


def inspectors(chains: tuple[Chain, ...]) -> tuple[bool, bool]:
    """(TLS inspector, HTTP inspector) on the port, as populateListenerFilters derives them from its chains."""
    return (any(c.transport == "tls" for c in chains),
            any(set(c.alpns) & set(_PLAIN_HTTP) for c in chains))


def inbound(family: str, mode: str, outer: str, inner: str) -> tuple[str, tuple[str, ...]]:
    """The server sidecar's inbound listener for the target port: the rule that decides, and why.

    `outer` is what arrives (an ARRIVALS key), `inner` what the client app sends inside a TLS the sidecar
    terminates. Envoy matches transport protocol, then application protocols (a chain naming one of the
    connection's protocols beats a chain naming none)."""
    chains = INBOUND_CHAINS[(family, mode)]
    tls_inspector, http_inspector = inspectors(chains)
    arrival = ARRIVALS[outer]
    kinds = ", ".join(f"{c.transport}{'+' + '/'.join(c.alpns) if c.alpns else ''}->"
                      f"{'terminate+' if c.terminates else ''}{c.filters}" for c in chains)
    steps = [f"the server's {family} port under {mode} has the filter chains [{kinds}]"]
    if not arrival.speaks_first and (tls_inspector or http_inspector):
        return "inbound-inspector-waits-timeout", tuple(steps)
    transport = "tls" if arrival.tls and tls_inspector else "raw_buffer"
    protocols = set(arrival.alpn) if transport == "tls" else ({"http/1.1"} if arrival.http and http_inspector
                                                               else set())
    matching = [c for c in chains if c.transport == transport and (not c.alpns or set(c.alpns) & protocols)]
    matching.sort(key=lambda c: not c.alpns)
    steps.append(f"{arrival.says} is seen as {transport}"
                 + (f" with application protocols {sorted(protocols)}" if protocols else ""))
    if not matching:
        return "no-filter-chain-reset", tuple(steps)
    chain = matching[0]
    if chain.terminates:
        if not arrival.client_cert:
            return "client-cert-required-reset", tuple(steps)
        if chain.filters == "http":  # an HTTP connection manager behind Istio mTLS: OUTCOMES decides that
            raise ValueError(f"{outer} on a terminating HTTP chain is the HTTP truth table's, not these rules'")
        steps.append(f"the chain terminates the TLS; inside it comes {ARRIVALS[inner].says}")
        return "mtls-terminated", tuple(steps)
    if chain.filters == "http":
        if arrival.http:
            return "hcm-plaintext-accepted", tuple(steps)
        return ("not-http-to-hcm-reset" if arrival.speaks_first else "hcm-waits-timeout"), tuple(steps)
    if outer in SIDECAR_TLS.values():
        return "sidecar-tls-reaches-app-reset", tuple(steps)
    return ("app-tls-passed-through" if arrival.tls else "tcp-plaintext-accepted"), tuple(steps)


def to_naked_app(outer: str) -> str:
    """No server sidecar: what arrives goes straight to the app."""
    if outer in SIDECAR_TLS.values():
        return "sidecar-tls-reaches-app-reset"
    return "app-tls-to-naked-app" if ARRIVALS[outer].tls else "plaintext-to-naked-app"


def client_listener(protocol: str, app: str, to: str, headless: bool, same_port: bool) -> tuple[str, str]:
    """Which of the client sidecar's outbound listeners takes the connection, and what it does with it:
    "hcm" (the HTTP rules of suites/expectations.py), "tcp-proxy" (to outbound|port||host, with that cluster's
    TLS), "passthrough" (PassthroughCluster: the app's bytes as they are) or "sniffing-waits".

    A Service's listeners: an HTTP port on 0.0.0.0:<port>; a TCP/TLS or sniffed port on <VIP>:<port>, or on
    <pod IP>:<port> per endpoint for a headless Service (listener.go buildSidecarOutboundListeners). A pod-IP
    request to the target port meets one of them only when the port numbers are equal."""
    family = FAMILY[protocol]
    if to == "pod-ip" and not (same_port and (headless or family == "HTTP")):
        return "passthrough", ("no outbound listener of the client holds the pod's IP and target port, so the "
                               "virtual outbound listener's PassthroughCluster (ORIGINAL_DST, no TLS, no "
                               "DestinationRule) forwards the app's bytes as they are")
    if family == "TCP":
        return "tcp-proxy", (f"the port is {protocol}: the client sidecar's listener for it is tcp_proxy to the "
                             "Service's cluster, without listener filters")
    if app == "banner":
        return "sniffing-waits", (f"the port is {protocol}: the client sidecar's listener waits for the first bytes "
                                  "to tell HTTP from the rest")
    if app == "httpbin":
        return "hcm", "the HTTP inspector reads an HTTP/1.1 request, so the HTTP connection manager takes it"
    if family == "AUTO":
        return "tcp-proxy", ("protocol sniffing: the HTTP inspector finds no HTTP, so the listener's TCP chain "
                             "(tcp_proxy to the Service's cluster) takes the connection")
    return "passthrough", ("the port is HTTP: the HTTP inspector finds no HTTP, so the listener's "
                           "PassthroughFilterChain sends the app's bytes as they are through PassthroughCluster "
                           "(no TLS, no DestinationRule)")
