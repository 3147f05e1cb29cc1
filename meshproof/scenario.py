"""A scenario: one sleep client, one httpbin server, and the Istio manifests applied in creation order.

The same file drives `meshproof expect` (the oracle) and `meshproof probe` (a real mesh).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshproof.istio_api import ManifestError, Resource, parse_resources

SUPPORTED_ISTIO_VERSIONS = ("1.28", "1.29", "1.30")
DEFAULT_ISTIO_VERSION = "1.30"
DEFAULT_ROOT_NAMESPACE = "istio-system"


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
    version = str(data.get("istio_version", DEFAULT_ISTIO_VERSION))
    if version not in SUPPORTED_ISTIO_VERSIONS:
        raise ManifestError(source, "scenario", "istio_version",
                            f"{version!r} is not supported; allowed: {', '.join(SUPPORTED_ISTIO_VERSIONS)}")
    root = data.get("root_namespace", DEFAULT_ROOT_NAMESPACE)
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
    labels = raw.get("labels", {"app": app})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ManifestError(source, "scenario", f"{role}.labels", "must be a mapping of label key to string value")
    common = {"namespace": str(raw.get("namespace", default_ns)), "sidecar": sidecar, "labels": dict(labels),
              "service_account": str(raw.get("service_account", app))}
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


def _only(raw: dict, allowed: tuple[str, ...], source: str, resource: str, path: str) -> None:
    for key in raw:
        if key not in allowed:
            prefix = f"{path}." if path else ""
            raise ManifestError(source, resource, f"{prefix}{key}", f"unknown field; allowed: {', '.join(allowed)}")
