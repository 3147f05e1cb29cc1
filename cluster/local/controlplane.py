"""The reference mesh's control plane: PeerAuthentication / DestinationRule records -> per-sidecar LDS/CDS files.

It reads Istio's semantics from Istio's own code (istio/istio, pilot/pkg/...), independently of the oracle in
suites/ (never imported here), so that the suites' comparison of the two means something:
- PeerAuthentication: security/authn/policy_applier.go ComposePeerAuthentication (mesh = root namespace
  without selector, namespace, workload selector outside the root namespace; oldest wins; UNSET inherits;
  portLevelMtls keyed by the workload's target port, UNSET there inherits the workload mode).
- Inbound chains for an HTTP port: networking/core/filterchain_options.go (STRICT: TLS only, client cert
  required; PERMISSIVE: TLS with an Istio ALPN -> mTLS, raw_buffer -> plaintext; DISABLE: raw_buffer only,
  so TLS meets no chain and is closed);
  XFCC as listener_inbound.go / util.GetProxyHeaders set it (APPEND_FORWARD, subject, URI, DNS).
- DestinationRule choice: model/push_context.go setDestinationRules and destinationRule (client namespace,
  then the service namespace's exported rules, then the root namespace's; exportTo), destination_rule.go
  mergeDestinationRule (same host: merged, the oldest trafficPolicy wins) and sidecar.go DestinationRule
  (a matching workload selector, else the last rule without one).
- Outbound routes: networking/core/route/retry/retry.go DefaultPolicy (2 retries on connect failures).
- Client TLS: networking/core/cluster_tls.go (ISTIO_MUTUAL SNI outbound_.<port>_._.<fqdn>; SIMPLE/MUTUAL
  auto SNI and auto SAN validation, no ALPN for HTTP/1.1; credentialName: no TLS, or a secret that never
  arrives; auto mTLS only when no rule sets TLS and the service namespace's mode is not DISABLE), the
  outbound istio.alpn filter (xds/filters/filters.go Alpn: ALPN istio-http/1.1,istio on Istio mTLS clusters)
  and xds/endpoints/mtls_checker.go (an endpoint gets tlsMode=istio only with a sidecar and a non-DISABLE
  port mode).
- Service ports: pkg/config/kube/conversion.go ConvertProtocol (the port name's prefix, well-known TCP ports) and
  networking/networking.go ModelProtocolToListenerProtocol (HTTP, TCP, or auto = protocol detection).
- Inbound chains per protocol and mode: filterchain_options.go getFilterChainMatchOptions; listener filters and
  their timeout: listener_inbound.go populateListenerFilters / buildInboundListener.
- Outbound listeners: listener.go buildSidecarOutboundListener / buildListenerFromEntry (HTTP on 0.0.0.0:port
  with a TCP fallthrough, TCP and auto on the VIP:port, headless TCP and auto on each endpoint's IP:port; the
  virtualOutbound listener hands a connection to the listener of its original destination, listener_builder.go),
  tls.go buildSidecarOutbound{TLS,TCP}FilterChainOpts; clusters: cluster.go convertResolution (headless:
  ORIGINAL_DST) and cluster_tls.go (ALPN istio-peer-exchange,istio on TCP clusters; no auto-mTLS endpoint
  match on ORIGINAL_DST clusters; push_context.go BestEffortInferServiceMTLSMode: none either to a headless
  Service with an endpoint that has no sidecar).
The port, headless and sniffing code read here is the same at 1.28.0, 1.29.0 and 1.30.3: nothing branches on the
version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cluster.backend import RESPONSE_FLAGS_HEADER
from meshproof.istio_api import ClientTLS, DestinationRule, ManifestError, PeerAuthentication, Resource
from meshproof.scenario import spiffe_id
from probes.identity import PEER_LOG_FORMAT

TYPE = "type.googleapis.com/envoy."
CLUSTER_TYPE = TYPE + "config.cluster.v3.Cluster"
LISTENER_TYPE = TYPE + "config.listener.v3.Listener"
ISTIO_ALPNS = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
# What Istio's client sidecar offers on an HTTP/1.1 Istio mTLS cluster. The cluster itself says
# istio-peer-exchange,istio (cluster_tls.go, ALPNInMeshWithMxc), but the outbound HTTP connection manager's
# istio.alpn filter (xds/filters/filters.go Alpn, on by PILOT_ENABLE_ALPN_FILTER) replaces it per upstream
# protocol with mtlsHTTP11ALPN; util.AddALPNOverrideToMetadata exempts only SIMPLE/MUTUAL clusters. Upstream
# Envoy lacks that filter, and every cluster here is HTTP/1.1, so the cluster offers the result directly.
ISTIO_CLIENT_ALPN = ["istio-http/1.1", "istio"]
ISTIO_TCP_ALPN = ["istio-peer-exchange", "istio"]  # util.ALPNInMeshWithMxc: a TCP cluster's Istio mTLS
MTLS_HTTP_ALPNS = ["istio-http/1.0", "istio-http/1.1", "istio-h2"]  # listener.go mtlsHTTPALPNs
PLAINTEXT_HTTP_ALPNS = ["http/1.1", "h2c"]  # listener.go plaintextHTTPALPNs (PILOT_HTTP10 off by default)
# meshConfig protocolDetectionTimeout (pkg/config/mesh/mesh.go default 0s: no timeout), the listener filter
# timeout of the inbound listener and of sniffed outbound listeners.
PROTOCOL_DETECTION_TIMEOUT = "0s"
TRUST_DOMAIN_PREFIX = "spiffe://cluster.local/"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
MESH_CERT_FILES = {"/etc/certs/cert-chain.pem": "cert-chain.pem", "/etc/certs/key.pem": "key.pem",
                   "/etc/certs/root-cert.pem": "root-cert.pem"}
FLAGS_HEADER = RESPONSE_FLAGS_HEADER
# credentialName secrets come from here: Envoy needs an existing file, and an empty one never holds a secret.
SECRET_NEVER_SERVED = "/dev/null"


class UnsupportedConfig(ManifestError):
    """Valid Istio config the reference mesh cannot represent (e.g. certificate files it does not have)."""

    def __init__(self, dr: DestinationRule, field_path: str, problem: str):
        super().__init__("reference mesh", f"DestinationRule {dr.namespace}/{dr.name}", field_path, problem)


@dataclass(frozen=True)
class Pod:
    name: str  # the netns name
    namespace: str
    labels: dict[str, str]
    service_account: str
    ip: str
    sidecar: bool
    cert_dir: str = ""  # the workload's mesh certificate files
    sds_dir: str = ""  # its SDS secrets `default` and `ROOTCA`

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.namespace, self.service_account)


# How a sidecar treats a Service port (networking.ListenerProtocol): HTTP, TCP, or AUTO (protocol detection).
HTTP, TCP, AUTO = "HTTP", "TCP", "AUTO"
SERVED_PROTOCOLS = (HTTP, TCP, AUTO)
# protocol.Parse of the port name's prefix (before the first '-'), as ModelProtocolToListenerProtocol reads it.
# HTTP2/gRPC would need h2 clusters and UDP no listener at all: the reference mesh serves neither.
_PROTOCOL_OF_PREFIX = {"http": HTTP, "http_proxy": HTTP, "tcp": TCP, "tls": TCP, "https": TCP, "mongo": TCP,
                       "redis": TCP, "mysql": TCP, "http2": "HTTP2", "grpc": "HTTP2", "udp": "UDP"}
WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})  # conversion.go wellKnownPorts: SMTP, DNS, MySQL, MongoDB


# Kubernetes' standard appProtocol values, which ConvertProtocol reads before any prefix.
_PROTOCOL_OF_KUBERNETES_NAME = {"kubernetes.io/h2c": "HTTP2", "kubernetes.io/ws": HTTP, "kubernetes.io/wss": TCP}


def port_protocol(port: int, port_name: str, app_protocol: str | None = None) -> str:
    """conversion.go ConvertProtocol then ModelProtocolToListenerProtocol, for a Service port: its appProtocol
    when it has one, else its name."""
    if app_protocol in _PROTOCOL_OF_KUBERNETES_NAME:
        return _PROTOCOL_OF_KUBERNETES_NAME[app_protocol]
    name = (port_name if app_protocol is None else app_protocol).lower()
    if name.startswith("grpc-web"):
        return "HTTP2"
    protocol = _PROTOCOL_OF_PREFIX.get(name.split("-", 1)[0])
    if protocol is None:  # Unsupported: sniffed, unless a well-known server-first port
        return TCP if port in WELL_KNOWN_TCP_PORTS else AUTO
    return protocol


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    vip: str | None  # None: a headless Service (clusterIP: None)
    port: int
    target_port: int
    endpoints: tuple[Pod, ...]
    port_name: str = "http"
    app_protocol: str | None = None

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    @property
    def protocol(self) -> str:
        return port_protocol(self.port, self.port_name, self.app_protocol)


@dataclass
class SidecarConfig:
    clusters: list[dict]
    listeners: list[dict]
    decisions: dict = field(default_factory=dict)  # what was chosen and why, for failure reports


# --- PeerAuthentication -------------------------------------------------------------------------------------

def _selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def workload_mtls(pod: Pod, pas: list[PeerAuthentication], root_ns: str) -> tuple[str, dict[int, str], list[str]]:
    """(workload mode, {target port: mode}, names of the policies used) as ComposePeerAuthentication does."""
    mesh = namespace = workload = None
    for pa in sorted(pas, key=lambda p: p.order):  # oldest first: the first found at each level wins
        if not pa.selector:
            if pa.namespace == root_ns:
                mesh = mesh or pa
            elif pa.namespace == pod.namespace:
                namespace = namespace or pa
        elif pa.namespace != root_ns and pa.namespace == pod.namespace and _selects(pa.selector, pod.labels):
            workload = workload or pa
    mode = "PERMISSIVE"
    used = []
    for level in (mesh, namespace, workload):
        if level is not None:
            used.append(f"{level.namespace}/{level.name}")
            if level.mode not in (None, "UNSET"):
                mode = level.mode
    per_port = {port: (mode if port_mode in (None, "UNSET") else port_mode)
                for port, port_mode in (workload.port_level.items() if workload else ())}
    return mode, per_port, used


def port_mtls(pod: Pod, port: int, pas: list[PeerAuthentication], root_ns: str) -> str:
    mode, per_port, _ = workload_mtls(pod, pas, root_ns)
    return per_port.get(port, mode)


def namespace_mtls(namespace: str, pas: list[PeerAuthentication], root_ns: str) -> str:
    """Mesh + namespace level only: Istio's best-effort service mode for client-side auto mTLS."""
    mesh = next((p for p in sorted(pas, key=lambda p: p.order) if not p.selector and p.namespace == root_ns), None)
    ns = next((p for p in sorted(pas, key=lambda p: p.order) if not p.selector and p.namespace == namespace
               and namespace != root_ns), None)
    mode = "PERMISSIVE"
    for level in (mesh, ns):
        if level is not None and level.mode not in (None, "UNSET"):
            mode = level.mode
    return mode


