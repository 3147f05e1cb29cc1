"""A scenario: one sleep client, one httpbin server, and the Istio manifests applied in creation order.

The same file drives `meshproof expect` (the oracle) and `meshproof probe` (a real mesh).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshproof.istio_api import (
    ManifestError,
    Resource,
    check_labels,
    is_dns_label,
    is_dns_subdomain,
    parse_resources,
)

SUPPORTED_ISTIO_VERSIONS = ("1.28", "1.29", "1.30")
DEFAULT_ISTIO_VERSION = "1.30"
DEFAULT_ROOT_NAMESPACE = "istio-system"


def check_istio_version(value: Any, source: str, field: str, resource: str = "scenario") -> str:
    """The one supported-version check, for scenario files, the matrix and --istio-version alike."""
    version = value if isinstance(value, str) else str(value)
    if version not in SUPPORTED_ISTIO_VERSIONS:
        # YAML reads an unquoted 1.30 as the number 1.3
        hint = "" if isinstance(value, str) else ' (write it quoted, like "1.30")'
        raise ManifestError(source, resource, field,
                            f"{version!r} is not supported{hint}; allowed: {', '.join(SUPPORTED_ISTIO_VERSIONS)}")
    return version


def spiffe_id(namespace: str, service_account: str, trust_domain: str = "cluster.local") -> str:
    """The identity Istio's CA puts in a workload certificate's URI SAN."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class Workload:
    namespace: str
    sidecar: bool
    labels: dict[str, str]
    service_account: str

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.namespace, self.service_account)


@dataclass(frozen=True)
class Server(Workload):
    service_port: int = 8000
    target_port: int = 8080

    @property
    def host(self) -> str:
        return f"httpbin.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class Scenario:
    client: Workload
    server: Server
    resources: tuple[Resource, ...]
    manifests: tuple[dict, ...]  # the raw documents, as a kube backend applies them
    istio_version: str = DEFAULT_ISTIO_VERSION
    root_namespace: str = DEFAULT_ROOT_NAMESPACE
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_TOP_FIELDS = ("name", "client", "server", "istio_version", "root_namespace", "resources", "description", "tags")
_CLIENT_FIELDS = ("namespace", "sidecar", "labels", "service_account")
_SERVER_FIELDS = _CLIENT_FIELDS + ("service_port", "target_port")


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file; raise ManifestError naming the file and field on anything wrong."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ManifestError(source, "scenario", "", "file not found") from None
    except OSError as err:
        raise ManifestError(source, "scenario", "", f"cannot read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ManifestError(source, "scenario", where, f"not valid YAML: {getattr(err, 'problem', err)}") from None
    return scenario_from_dict(data, source)


def scenario_from_dict(data: Any, source: str = "<scenario>") -> Scenario:
    if not isinstance(data, dict):
        raise ManifestError(source, "scenario", "", "must be a mapping with client, server and resources")
    _only(data, _TOP_FIELDS, source, "scenario", "")
    version = check_istio_version(data.get("istio_version", DEFAULT_ISTIO_VERSION), source, "istio_version")
    root = _namespace(data.get("root_namespace", DEFAULT_ROOT_NAMESPACE), source, "root_namespace")
    client = _workload(data.get("client") or {}, source, "client", "sleep", "sleep")
    server = _workload(data.get("server") or {}, source, "server", "httpbin", "httpbin")
    manifests = data.get("resources") or []
    resources = parse_resources(manifests, source)
    return Scenario(client=client, server=server, resources=tuple(resources), manifests=tuple(manifests),
                    istio_version=version, root_namespace=root, name=str(data.get("name", "")),
                    extra={k: data[k] for k in ("description", "tags") if k in data})


def _workload(raw: Any, source: str, role: str, default_ns: str, app: str) -> Workload:
    if not isinstance(raw, dict):
        raise ManifestError(source, "scenario", role, "must be a mapping like {namespace: ns, sidecar: true}")
    _only(raw, _SERVER_FIELDS if role == "server" else _CLIENT_FIELDS, source, "scenario", role)
    sidecar = raw.get("sidecar", True)
    if not isinstance(sidecar, bool):
        raise ManifestError(source, "scenario", f"{role}.sidecar", f"{sidecar!r}: allowed: true, false")
    labels = check_labels(raw.get("labels", {"app": app}), source, "scenario", f"{role}.labels")
    account = raw.get("service_account", app)
    if not is_dns_subdomain(account):
        # Kubernetes names a ServiceAccount with a DNS-1123 subdomain; it becomes the SPIFFE ID's sa segment
        raise ManifestError(source, "scenario", f"{role}.service_account",
                            f"{account!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
                            "starting and ending alphanumeric, at most 253 characters)")
    common = {"namespace": _namespace(raw.get("namespace", default_ns), source, f"{role}.namespace"),
              "sidecar": sidecar, "labels": labels, "service_account": account}
    if role == "client":
        return Workload(**common)
    ports = {}
    for key, default in (("service_port", 8000), ("target_port", 8080)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ManifestError(source, "scenario", f"server.{key}", f"{value!r} is not a port number (1-65535)")
        ports[key] = value
    reserved = {15000, 15001, 15006, 15020, 15021, 15090}
    if ports["target_port"] in reserved:
        raise ManifestError(source, "scenario", "server.target_port",
                            f"{ports['target_port']} is reserved for the sidecar ({sorted(reserved)})")
    return Server(**common, **ports)


def _namespace(value: Any, source: str, field: str) -> str:
    if not is_dns_label(value):
        raise ManifestError(source, "scenario", field,
                            f"{value!r} is not a namespace name: a DNS-1123 label (lower-case letters, digits and "
                            "'-', starting and ending alphanumeric, at most 63 characters)")
    return value


def _only(raw: dict, allowed: tuple[str, ...], source: str, resource: str, path: str) -> None:
    for key in raw:
        if key not in allowed:
            prefix = f"{path}." if path else ""
            raise ManifestError(source, resource, f"{prefix}{key}", f"unknown field; allowed: {', '.join(allowed)}")
