"""A scenario: one sleep client, one httpbin server, and the Istio manifests applied in creation order.

The same file drives `meshproof expect` (the oracle) and `meshproof probe` (a real mesh).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    is_qualified_name,
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
    app: str = "httpbin"  # what listens on the target port (APPS)
    port_name: str = "http"  # the Service port's name: how Istio reads its protocol
    app_protocol: str | None = None  # the Service port's appProtocol: read before the name when set
    headless: bool = False  # the Service has clusterIP: None

    @property
    def host(self) -> str:
        return f"httpbin.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class Request:
    # "service": the Service's name and port | "cluster-ip": the Service's ClusterIP and port | "pod-ip": the server
    # pod's IP and target port
    to: str = "service"


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
    request: Request = Request()


_TOP_FIELDS = ("name", "client", "server", "request", "istio_version", "root_namespace", "resources", "description",
               "why", "tags")
# httpbin: HTTP/1.1 | tcp-echo: client-first TCP echo | banner: server-first TCP (greets on accept, then echoes)
# | https: httpbin behind its own TLS
APPS = ("httpbin", "tcp-echo", "banner", "https")
DESTINATIONS = ("service", "cluster-ip", "pod-ip")
RESERVED_PORTS = (15000, 15001, 15006, 15020, 15021, 15090)  # the sidecar's own


def _dns_label(what: str, hint: str = "") -> Callable[[Any, str, str], str]:
    def check(value: Any, source: str, field: str) -> str:
        if not is_dns_label(value):
            raise ManifestError(source, "scenario", field,
                                f"{value!r} is not {what}: a DNS-1123 label (lower-case letters, digits and '-', "
                                f"starting and ending alphanumeric, at most 63 characters){hint}")
        return value
    return check


_namespace = _dns_label("a namespace name")


def _sidecar(value: Any, source: str, field: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(source, "scenario", field, f"{value!r}: allowed: true, false")
    return value


def _labels(value: Any, source: str, field: str) -> dict[str, str]:
    return dict(check_labels(value, source, "scenario", field))  # a copy: never the table's default


def _service_account(value: Any, source: str, field: str) -> str:
    if not is_dns_subdomain(value):
        # Kubernetes names a ServiceAccount with a DNS-1123 subdomain; it becomes the SPIFFE ID's sa segment
        raise ManifestError(source, "scenario", field,
                            f"{value!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
                            "starting and ending alphanumeric, at most 253 characters)")
    return value


def _port(value: Any, source: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ManifestError(source, "scenario", field, f"{value!r} is not a port number (1-65535)")
    return value


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any, str, str], str]:
    def check(value: Any, source: str, field: str) -> str:
        if value not in allowed:
            raise ManifestError(source, "scenario", field, f"{value!r}: allowed: {', '.join(allowed)}")
        return value
    return check


# Kubernetes names a Service port with a DNS-1123 label; Istio reads the protocol from its prefix.
_port_name = _dns_label("a Service port name", " such as http, http-web, tcp, tls or https (any other name "
                        "means automatic protocol detection)")


def _app_protocol(value: Any, source: str, field: str) -> str | None:
    if value is not None and not is_qualified_name(value):
        # Kubernetes validates a Service port's appProtocol as a qualified name, as it does a label key.
        raise ManifestError(source, "scenario", field,
                            f"{value!r} is not a Service port appProtocol: a qualified name ([DNS subdomain/]name, "
                            "name at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric) such "
                            "as http, tcp, https or kubernetes.io/h2c; leave it out for none")
    return value


def _target_port(value: Any, source: str, field: str) -> int:
    if _port(value, source, field) in RESERVED_PORTS:
        raise ManifestError(source, "scenario", field,
                            f"{value} is reserved for the sidecar ({sorted(RESERVED_PORTS)})")
    return value


@dataclass(frozen=True)
class Dimension:
    """One field of a scenario's workloads: the parser reads it from `<role>.<name>` with `check`, both
    backends key their pod pairs on it (`pod_shape`) and the report names it by `label`."""

    role: str  # "client" | "server"
    name: str  # the field of Workload / Server and of the scenario file
    default: Any
    check: Callable[[Any, str, str], Any]  # (value, source, "role.name") -> the value, or ManifestError
    label: str
    shapes_pods: bool = True  # the pods or Services depend on it (pod_shape)
    # The values both backends deploy and the oracle predicts today; a scenario beyond them is refused by
    # `require_supported` naming the field (None: every valid value).
    supported: tuple | None = None

    @property
    def path(self) -> str:
        return f"{self.role}.{self.name}"

    def value(self, scenario: Scenario) -> Any:
        return getattr(getattr(scenario, self.role), self.name)


def _workload_dimensions(role: str, app: str) -> tuple[Dimension, ...]:
    return (Dimension(role, "namespace", app, _namespace, f"{role} namespace"),
            Dimension(role, "sidecar", True, _sidecar, f"{role} sidecar"),
            Dimension(role, "labels", {"app": app}, _labels, f"{role} labels"),
            Dimension(role, "service_account", app, _service_account, f"{role} service account"))


# Every field of Workload, Server and Request, in the order the parser checks them. A new dimension is a row
# here and a field there (a self-test holds the two together); the pod pairs of both backends follow from it.
DIMENSIONS: tuple[Dimension, ...] = (
    *_workload_dimensions("client", "sleep"),
    *_workload_dimensions("server", "httpbin"),
    Dimension("server", "service_port", 8000, _port, "Service port"),
    Dimension("server", "target_port", 8080, _target_port, "target port"),
    Dimension("server", "app", "httpbin", _one_of(APPS), "server app", supported=("httpbin",)),
    Dimension("server", "port_name", "http", _port_name, "Service port name", supported=("http",)),
    Dimension("server", "app_protocol", None, _app_protocol, "Service port appProtocol"),
    Dimension("server", "headless", False, _sidecar, "headless Service", supported=(False,)),
    Dimension("request", "to", "service", _one_of(DESTINATIONS), "request to", shapes_pods=False,
              supported=("service",)),
)
# How the parser shows each section's expected form in an error.
_SECTION_EXAMPLE = {"client": "{namespace: ns, sidecar: true}", "server": "{namespace: ns, sidecar: true}",
                    "request": "{to: service}"}


class NotSupportedYet(ManifestError):
    """A valid scenario that the oracle or a backend does not handle yet: never run or predicted as if it were
    the default."""


def require_supported(scenario: Scenario, who: str, handles: Mapping[str, tuple | None] | None = None) -> None:
    """Refuse a scenario beyond what `who` handles: `handles` maps a dimension's path to the values that
    consumer handles (None: all), overriding the dimension's `supported` (what every consumer handles)."""
    for d in DIMENSIONS:
        supported = (handles or {}).get(d.path, d.supported)
        if supported is not None and d.value(scenario) not in supported:
            raise NotSupportedYet(scenario.name or "scenario", "scenario", d.path,
                                  f"{d.value(scenario)!r} is valid but {who} does not handle it yet "
                                  f"(it handles: {', '.join(map(str, supported))})")