def service_mtls_mode(service: Service, pas: list[PeerAuthentication], root_ns: str) -> str:
    """push_context.go BestEffortInferServiceMTLSMode: for a headless Service (resolution Passthrough), DISABLE
    as soon as one endpoint is not labelled tlsMode=istio (kube PodTLSMode: no label reads "disabled"); then the
    namespace's mode."""
    if service.vip is None and any(p.labels.get("security.istio.io/tlsMode") != "istio" for p in service.endpoints):
        return "DISABLE"
    return namespace_mtls(service.namespace, pas, root_ns)


# --- DestinationRule ----------------------------------------------------------------------------------------

def _fqdn(host: str, namespace: str) -> str:
    return host if "." in host or host == "*" else f"{host}.{namespace}.svc.cluster.local"


@dataclass
class MergedRule:
    """Istio's ConsolidatedDestRule: rules for one host merged within one namespace index."""

    rule: DestinationRule  # the first (oldest) rule; its namespace, selector and exportTo
    export: frozenset[str]
    tls: ClientTLS | None
    port_tls: dict[int, ClientTLS | None]
    has_policy: bool
    names: list[str]


def _export_set(dr: DestinationRule) -> frozenset[str]:
    # destination rules with a workload selector are never exported
    return frozenset(dr.export_to) if dr.workload_selector is None else frozenset({"."})


