"""Parse and validate the Istio API objects meshproof uses: PeerAuthentication and DestinationRule.

This module only reads manifests into plain records and refuses what Istio's validating webhook (or the
CRD's OpenAPI schema) refuses. It decides nothing about what the objects *mean*: the oracle
(`suites/expectations.py`) and the local control plane (`cluster/local/controlplane.py`) each interpret
them on their own, so a shared misreading cannot hide itself.

Sources: istio/api security/v1/peer_authentication.proto, networking/v1/destination_rule.proto;
istio/istio pkg/config/validation/validation.go (ValidatePeerAuthentication, ValidateDestinationRule,
validateTLS, validateExportTo, validateWorkloadSelector).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PA_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
DR_TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
API_VERSIONS = {
    "PeerAuthentication": ("security.istio.io/v1", "security.istio.io/v1beta1"),
    "DestinationRule": ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"),
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_HOST = re.compile(r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")


class ManifestError(ValueError):
    """A manifest Istio would refuse. The message names the file, the resource, the field and what is allowed."""

    def __init__(self, source: str, resource: str, field_path: str, problem: str):
        self.source, self.resource, self.field_path, self.problem = source, resource, field_path, problem
        super().__init__(f"{source}: {resource}: {field_path}: {problem}")


@dataclass(frozen=True)
class ClientTLS:
    """DestinationRule ClientTLSSettings (the fields meshproof acts on)."""

    mode: str | None  # one of DR_TLS_MODES; None when the manifest leaves it out (its readers decide what that means)
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    credential_name: str = ""
    sni: str = ""
    subject_alt_names: tuple[str, ...] = ()
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class PeerAuthentication:
    name: str
    namespace: str
    order: int  # creation order in the scenario; Istio lets the oldest object win a tie
    selector: dict[str, str] | None = None  # None or empty: namespace (or mesh) wide
    mode: str | None = None  # None when spec.mtls or its mode is absent; else one of PA_MODES
    port_level: dict[int, str | None] = field(default_factory=dict)  # target port -> mode (None: left out)


@dataclass(frozen=True)
class DestinationRule:
    name: str
    namespace: str
    order: int
    host: str
    export_to: tuple[str, ...] = ()  # empty: exported to all namespaces
    workload_selector: dict[str, str] | None = None
    tls: ClientTLS | None = None  # trafficPolicy.tls
    port_tls: dict[int, ClientTLS | None] = field(default_factory=dict)  # portLevelSettings[].tls by port
    subsets: tuple[str, ...] = ()
    # spec.trafficPolicy is present (even without tls): merging DRs for one host keeps the oldest
    # rule's whole trafficPolicy (pilot/pkg/model/destination_rule.go mergeDestinationRule).
    has_traffic_policy: bool = False


Resource = PeerAuthentication | DestinationRule


def parse_resources(docs: list[Any], source: str = "<resources>") -> list[Resource]:
    """Parse manifests in creation order; raise ManifestError on the first one Istio would refuse."""
    if not isinstance(docs, list):
        raise ManifestError(source, "resources", "resources", "must be a list of Istio manifests")
    parsed: list[Resource] = []
    seen: set[tuple[str, str, str]] = set()
    for index, doc in enumerate(docs):
        resource = parse_resource(doc, source, index)
        key = (type(resource).__name__, resource.namespace, resource.name)
        if key in seen:
            raise ManifestError(source, _label(doc, index), "metadata.name",
                                "already exists in this namespace (names must be unique per kind and namespace)")
        seen.add(key)
        parsed.append(resource)
    return parsed


def parse_resource(doc: Any, source: str, index: int) -> Resource:
    where = _label(doc, index)
    if not isinstance(doc, dict):
        raise ManifestError(source, where, "", "a manifest must be a mapping with apiVersion, kind, metadata, spec")
    kind = doc.get("kind")
    if kind not in API_VERSIONS:
        raise ManifestError(source, where, "kind", f"{kind!r} is not supported; allowed: {', '.join(API_VERSIONS)}")
    if doc.get("apiVersion") not in API_VERSIONS[kind]:
        raise ManifestError(source, where, "apiVersion",
                            f"{doc.get('apiVersion')!r} is not a {kind} API; allowed: {', '.join(API_VERSIONS[kind])}")
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict):
        raise ManifestError(source, where, "metadata", "required mapping with name and namespace")
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not is_dns_subdomain(name):
        raise ManifestError(source, where, "metadata.name", f"{name!r} is not a DNS-1123 subdomain")
    if not is_dns_label(namespace):
        raise ManifestError(source, where, "metadata.namespace",
                            f"{namespace!r}: required, a DNS-1123 label (meshproof never guesses a namespace)")
    spec = doc.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ManifestError(source, where, "spec", "must be a mapping")
    _reject_unknown(spec, _KNOWN_SPEC_FIELDS[kind], source, where, "spec")
    if kind == "PeerAuthentication":
        return _peer_authentication(spec, name, namespace, index, source, where)
    return _destination_rule(spec, name, namespace, index, source, where)


_KNOWN_SPEC_FIELDS = {
    "PeerAuthentication": ("selector", "mtls", "portLevelMtls"),
    "DestinationRule": ("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"),
}


def _peer_authentication(spec, name, namespace, index, source, where) -> PeerAuthentication:
    selector = _selector(spec.get("selector"), source, where, "spec.selector")
    mode = _pa_mode(spec.get("mtls"), source, where, "spec.mtls")
    port_level: dict[int, str | None] = {}
    raw_ports = spec.get("portLevelMtls")
    if raw_ports is None:
        raw_ports = {}
    elif not isinstance(raw_ports, dict):
        raise ManifestError(source, where, "spec.portLevelMtls", "must be a mapping of port number to {mode: ...}")
    elif not raw_ports:
        # validation.go ValidatePeerAuthentication: "port level mTLS, if defined, must have at least one element"
        raise ManifestError(source, where, "spec.portLevelMtls", "if present, must list at least one port")
    for raw_port, raw_mtls in raw_ports.items():
        port = _port(raw_port, source, where, f"spec.portLevelMtls[{raw_port}]")
        port_mode = _pa_mode(raw_mtls, source, where, f"spec.portLevelMtls[{raw_port}]")
        port_level[port] = port_mode
    if port_level and not selector:
        # validation.go ValidatePeerAuthentication: "portLevelMtls requires selector"
        raise ManifestError(source, where, "spec.portLevelMtls",
                            "portLevelMtls requires a workload selector (spec.selector.matchLabels)")
    return PeerAuthentication(name, namespace, index, selector, mode, port_level)


def _pa_mode(mtls: Any, source: str, where: str, path: str) -> str | None:
    if mtls is None:
        return None
    if not isinstance(mtls, dict):
        raise ManifestError(source, where, path, "must be a mapping like {mode: STRICT}")
    _reject_unknown(mtls, ("mode",), source, where, path)
    mode = mtls.get("mode")
    if mode is not None and mode not in PA_MODES:
        raise ManifestError(source, where, f"{path}.mode", f"{mode!r} is not a mode; allowed: {', '.join(PA_MODES)}")
    return mode


def _destination_rule(spec, name, namespace, index, source, where) -> DestinationRule:
    host = spec.get("host")
    if not isinstance(host, str) or not host or not _HOST.match(host):
        raise ManifestError(source, where, "spec.host",
                            f"{host!r}: required, a service host name such as httpbin.ns.svc.cluster.local")
    workload_selector = _selector(spec.get("workloadSelector"), source, where, "spec.workloadSelector")
    export_to = _export_to(spec.get("exportTo"), source, where, namespace, workload_selector is not None)
    policy = spec.get("trafficPolicy")
    tls, port_tls = _traffic_policy_tls(policy, source, where, "spec.trafficPolicy") if policy is not None \
        else (None, {})
    subsets = []
    raw_subsets = spec.get("subsets") or []
    if not isinstance(raw_subsets, list):
        raise ManifestError(source, where, "spec.subsets", "must be a list of {name: ..., labels: {...}}")
    for i, subset in enumerate(raw_subsets):
        path = f"spec.subsets[{i}]"
        if not isinstance(subset, dict) or not isinstance(subset.get("name"), str) or not subset["name"]:
            raise ManifestError(source, where, f"{path}.name", "every subset needs a name")
        _reject_unknown(subset, ("name", "labels", "trafficPolicy"), source, where, path)
        if subset["name"] in subsets:
            raise ManifestError(source, where, f"{path}.name", f"duplicate subset name {subset['name']!r}")
        if subset.get("labels") is not None:
            # validation.go validateSubset: labels.Instance(subset.Labels).Validate()
            check_labels(subset["labels"], source, where, f"{path}.labels")
        if subset.get("trafficPolicy") is not None:
            _traffic_policy_tls(subset["trafficPolicy"], source, where, f"{path}.trafficPolicy")
        subsets.append(subset["name"])
    return DestinationRule(name, namespace, index, host, export_to, workload_selector, tls, port_tls, tuple(subsets),
                           has_traffic_policy=policy is not None)


_TRAFFIC_POLICY_FIELDS = ("connectionPool", "loadBalancer", "outlierDetection", "tls", "portLevelSettings", "tunnel",
                          "proxyProtocol", "retryBudget")
_PORT_POLICY_FIELDS = ("port", "connectionPool", "loadBalancer", "outlierDetection", "tls")


def _traffic_policy_tls(policy, source, where, path):
    if not isinstance(policy, dict):
        raise ManifestError(source, where, path, "must be a mapping")
    _reject_unknown(policy, _TRAFFIC_POLICY_FIELDS, source, where, path)
    if not policy:
        # validation.go validateTrafficPolicy: "traffic policy must have at least one field"
        raise ManifestError(source, where, path, f"must set at least one of: {', '.join(_TRAFFIC_POLICY_FIELDS)}")
    tls = _client_tls(policy.get("tls"), source, where, f"{path}.tls")
    port_tls: dict[int, ClientTLS | None] = {}
    settings = policy.get("portLevelSettings") or []
    if not isinstance(settings, list):
        raise ManifestError(source, where, f"{path}.portLevelSettings", "must be a list of {port: {number: N}, ...}")
    for i, setting in enumerate(settings):
        item = f"{path}.portLevelSettings[{i}]"
        if not isinstance(setting, dict) or not isinstance(setting.get("port"), dict) \
                or "number" not in setting["port"]:
            # validation.go validateTrafficPolicy: "portTrafficPolicy must have valid port"
            raise ManifestError(source, where, f"{item}.port", "required: {number: <1-65535>}")
        _reject_unknown(setting, _PORT_POLICY_FIELDS, source, where, item)
        if len(setting) == 1:
            # validation.go validatePortTrafficPolicies: "port traffic policy must have at least one field"
            raise ManifestError(source, where, item,
                                f"must set at least one of: {', '.join(_PORT_POLICY_FIELDS[1:])} besides port")
        port = _port(setting["port"]["number"], source, where, f"{item}.port.number")
        if port in port_tls:
            raise ManifestError(source, where, f"{item}.port.number", f"port {port} is listed twice")
        port_tls[port] = _client_tls(setting.get("tls"), source, where, f"{item}.tls")
    return tls, port_tls


_TLS_FIELDS = ("mode", "clientCertificate", "privateKey", "caCertificates", "credentialName", "sni",
               "subjectAltNames", "insecureSkipVerify", "caCrl")


def _client_tls(tls: Any, source: str, where: str, path: str) -> ClientTLS | None:
    if tls is None:
        return None
    if not isinstance(tls, dict):
        raise ManifestError(source, where, path, "must be a mapping like {mode: ISTIO_MUTUAL}")
    _reject_unknown(tls, _TLS_FIELDS, source, where, path)
    mode = tls.get("mode")
    if mode is not None and mode not in DR_TLS_MODES:
        raise ManifestError(source, where, f"{path}.mode",
                            f"{mode!r} is not a TLS mode; allowed: {', '.join(DR_TLS_MODES)}")
    _check_tls_types(tls, source, where, path)
    settings = ClientTLS(
        mode=mode,
        client_certificate=tls.get("clientCertificate") or "",
        private_key=tls.get("privateKey") or "",
        ca_certificates=tls.get("caCertificates") or "",
        credential_name=tls.get("credentialName") or "",
        sni=tls.get("sni") or "",
        subject_alt_names=tuple(tls.get("subjectAltNames") or ()),
        insecure_skip_verify=bool(tls.get("insecureSkipVerify")),
    )
    file_certs = settings.client_certificate or settings.private_key or settings.ca_certificates or tls.get("caCrl")
    # validation/agent/validation.go ValidateTLS; the insecureSkipVerify checks apply to SIMPLE and MUTUAL only
    if settings.insecure_skip_verify and mode == "SIMPLE" and (
            settings.ca_certificates or settings.credential_name or "subjectAltNames" in tls):
        raise ManifestError(source, where, f"{path}.insecureSkipVerify",
                            "with mode SIMPLE cannot be combined with caCertificates, credentialName or subjectAltNames")
    if settings.insecure_skip_verify and mode == "MUTUAL" and (
            settings.ca_certificates or "subjectAltNames" in tls):
        raise ManifestError(source, where, f"{path}.insecureSkipVerify",
                            "with mode MUTUAL cannot be combined with caCertificates or subjectAltNames")
    if mode in ("SIMPLE", "MUTUAL") and settings.credential_name:
        if file_certs:
            raise ManifestError(source, where, f"{path}.credentialName",
                                "cannot be combined with clientCertificate, privateKey, caCertificates or caCrl")
        return settings
    if mode == "MUTUAL":
        for attr, name in (("client_certificate", "clientCertificate"), ("private_key", "privateKey")):
            if not getattr(settings, attr):
                raise ManifestError(source, where, f"{path}.{name}",
                                    "required for mode MUTUAL (or set credentialName instead)")
    return settings


_TLS_STRING_FIELDS = ("clientCertificate", "privateKey", "caCertificates", "credentialName", "sni", "caCrl")


def _check_tls_types(tls: dict, source: str, where: str, path: str) -> None:
    # The CRD's OpenAPI schema types every ClientTLSSettings field; the API server refuses a wrong type
    # rather than converting it. A null is pruned like an absent field (insecureSkipVerify is nullable).
    for name in _TLS_STRING_FIELDS:
        value = tls.get(name)
        if value is not None and not isinstance(value, str):
            raise ManifestError(source, where, f"{path}.{name}", f"{value!r} must be a string")
    names = tls.get("subjectAltNames")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ManifestError(source, where, f"{path}.subjectAltNames",
                            f"{names!r} must be a list of strings, like [spiffe://cluster.local/ns/NS/sa/SA]")
    skip = tls.get("insecureSkipVerify")
    if skip is not None and not isinstance(skip, bool):
        raise ManifestError(source, where, f"{path}.insecureSkipVerify", f"{skip!r}: allowed: true, false")


def _export_to(value: Any, source: str, where: str, namespace: str, has_selector: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(source, where, "spec.exportTo", "must be a list of namespaces, '.' or '*'")
    for v in value:
        # visibility.go Instance.Validate: '~' (none) is only for ServiceEntry
        if v not in (".", "*") and not is_dns_label(v):
            raise ManifestError(source, where, "spec.exportTo",
                                f"{v!r}: allowed values are '.', '*' or a namespace name")
    # validation.go validateExportTo: '.' stands for the own namespace, so '.' plus its name is a duplicate
    keys = [namespace if v == "." else v for v in value]
    if len(set(keys)) != len(keys):
        raise ManifestError(source, where, "spec.exportTo",
                            f"duplicate entries ('.' and {namespace!r} name the same namespace)")
    if "*" in value and len(value) > 1:
        raise ManifestError(source, where, "spec.exportTo", "'*' cannot be combined with other values")
    if has_selector and value and keys != [namespace]:
        raise ManifestError(source, where, "spec.exportTo",
                            f"a DestinationRule with workloadSelector may only be exported to '.' ({namespace})")
    return tuple(value)


def _selector(value: Any, source: str, where: str, path: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ManifestError(source, where, path, "must be a mapping {matchLabels: {key: value}}")
    _reject_unknown(value, ("matchLabels",), source, where, path)
    return check_labels(value.get("matchLabels") or {}, source, where, f"{path}.matchLabels")


def is_dns_label(value: Any) -> bool:
    """A DNS-1123 label: what Kubernetes allows as a namespace name."""
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS_LABEL.match(value))


def is_dns_subdomain(value: Any) -> bool:
    """A DNS-1123 subdomain: what Kubernetes allows as an object name (a ServiceAccount's, for one)."""
    return isinstance(value, str) and len(value) <= 253 and bool(_DNS_SUBDOMAIN.match(value))


def is_qualified_name(value: Any) -> bool:
    """A Kubernetes qualified name, [DNS subdomain/]name: what a label key or a Service port's appProtocol is."""
    prefix, _, name = value.rpartition("/") if isinstance(value, str) else ("", "", "")
    return bool(_LABEL_KEY_NAME.match(name)) and len(name) <= 63 and (
        is_dns_subdomain(prefix) if "/" in value else True)


def check_labels(labels: Any, source: str, resource: str, path: str) -> dict[str, str]:
    """Kubernetes label keys ([prefix/]name) and values; raise ManifestError naming the first bad one."""
    if not isinstance(labels, dict):
        raise ManifestError(source, resource, path, "must be a mapping of label key to string value")
    for key, val in labels.items():
        if not is_qualified_name(key):
            raise ManifestError(source, resource, path,
                                f"{key!r} is not a valid label key (a string: [DNS subdomain/]name, name at most "
                                "63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric)")
        if not isinstance(val, str) or not _LABEL_VALUE.match(val) or len(val) > 63:
            raise ManifestError(source, resource, f"{path}.{key}",
                                f"{val!r} is not a valid label value (a string of at most 63 characters of "
                                "[A-Za-z0-9-_.], starting and ending alphanumeric, or empty)")
    return dict(labels)


def _port(value: Any, source: str, where: str, path: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise ManifestError(source, where, path, f"{value!r} is not a port number (1-65535)")
    return port


def _reject_unknown(mapping: dict, allowed: tuple[str, ...], source: str, where: str, path: str) -> None:
    # The CRDs are structural schemas with pruning off for spec fields Istio does not know; the
    # webhook rejects them ("unknown field"), so a typo never silently means "no policy".
    for key in mapping:
        if key not in allowed:
            raise ManifestError(source, where, f"{path}.{key}", f"unknown field; allowed: {', '.join(allowed)}")


def _label(doc: Any, index: int) -> str:
    if isinstance(doc, dict):
        meta = doc.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        return f"resources[{index}] {doc.get('kind', '?')} {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    return f"resources[{index}]"