def pod_shape(scenario: Scenario) -> tuple:
    """What the pods and Services of a scenario depend on: two scenarios with one shape can share one pod
    pair (only their Istio objects differ). Both backends key their pairs on it."""
    return tuple((d.path, _frozen(d.value(scenario))) for d in DIMENSIONS if d.shapes_pods)


def differs_from_default(scenario: Scenario) -> dict[str, Any]:
    """{label: value} of the dimensions a scenario sets away from their defaults, for the report."""
    return {d.label: d.value(scenario) for d in DIMENSIONS if d.value(scenario) != d.default}


def _frozen(value: Any) -> Any:
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


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
    client = Workload(**_section(data.get("client") or {}, source, "client"))
    server = Server(**_section(data.get("server") or {}, source, "server"))
    request = Request(**_section(data.get("request") or {}, source, "request"))
    if server.headless and request.to == "cluster-ip":
        raise ManifestError(source, "scenario", "request.to",
                            "'cluster-ip' needs the Service's ClusterIP, and a headless Service (server.headless: "
                            "true) has none; allowed for a headless Service: service, pod-ip")
    manifests = data.get("resources") or []
    resources = parse_resources(manifests, source)
    return Scenario(client=client, server=server, resources=tuple(resources), manifests=tuple(manifests),
                    istio_version=version, root_namespace=root, name=str(data.get("name", "")),
                    extra={k: data[k] for k in ("description", "why", "tags") if k in data}, request=request)


def _section(raw: Any, source: str, role: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ManifestError(source, "scenario", role, f"must be a mapping like {_SECTION_EXAMPLE[role]}")
    dimensions = [d for d in DIMENSIONS if d.role == role]
    _only(raw, tuple(d.name for d in dimensions), source, "scenario", role)
    return {d.name: d.check(raw.get(d.name, d.default), source, d.path) for d in dimensions}


def _only(raw: dict, allowed: tuple[str, ...], source: str, resource: str, path: str) -> None:
    for key in raw:
        if key not in allowed:
            prefix = f"{path}." if path else ""
            raise ManifestError(source, resource, f"{prefix}{key}", f"unknown field; allowed: {', '.join(allowed)}")