def _merge(index: dict[str, list[MergedRule]], dr: DestinationRule, has_policy: bool) -> None:
    """push_context/destination_rule.go mergeDestinationRule, with EnableEnhancedDestinationRuleMerge on."""
    export = _export_set(dr)
    host = _fqdn(dr.host, dr.namespace)
    entries = index.setdefault(host, [])
    append = True
    for entry in entries:
        if export == entry.export:
            append = False
        elif entry.export and export >= entry.export:
            append = True
        else:
            append = True
            continue
        both_plain = dr.workload_selector is None and entry.rule.workload_selector is None
        both_selected = dr.workload_selector is not None and entry.rule.workload_selector is not None
        if both_selected and dr.workload_selector != entry.rule.workload_selector:
            append = True
            continue
        if both_plain or both_selected:
            append = False
        entry.names.append(f"{dr.namespace}/{dr.name}")
        if not entry.has_policy and has_policy:  # first wins: only fill a missing trafficPolicy
            entry.tls, entry.port_tls, entry.has_policy = dr.tls, dict(dr.port_tls), True
    if append:
        entries.append(MergedRule(dr, export, dr.tls, dict(dr.port_tls), has_policy, [f"{dr.namespace}/{dr.name}"]))


def _most_specific(index: dict[str, list[MergedRule]], host: str) -> list[MergedRule]:
    if host in index:
        return index[host]
    wild = [h for h in index if h.startswith("*") and (h == "*" or host.endswith(h[1:]))]
    return index[max(wild, key=len)] if wild else []


def destination_rule_indexes(drs: list[DestinationRule], policy_keys: set[tuple[str, str]],
                             root_ns: str) -> dict:
    """push_context.go setDestinationRules: per-namespace local, exported and root-private indexes."""
    local: dict[str, dict] = {}
    exported: dict[str, dict] = {}
    root_private: dict = {}
    for dr in sorted(drs, key=lambda d: (d.workload_selector is None, d.order)):  # selectors first, then age
        export = _export_set(dr)
        has_policy = (dr.namespace, dr.name) in policy_keys or dr.tls is not None or bool(dr.port_tls)
        if not export or export & {"*", ".", dr.namespace}:
            _merge(local.setdefault(dr.namespace, {}), dr, has_policy)
        private_only = len(export) == 1 and bool(export & {".", dr.namespace})
        if not private_only:
            _merge(exported.setdefault(dr.namespace, {}), dr, has_policy)
        elif dr.namespace == root_ns:
            _merge(root_private, dr, has_policy)
    return {"local": local, "exported": exported, "root_private": root_private}


def select_destination_rule(client: Pod, service: Service, drs: list[DestinationRule], root_ns: str,
                            policy_keys: set[tuple[str, str]] = frozenset()) -> tuple[MergedRule | None, str]:
    """The (merged) DestinationRule the client sidecar applies to the service, and which lookup step found it.

    push_context.go destinationRule picks the namespace; sidecar.go DestinationRule picks the rule in it.
    """
    indexes = destination_rule_indexes(drs, set(policy_keys), root_ns)
    host = service.host
    if client.namespace != root_ns:
        candidates, step = _most_specific(indexes["local"].get(client.namespace, {}), host), "client namespace"
    else:
        candidates, step = _most_specific(indexes["root_private"], host), "root namespace (private)"
    if not candidates:
        for ns, step in ((service.namespace, "service namespace"), (root_ns, "root namespace")):
            candidates = [m for m in _most_specific(indexes["exported"].get(ns, {}), host)
                          if not m.export or "*" in m.export or client.namespace in m.export]
            if candidates:
                break
    catch_all = None
    for merged in candidates:
        if merged.rule.workload_selector is None:
            catch_all = merged  # the last one without a selector
        elif merged.rule.namespace == client.namespace and _selects(merged.rule.workload_selector, client.labels):
            return merged, step
    return catch_all, step if catch_all else "none"


def _port_tls(merged: MergedRule | None, port: int) -> tuple[ClientTLS | None, str | None]:
    """(TLS settings the cluster uses, TLS mode the endpoint mTLS check sees) for a service port.

    A portLevelSettings entry replaces the top-level TLS even when it has none (MergeTrafficPolicy with
    hasPortLevel), but mtls_checker.go only lets an entry *with* TLS override the top-level mode.
    """
    if merged is None:
        return None, None
    top = merged.tls
    if port in merged.port_tls:
        port_tls = merged.port_tls[port]
        return port_tls, tls_mode(port_tls or top) if (port_tls or top) else None
    return top, tls_mode(top) if top else None


def tls_mode(settings: ClientTLS) -> str:
    """A tls block without mode is DISABLE, proto3's default enum value (ClientTLSSettings.TLSmode DISABLE = 0)."""
    return settings.mode or "DISABLE"


# --- Envoy config pieces ------------------------------------------------------------------------------------

def _addr(ip: str, port: int) -> dict:
    return {"socket_address": {"address": ip, "port_value": port}}


def _sds(name: str, sds_dir: str) -> dict:
    return {"name": name, "sds_config": {"resource_api_version": "V3", "path_config_source": {
        "path": f"{sds_dir}/{name}.json", "watched_directory": {"path": sds_dir}}}}


def _tls_socket(kind: str, context: dict) -> dict:
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": f"{TYPE}extensions.transport_sockets.tls.v3.{kind}", **context}}


def _san_matchers(sans: list[str] | tuple[str, ...], how: str = "exact") -> list[dict]:
    # Istio's untyped exact SAN match accepts any SAN type; URI and DNS cover what certificates here carry.
    return [{"san_type": t, "matcher": {how: s}} for s in sans for t in ("URI", "DNS")]


def _tls_params() -> dict:
    return {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}


def _route(cluster: str) -> dict:
    return {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}


def _hcm(stat_prefix: str, to: str | list[dict], inbound: bool) -> dict:
    """An HTTP connection manager sending every request to the cluster `to`, or by Host to virtual hosts."""
    by_host = isinstance(to, list)
    route = {} if by_host else _route(to)
    config = {
        "@type": f"{TYPE}extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {"name": stat_prefix, "virtual_hosts": to if by_host else [
            {"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": f"{TYPE}extensions.filters.http.router.v3.Router"}}],
    }
    if inbound:
        # Istio's sidecar default (GetProxyHeaders): append the verified client certificate's details, so
        # httpbin's /headers shows the client's SPIFFE ID; on plaintext connections a client's own header
        # passes through, as in Istio.
        config["forward_client_cert_details"] = "APPEND_FORWARD"
        config["set_current_client_cert_details"] = {"subject": True, "uri": True, "dns": True}
    else:
        if not by_host:
            _retry_by_default(route)
        # The client sidecar reports why a request failed (UF, UH, NR, ...) to the probe, with the same route
        # configuration headers the kube backend's EnvoyFilter adds (cluster/manifests/response-flags.yaml).
        config["route_config"]["response_headers_to_add"] = [
            {"header": {"key": FLAGS_HEADER, "value": "%RESPONSE_FLAGS%"}},
            {"header": {"key": FLAGS_HEADER + "-reason", "value": "%UPSTREAM_TRANSPORT_FAILURE_REASON%"}}]
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def _retry_by_default(route: dict) -> dict:
    """Istio's default for an outbound route without a VirtualService (route/retry/retry.go DefaultPolicy):
    a failed connection is tried twice more, so a TLS failure is reported as URX,UF."""
    route["route"]["retry_policy"] = {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2, "retriable_status_codes": [503], "host_selection_retry_max_attempts": 5,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": f"{TYPE}extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]}
    return route


def _tcp_proxy(stat_prefix: str, cluster: str) -> dict:
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": f"{TYPE}extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": stat_prefix,
        "cluster": cluster}}


def _listener_filter(name: str, kind: str, disabled: dict | None = None) -> dict:
    listener_filter: dict = {"name": f"envoy.filters.listener.{name}",
                             "typed_config": {"@type": f"{TYPE}extensions.filters.listener.{name}.v3.{kind}"}}
    if disabled:
        listener_filter["filter_disabled"] = disabled
    return listener_filter


def _ports_predicate(ports: list[int]) -> dict:
    """listener_inbound.go listenerPredicateExcludePorts: true for a connection to one of `ports`."""
    ranges = [{"destination_port_range": {"start": p, "end": p + 1}} for p in sorted(ports)]
    return ranges[0] if len(ranges) == 1 else {"or_match": {"rules": ranges}}


def _http_options(auto_sni: bool = False, auto_san: bool = False) -> dict:
    options = {"@type": f"{TYPE}extensions.upstreams.http.v3.HttpProtocolOptions",
               "explicit_http_config": {"http_protocol_options": {}},
               # A fresh connection (and TLS handshake) for every request: each probe is proven on the wire.
               "common_http_protocol_options": {"max_requests_per_connection": 1}}
    upstream = {k: True for k, on in (("auto_sni", auto_sni), ("auto_san_validation", auto_san)) if on}
    if upstream:
        options["upstream_http_protocol_options"] = upstream
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}


# --- Client side (outbound) ---------------------------------------------------------------------------------

def _istio_mutual(client: Pod, sni: str, sans: list[str], alpn: list[str] = ISTIO_CLIENT_ALPN) -> dict:
    return _tls_socket("UpstreamTlsContext", {"sni": sni, "common_tls_context": {
        "tls_params": _tls_params(),
        "alpn_protocols": alpn,
        "tls_certificate_sds_secret_configs": [_sds("default", client.sds_dir)],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": _san_matchers(sans)},
            "validation_context_sds_secret_config": _sds("ROOTCA", client.sds_dir)}}})


def _mesh_file(path: str, client: Pod, dr: DestinationRule, field_name: str) -> str:
    """DestinationRule certificate paths: Istio's /etc/certs/* names resolve to the workload's own mesh files."""
    if path in MESH_CERT_FILES:
        return f"{client.cert_dir}/{MESH_CERT_FILES[path]}"
    if os.path.isabs(path) and os.path.isfile(path):
        return path
    raise UnsupportedConfig(dr, f"spec.trafficPolicy.tls.{field_name}",
                            f"{path!r}: the reference mesh provides only {', '.join(MESH_CERT_FILES)} "
                            "(or an existing absolute file on this machine)")


def _simple_or_mutual(client: Pod, tls: ClientTLS, mutual: bool, dr: DestinationRule) -> dict:
    common: dict = {"tls_params": _tls_params()}
    if mutual:
        common["tls_certificates"] = [{
            "certificate_chain": {"filename": _mesh_file(tls.client_certificate, client, dr, "clientCertificate")},
            "private_key": {"filename": _mesh_file(tls.private_key, client, dr, "privateKey")}}]
    if not tls.insecure_skip_verify:
        ca = _mesh_file(tls.ca_certificates, client, dr, "caCertificates") if tls.ca_certificates else SYSTEM_CA
        validation: dict = {"trusted_ca": {"filename": ca}}
        if tls.subject_alt_names:
            validation["match_typed_subject_alt_names"] = _san_matchers(tls.subject_alt_names)
        common["validation_context"] = validation
    context: dict = {"common_tls_context": common}
    if tls.sni:
        context["sni"] = tls.sni
    return _tls_socket("UpstreamTlsContext", context)


def _credential_skipped(tls: ClientTLS, dr: DestinationRule) -> bool:
    """cluster_tls.go buildUpstreamClusterTLSContext: for a sidecar, SIMPLE/MUTUAL with a credentialName it
    would need privileges to read (anything but configmap://) in a rule without workloadSelector gets no TLS
    context, so that istiod never hands a secret to every sidecar the rule reaches."""
    return dr.workload_selector is None and not tls.credential_name.startswith("configmap://")


def _credential_tls(tls: ClientTLS) -> dict:
    """constructUpstreamTLS with credentialName (security/model ApplyCustomSDSToClientCommonTLSContext): the
    certificate and, unless insecureSkipVerify, the CA come over SDS as `<name>` and `<name>-cacert`.

    The reference mesh never has the secret, so both are read from an empty file: Envoy drops the empty
    update at once, the cluster goes active without a certificate, and each connection is closed before a
    byte is sent ("Secret is not supplied by SDS") -> 503. In Istio the same happens once Envoy's 15 s initial
    fetch timeout runs out (security/model SDSAdsConfig leaves it set so a missing secret blocks nothing).
    """
    name = tls.credential_name if "://" in tls.credential_name else f"kubernetes://{tls.credential_name}"
    missing = {"resource_api_version": "V3", "path_config_source": {"path": SECRET_NEVER_SERVED}}
    common: dict = {"tls_params": _tls_params(),
                    "tls_certificate_sds_secret_configs": [{"name": name, "sds_config": missing}]}
    if not tls.insecure_skip_verify:
        common["combined_validation_context"] = {
            "default_validation_context": {"match_typed_subject_alt_names": _san_matchers(tls.subject_alt_names)},
            "validation_context_sds_secret_config": {"name": f"{name}-cacert", "sds_config": missing}}
    context: dict = {"common_tls_context": common}
    if tls.sni:
        context["sni"] = tls.sni
    return _tls_socket("UpstreamTlsContext", context)


def cluster_name(service: Service, http: bool) -> str:
    """Istio's outbound|port||host; on an auto port the HTTP chain gets a cluster of its own (`~http`): Istio's
    one cluster offers istio-peer-exchange,istio and its istio.alpn filter rewrites that per HTTP request,
    a filter upstream Envoy lacks."""
    name = f"outbound|{service.port}||{service.host}"
    return name + "~http" if http and service.protocol == AUTO else name


def outbound_cluster(client: Pod, service: Service, pas: list[PeerAuthentication], drs: list[DestinationRule],
                     root_ns: str, policy_keys: set[tuple[str, str]] = frozenset(),
                     http: bool | None = None) -> tuple[dict, dict]:
    """The client sidecar's cluster for a Service port: for its HTTP chain (`http`) or its tcp_proxy."""
    http = service.protocol == HTTP if http is None else http
    name = cluster_name(service, http)
    merged, step = select_destination_rule(client, service, drs, root_ns, policy_keys)
    tls, checker_mode = _port_tls(merged, service.port)
    decision = {"destination_rule": merged.names if merged else None, "found_in": step,
                "tls_mode": tls_mode(tls) if tls else None}
    cluster: dict = {"name": name, "type": "STATIC", "connect_timeout": "10s", "lb_policy": "ROUND_ROBIN"}
    if service.vip is None:
        # cluster.go convertResolution: a headless Service (resolution Passthrough) is ORIGINAL_DST while
        # PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES is off (its default at 1.28-1.30): the client's own target.
        cluster.update(type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED")
    auto_sni = auto_san = False
    sni = f"outbound_.{service.port}_._.{service.host}"
    sans = [pod.spiffe_id for pod in service.endpoints]
    # cluster_tls.go: ALPNInMeshWithMxc on a TCP cluster; an HTTP one offers what istio.alpn would put there.
    alpn = ISTIO_CLIENT_ALPN if http else ISTIO_TCP_ALPN
    if tls is None:
        svc_mode = service_mtls_mode(service, pas, root_ns)
        decision["auto_mtls_service_mode"] = svc_mode
        if svc_mode != "DISABLE" and service.vip is None:
            # cluster_tls.go applyUpstreamTLSSettings: no tlsMode match on an ORIGINAL_DST cluster, so auto
            # mTLS is Istio mTLS to every endpoint, with a sidecar or not.
            cluster["transport_socket"] = _istio_mutual(client, sni, sans, alpn)
            decision["headless"] = "ORIGINAL_DST cluster: auto mTLS applies to every endpoint (no tlsMode match)"
        elif svc_mode != "DISABLE":
            # Auto mTLS: TLS only to endpoints labelled tlsMode=istio, plaintext to the rest.
            cluster["transport_socket_matches"] = [
                {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
                 "transport_socket": _istio_mutual(client, sni, sans, alpn)},
                {"name": "tlsMode-disabled", "match": {},
                 "transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                     "@type": f"{TYPE}extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}]
    elif tls_mode(tls) == "ISTIO_MUTUAL":
        cluster["transport_socket"] = _istio_mutual(client, tls.sni or sni,
                                                    list(tls.subject_alt_names) or sans, alpn)
    elif tls_mode(tls) in ("SIMPLE", "MUTUAL") and tls.credential_name and _credential_skipped(tls, merged.rule):
        decision["note"] = ("credentialName in a rule without workloadSelector: istiod builds no TLS context "
                            "for a sidecar, so it sends plaintext")
    elif tls_mode(tls) in ("SIMPLE", "MUTUAL"):
        if tls.credential_name:
            cluster["transport_socket"] = _credential_tls(tls)
            decision["note"] = (f"credentialName {tls.credential_name!r}: a TLS context whose secret never "
                                "arrives, so the sidecar answers 503 without sending a byte")
        else:
            cluster["transport_socket"] = _simple_or_mutual(client, tls, tls_mode(tls) == "MUTUAL", merged.rule)
        # cluster_tls.go constructUpstreamTLS -> setAutoSniAndAutoSanValidation, with or without credentialName
        auto_sni = not tls.sni
        auto_san = auto_sni and not tls.subject_alt_names and not tls.insecure_skip_verify
    if http:
        # (A tcp_proxy ignores auto SNI / SAN validation, which read the request's Host: a TCP cluster needs none.)
        cluster["typed_extension_protocol_options"] = _http_options(auto_sni, auto_san)
    if service.vip is None:
        return cluster, decision
    endpoints = []
    for pod in service.endpoints:
        # mtls_checker.go: a rule's mode decides the tlsMode label; without one, sidecar and PeerAuthentication.
        # The injector's label says "has a sidecar"; it is only taken away, never added (endpoint_builder.go).
        labelled = pod.labels.get("security.istio.io/tlsMode") == "istio" and (
            checker_mode == "ISTIO_MUTUAL" if checker_mode
            else port_mtls(pod, service.target_port, pas, root_ns) != "DISABLE")
        endpoint: dict = {"endpoint": {"address": _addr(pod.ip, service.target_port)}}
        if labelled:
            endpoint["metadata"] = {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}
        endpoints.append(endpoint)
        decision.setdefault("endpoints_tls_mode_istio", []).append(pod.ip if labelled else None)
    cluster["load_assignment"] = {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}
    return cluster, decision


def _passthrough_chain() -> dict:
    return {"name": "PassthroughFilterChain", "filters": [_tcp_proxy("PassthroughCluster", "PassthroughCluster")]}


def _listen_addresses(client: Pod, service: Service) -> list[str]:
    """listener.go buildSidecarOutboundListener: HTTP on 0.0.0.0 (one listener per port, Host picks the
    Service), TCP and auto on the VIP; a headless Service's TCP and auto ports on each endpoint's IP but the
    client's own (buildSidecarOutboundListeners: per-instance listeners for Passthrough resolution)."""
    if service.protocol == HTTP:
        return ["0.0.0.0"]
    if service.vip is not None:
        return [service.vip]
    return [pod.ip for pod in service.endpoints if pod.ip != client.ip]


def _service_vhost(service: Service) -> dict:
    # route.go generateVirtualHostDomains, in short: the FQDN and the VIP, with and without the port.
    names = [service.host] + ([service.vip] if service.vip else [])
    return {"name": f"{service.host}:{service.port}",
            "domains": [d for name in names for d in (name, f"{name}:{service.port}")],
            "routes": [_retry_by_default(_route(cluster_name(service, http=True)))]}


def _outbound_port_listener(address: str, port: int, services: list[Service]) -> dict:
    """One Service port's listener (buildListenerFromEntry): reached from virtualOutbound by original
    destination. An HTTP chain matches what the http_inspector recognised as HTTP; the match-all chain
    (a TCP Service's tcp_proxy, or Istio's passthrough to the original destination) takes the rest."""
    name = f"{address}_{port}"
    listener: dict = {"name": name, "address": _addr(address, port), "bind_to_port": False,
                      "traffic_direction": "OUTBOUND", "continue_on_listener_filters_timeout": True,
                      "listener_filters_timeout": "0s"}
    protocol = services[0].protocol
    chains = []
    if protocol in (HTTP, AUTO):
        vhosts = [_service_vhost(s) for s in services if s.protocol == protocol]
        if protocol == HTTP:  # the PassthroughCluster for any other Host (outboundTrafficPolicy ALLOW_ANY)
            vhosts.append({"name": "allow_any", "domains": ["*"], "routes": [_route("PassthroughCluster")]})
        chains.append({"name": f"{name}_http", "filter_chain_match": {
            "application_protocols": PLAINTEXT_HTTP_ALPNS, "transport_protocol": "raw_buffer"},
            "filters": [_hcm(f"outbound_{name}", vhosts, inbound=False)]})
        listener["listener_filters"] = [_listener_filter("http_inspector", "HttpInspector")]
        listener["listener_filters_timeout"] = PROTOCOL_DETECTION_TIMEOUT
    if protocol == HTTP:
        listener["default_filter_chain"] = _passthrough_chain()
    else:
        cluster = cluster_name(services[0], http=False)
        tcp = {"name": f"{name}_tcp", "filters": [_tcp_proxy(cluster, cluster)]}
        listener["default_filter_chain" if chains else "filter_chains"] = tcp if chains else [tcp]
    if chains:
        listener["filter_chains"] = chains
    return listener


def outbound_listeners(client: Pod, services: list[Service]) -> list[dict]:
    """virtualOutbound (listener_builder.go buildVirtualOutboundListener: use_original_dst, else passthrough)
    and one listener per address and Service port."""
    ports: dict[tuple[str, int], list[Service]] = {}
    for service in services:
        for address in _listen_addresses(client, service):
            ports.setdefault((address, service.port), []).append(service)
    virtual = {"name": "virtualOutbound", "address": _addr("0.0.0.0", 15001), "use_original_dst": True,
               "filter_chains": [_passthrough_chain()]}
    return [virtual] + [_outbound_port_listener(address, port, same) for (address, port), same in sorted(ports.items())]


def passthrough_cluster() -> dict:
    # An HTTP listener's other Hosts (allow_any) reach it through a connection manager too: one request per
    # connection there as well, or a connection opened under one policy would carry the next cell's request.
    return {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "connect_timeout": "10s",
            "lb_policy": "CLUSTER_PROVIDED", "typed_extension_protocol_options": _http_options()}


# --- Server side (inbound) ----------------------------------------------------------------------------------

def _inbound_mtls_socket(pod: Pod) -> dict:
    return _tls_socket("DownstreamTlsContext", {"require_client_certificate": True, "common_tls_context": {
        "tls_params": _tls_params(),
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificate_sds_secret_configs": [_sds("default", pod.sds_dir)],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"prefix": TRUST_DOMAIN_PREFIX}}]},
            "validation_context_sds_secret_config": _sds("ROOTCA", pod.sds_dir)}}})


@dataclass(frozen=True)
class ChainOption:
    """filterchain_options.go FilterChainMatchOptions: one inbound filter chain of a port."""

    protocol: str  # HTTP: a connection manager; TCP: a tcp_proxy to the app
    transport: str  # the transport_protocol it matches: "tls" or "raw_buffer"
    alpns: list[str] | None = None  # the application_protocols it matches
    terminates: bool = False  # TLS: true, the chain ends Istio mTLS; a TLS chain without it passes TLS through


# getFilterChainMatchOptions, per listener protocol and PeerAuthentication mode (WithMxc variants: Istio's
# defaults). PERMISSIVE TCP and auto keep a TLS chain that does not terminate: an app's own TLS passes through.
CHAIN_OPTIONS: dict[tuple[str, str], tuple[ChainOption, ...]] = {
    (HTTP, "STRICT"): (ChainOption(HTTP, "tls", terminates=True),),
    (HTTP, "PERMISSIVE"): (ChainOption(HTTP, "tls", ISTIO_ALPNS, terminates=True), ChainOption(HTTP, "raw_buffer")),
    (HTTP, "DISABLE"): (ChainOption(HTTP, "raw_buffer"),),
    (AUTO, "STRICT"): (ChainOption(HTTP, "tls", MTLS_HTTP_ALPNS, terminates=True),
                       ChainOption(TCP, "tls", terminates=True)),
    (AUTO, "PERMISSIVE"): (ChainOption(HTTP, "tls", MTLS_HTTP_ALPNS, terminates=True),
                           ChainOption(HTTP, "raw_buffer", PLAINTEXT_HTTP_ALPNS),
                           ChainOption(TCP, "tls", ISTIO_TCP_ALPN, terminates=True),
                           ChainOption(TCP, "raw_buffer"),
                           ChainOption(TCP, "tls")),
    (AUTO, "DISABLE"): (ChainOption(HTTP, "raw_buffer", PLAINTEXT_HTTP_ALPNS), ChainOption(TCP, "raw_buffer")),
    (TCP, "STRICT"): (ChainOption(TCP, "tls", terminates=True),),
    (TCP, "PERMISSIVE"): (ChainOption(TCP, "tls", ISTIO_ALPNS, terminates=True), ChainOption(TCP, "tls"),
                          ChainOption(TCP, "raw_buffer")),
    (TCP, "DISABLE"): (ChainOption(TCP, "raw_buffer"),),
}
def _chain_name(port: int | None, protocol: str, option: ChainOption) -> str:
    if port is None or protocol == HTTP:  # the names an HTTP port's chains have always had
        return f"{port or 'passthrough'}_{'mtls' if option.transport == 'tls' else 'plaintext'}"
    kind = "mtls" if option.terminates else option.transport.replace("raw_buffer", "plaintext")
    return f"{port}_{option.protocol.lower()}_{kind}"


def inbound_chains(pod: Pod, port: int | None, mode: str, protocol: str = HTTP) -> list[dict]:
    """Filter chains for one served port of `protocol`, or (port None) the passthrough chains for any other
    port: tcp_proxy to the original destination behind the HTTP port's matches (Istio's are the auto ones)."""
    chains = []
    for option in CHAIN_OPTIONS[(HTTP if port is None else protocol, mode)]:
        name = _chain_name(port, protocol, option)
        match: dict = {"destination_port": port} if port else {}
        match["transport_protocol"] = option.transport
        if option.alpns:
            match["application_protocols"] = option.alpns
        if port is None:
            filters = [_tcp_proxy("InboundPassthroughCluster", "InboundPassthroughCluster")]
        elif option.protocol == HTTP:
            filters = [_hcm(f"inbound_{name}", f"inbound|{port}||", inbound=True)]
        else:
            filters = [_tcp_proxy(f"inbound|{port}||", f"inbound|{port}||")]
        chain = {"name": name, "filter_chain_match": match, "filters": filters}
        if option.terminates:
            # authn/utils BuildInboundTLS: h2,http/1.1 (Istio's TCP context adds istio-peer-exchange for its
            # metadata exchange, which the reference mesh has not: as with PILOT_DISABLE_MX_ALPN).
            chain["transport_socket"] = _inbound_mtls_socket(pod)
        chains.append(chain)
    return chains


def inbound_listener_filters(chains: list[dict], http_ports: set[int]) -> list[dict]:
    """listener_inbound.go populateListenerFilters: an inspector runs on a port only if one of its chains needs
    it (tls_inspector for transport tls; http_inspector for ALPN http/1.1 or h2c). A DISABLE TCP or auto port
    thus reads nothing before the app answers, so a server-first protocol works there.

    Kept from before for HTTP ports (`http_ports`) and the passthrough: the tls_inspector runs there in every
    mode, so a ClientHello to a DISABLE one matches no chain and is closed (see KNOWN_DIFFERENCES)."""
    tls, http, plain = set(), set(), set()
    for chain in chains:
        match = chain["filter_chain_match"]
        port = match.get("destination_port", 0)
        (tls if match["transport_protocol"] == "tls" else plain).add(port)
        if set(match.get("application_protocols", ())) & {"http/1.1", "h2c"}:
            http.add(port)
    no_tls = sorted(plain - tls - http_ports - {0})
    filters = [_listener_filter("original_dst", "OriginalDst"),
               _listener_filter("tls_inspector", "TlsInspector", _ports_predicate(no_tls) if no_tls else None)]
    if http:
        filters.append(_listener_filter("http_inspector", "HttpInspector",
                                        {"not_match": _ports_predicate(sorted(http))}))
    return filters


def inbound_passthrough_cluster() -> dict:
    # Istio's: to the original destination, from 127.0.0.6 so the pod's iptables let it through.
    return {"name": "InboundPassthroughCluster", "type": "ORIGINAL_DST", "connect_timeout": "10s",
            "lb_policy": "CLUSTER_PROVIDED", "upstream_bind_config": {"source_address": {
                "address": "127.0.0.6", "port_value": 0}}}


def inbound_cluster(port: int) -> dict:
    return {"name": f"inbound|{port}||", "type": "STATIC", "connect_timeout": "10s", "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": f"inbound|{port}||", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _addr("127.0.0.1", port)}}]}]}}


# --- The whole sidecar --------------------------------------------------------------------------------------

def policy_keys(manifests: list[dict]) -> set[tuple[str, str]]:
    """DestinationRules that have a trafficPolicy at all (even one without tls): it decides rule merging."""
    keys = set()
    for doc in manifests:
        if isinstance(doc, dict) and doc.get("kind") == "DestinationRule" \
                and (doc.get("spec") or {}).get("trafficPolicy") is not None:
            meta = doc.get("metadata") or {}
            keys.add((meta.get("namespace"), meta.get("name")))
    return keys


def compile_sidecar(pod: Pod, services: list[Service], resources: list[Resource], root_ns: str,
                    with_policy: set[tuple[str, str]] = frozenset()) -> SidecarConfig:
    """Everything one sidecar serves. `with_policy`: policy_keys() of the raw manifests."""
    pas = [r for r in resources if isinstance(r, PeerAuthentication)]
    drs = [r for r in resources if isinstance(r, DestinationRule)]
    clusters, decisions = [passthrough_cluster()], {"outbound": {}, "inbound": {}}
    for service in services:
        # An auto port has an HTTP chain and a TCP chain, each with its cluster (cluster_name).
        for http in {HTTP: (True,), TCP: (False,), AUTO: (False, True)}[service.protocol]:
            cluster, decision = outbound_cluster(pod, service, pas, drs, root_ns, with_policy, http)
            clusters.append(cluster)
        decisions["outbound"][service.host] = {"protocol": service.protocol, **decision}
    listeners = outbound_listeners(pod, services)
    # getFilterChainsByServicePort: one config per target port, the oldest Service's protocol.
    served: dict[int, str] = {}
    for s in services:
        if any(e.name == pod.name for e in s.endpoints):
            served.setdefault(s.target_port, s.protocol)
    chains = []
    mode, per_port, used = workload_mtls(pod, pas, root_ns)
    for port, protocol in sorted(served.items()):
        port_mode = per_port.get(port, mode)
        decisions["inbound"][port] = {"mode": port_mode, "protocol": protocol, "policies": used}
        chains += inbound_chains(pod, port, port_mode, protocol)
        clusters.append(inbound_cluster(port))
    chains += inbound_chains(pod, None, mode)
    clusters.append(inbound_passthrough_cluster())
    listeners.insert(1, with_peer_identity_log({"name": "virtualInbound", "address": _addr("0.0.0.0", 15006),
                         "listener_filters": inbound_listener_filters(
                             chains, {p for p, protocol in served.items() if protocol == HTTP}),
                         # buildInboundListener: meshConfig protocolDetectionTimeout, continuing on timeout
                         "listener_filters_timeout": PROTOCOL_DETECTION_TIMEOUT,
                         "continue_on_listener_filters_timeout": True,
                         "filter_chains": chains}))
    return SidecarConfig(clusters, listeners, decisions)


# --- Harness, not Istio: the server sidecar's account of each TCP peer ---------------------------------------

def with_peer_identity_log(listener: dict) -> dict:
    """The inbound listener with an access log on each of its tcp_proxy filters: the client identity the
    sidecar verified, as JSON lines on its stdout (probes/identity.py PEER_LOG_FORMAT). TCP carries no
    X-Forwarded-Client-Cert; the kube backend adds the same log with an EnvoyFilter
    (cluster/manifests/peer-identity-log.yaml). Routing and TLS are untouched."""
    log = {"name": "envoy.access_loggers.stdout", "typed_config": {
        "@type": f"{TYPE}extensions.access_loggers.stream.v3.StdoutAccessLog",
        "log_format": {"json_format": PEER_LOG_FORMAT}}}
    chains = [*listener.get("filter_chains", []), *filter(None, [listener.get("default_filter_chain")])]
    for f in (f for chain in chains for f in chain["filters"]):
        if f["name"] == "envoy.filters.network.tcp_proxy":
            f["typed_config"]["access_log"] = [log]
    return listener


def write_xds(xds_dir: Path, config: SidecarConfig, version: str, uid: int | None = None) -> None:
    """Replace the sidecar's CDS then LDS files atomically (a listener never points at a missing cluster)."""
    for name, type_url, items in (("cds", CLUSTER_TYPE, config.clusters), ("lds", LISTENER_TYPE, config.listeners)):
        body = {"version_info": version, "resources": [{"@type": type_url, **item} for item in items]}
        tmp = xds_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(body))
        if uid is not None:
            os.chown(tmp, uid, uid)
        os.replace(tmp, xds_dir / f"{name}.json")
