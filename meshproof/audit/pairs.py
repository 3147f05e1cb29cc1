"""Every client workload x Service port (x the workloads behind it), each predicted by the oracle
(suites/expectations.py `expect`) on a scenario built for that pair alone: the indexed policies that can apply
to it, the labels those policies read. Pairs with the same scenario share one prediction."""

from __future__ import annotations

from dataclasses import dataclass, replace

from meshproof import scenario as sc
from meshproof.audit.index import PolicyIndex, resolved_host
from meshproof.audit.inventory import Inventory, ServicePort, Workload
from meshproof.errors import UsageError
from meshproof.istio_api import ManifestError, Resource
from meshproof.vocabulary import Outcome
from suites.expectations import KUBERNETES_APP_PROTOCOLS, Prediction, expect, port_protocol

BROKEN = (Outcome.UNAVAILABLE, Outcome.RESET)


@dataclass(frozen=True)
class Pair:
    client: Workload
    port: ServicePort
    server: Workload
    prediction: Prediction | None
    not_predicted: str | None = None  # why there is no prediction

    @property
    def status(self) -> str:
        """mtls | app-tls (completes over the app's own TLS: encrypted, but no mesh identity) | cleartext | broken
        (503, reset, timeout) | unknown"""
        if self.prediction is None:
            return "unknown"
        return {Outcome.MTLS: "mtls", Outcome.APP_TLS: "app-tls",
                Outcome.PLAINTEXT: "cleartext"}.get(self.prediction.outcome, "broken")

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.client.ref, self.port.ref, self.server.ref)

    def to_json(self) -> dict:
        data = {"client": self.client.ref, "client_sidecar": self.client.sidecar, "service": self.port.ref,
                "server": self.server.ref, "server_sidecar": self.server.sidecar, "status": self.status}
        if self.prediction is None:
            return {**data, "not_predicted": self.not_predicted}
        pred = self.prediction.to_json()
        keep = ("outcome", "wire", "rule", "reason", "source", "client_tls", "server_mode", "peer_identity",
                "details", "envoy")
        return {**data, **{k: _real_host(pred[k], self.port) for k in keep}}


@dataclass(frozen=True)
class Filters:
    from_: tuple[tuple[str, tuple[str, str] | None], ...] = ()  # (namespace, (label, value) or None)
    to: tuple[tuple[str, str | None], ...] = ()  # (namespace, service or None)

    @classmethod
    def parse(cls, from_args: list[str] | None, to_args: list[str] | None) -> Filters:
        froms = []
        for arg in from_args or []:
            namespace, _, label = arg.partition("/")
            if label and "=" not in label:
                raise UsageError(f"--from {arg}: expected NAMESPACE or NAMESPACE/LABEL=VALUE")
            key, _, value = label.partition("=")
            froms.append((namespace, (key, value) if label else None))
        tos = []
        for arg in to_args or []:
            namespace, _, service = arg.partition("/")
            tos.append((namespace, service or None))
        return cls(tuple(froms), tuple(tos))

    def client(self, w: Workload) -> bool:
        return not self.from_ or any(w.namespace == ns and (lv is None or w.labels.get(lv[0]) == lv[1])
                                     for ns, lv in self.from_)

    def service(self, p: ServicePort) -> bool:
        return not self.to or any(p.namespace == ns and svc in (None, p.service) for ns, svc in self.to)


# The oracle knows its server as httpbin.<namespace>; each pair's Service is renamed so on the way in and back.
def _oracle_host(namespace: str) -> str:
    return f"httpbin.{namespace}.svc.cluster.local"


def _real_host(value, port: ServicePort):
    fake = _oracle_host(port.namespace)
    if isinstance(value, str):
        return value.replace(fake, port.host)
    if isinstance(value, list):
        return [_real_host(v, port) for v in value]
    if isinstance(value, dict):
        return {k: _real_host(v, port) for k, v in value.items()}
    return value


def _renamed_manifest(manifest: dict, resource: Resource) -> dict:
    """The manifest as the scenario holds its resource: a DestinationRule for the pair's Service names the
    oracle's host, so a mesh deploying the scenario (audit --verify) applies it to the stand-in server."""
    host = getattr(resource, "host", None)
    spec = manifest.get("spec") or {}
    if host is None or spec.get("host") in (None, host):
        return manifest
    return {**manifest, "spec": {**spec, "host": host}}


def oracle_port_name(port: ServicePort) -> str:
    """What the scenario's port_name must be for Istio to read the same protocol: appProtocol first
    (ConvertProtocol), any HTTP name as `http`, an unnamed port as a name Istio does not know (sniffing)."""
    protocol = port_protocol(port.name or "unnamed", port.port, port.app_protocol)
    if protocol == "HTTP":
        return "http"
    if port.app_protocol in KUBERNETES_APP_PROTOCOLS:  # kubernetes.io/h2c or wss: no name means them
        return protocol.lower()
    return (port.app_protocol or port.name or "unnamed").lower()


# What talks first on the well-known ports of server-first protocols (SMTP, MySQL): the server's greeting.
SERVER_FIRST_PORTS = (25, 587, 3306)


def stand_in_app(port: ServicePort) -> str:
    """The scenario's server app for a Service port: the kind of traffic the port carries, as far as its protocol
    and number tell. HTTP (and a name Istio sniffs: most unnamed ports serve HTTP) -> httpbin, TLS/HTTPS ->
    https (the app's own TLS), a server-first protocol's port -> banner, any other TCP -> tcp-echo."""
    protocol = port_protocol(port.name or "unnamed", port.port, port.app_protocol)
    if protocol in ("HTTPS", "TLS"):
        return "https"
    if protocol == "MySQL" or port.port in SERVER_FIRST_PORTS:
        return "banner"
    if protocol in ("HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web", "auto"):
        return "httpbin"
    return "tcp-echo"


def backends(workloads: list[Workload], port: ServicePort) -> list[Workload]:
    """The workloads a Service selects (`workloads`: those of its namespace)."""
    return [w for w in workloads if all(w.labels.get(k) == v for k, v in port.selector.items())]


def target_port(port: ServicePort, server: Workload) -> int | None:
    if isinstance(port.target_port, int):
        return port.target_port
    if str(port.target_port).isdigit():
        return int(port.target_port)
    return server.container_ports.get(str(port.target_port))


class Predictor:
    """Predictions for pairs, through the index and a cache keyed on everything the pair's scenario holds.

    A pair's scenario is the server's part (its namespace, sidecar, the labels its selecting
    PeerAuthentications read, service account, ports and those policies) and the client's part (namespace,
    sidecar, the labels the DestinationRules for the host read, and those rules). Each part is worked out
    once and numbered, so a pair costs a few dictionary look-ups and a new scenario costs one oracle call."""

    def __init__(self, inv: Inventory, root_namespace: str, istio_version: str):
        self.index = PolicyIndex(inv.resources, root_namespace)
        self.root, self.version = root_namespace, istio_version
        self.raw = inv.raw
        self.cache: dict[tuple[int, int], Prediction | str] = {}
        self.scenarios: dict[tuple[int, int], sc.Scenario] = {}  # what the oracle was asked; --verify deploys it
        self.oracle_calls = 0
        self._parts: dict[tuple, int] = {}  # part -> its number
        self._by_number: list[tuple] = []  # number -> the part, its policies last
        self._servers: dict[tuple[int, int], int | str] = {}
        self._clients: dict[tuple[int, int], int] = {}
        self._rules: dict[tuple[str, str, str], tuple[int, frozenset[str]]] = {}  # the DestinationRules a host sees

    def _number(self, part: tuple, policies: tuple[Resource, ...]) -> int:
        """The part's number; the policies (unhashable records) are in the part by identity."""
        key = (*part, tuple(id(p) for p in policies))
        number = self._parts.get(key)
        if number is None:
            number = self._parts[key] = len(self._by_number)
            self._by_number.append((*part, policies))
        return number

    def _server_part(self, port: ServicePort, server: Workload) -> int | str:
        key = (id(port), id(server))
        found = self._servers.get(key)
        if found is None:
            target = target_port(port, server)
            if target is None:
                found = f"targetPort {port.target_port!r} names no container port of {server.ref}"
            else:
                pas = self.index.peer_authentications(server.namespace, server.labels)
                keys = {k for p in pas if p.selector for k in p.selector}
                labels = tuple(sorted((k, v) for k, v in server.labels.items() if k in keys))
                found = self._number((server.namespace, server.sidecar, labels, server.service_account, port.port,
                                      target, oracle_port_name(port), port.headless, stand_in_app(port)), pas)
            self._servers[key] = found
        return found

    def _client_part(self, client: Workload, port: ServicePort) -> int:
        rules = self._rules.get((client.namespace, port.namespace, port.host))
        if rules is None:
            drs = self.index.destination_rules(client.namespace, port.namespace, port.host)
            keys = frozenset(k for d in drs if d.workload_selector for k in d.workload_selector)
            # a rule's host matters only as "this Service" or a wildcard: same rules, same part
            exact = tuple(resolved_host(d) == port.host for d in drs)
            rules = self._rules[(client.namespace, port.namespace, port.host)] = (self._number((exact,), drs), keys)
        if not client.sidecar:  # a DestinationRule acts through the client's sidecar only
            rules = (self._number(((),), ()), frozenset())
        key = (id(client), rules[0])
        found = self._clients.get(key)
        if found is None:
            labels = tuple(sorted((k, v) for k, v in client.labels.items() if k in rules[1]))
            found = self._clients[key] = self._number((client.namespace, client.sidecar, labels, rules[0]), ())
        return found

    def scenario_key(self, client: Workload, port: ServicePort, server: Workload) -> tuple[int, int] | str:
        """The key of the pair's scenario (in `cache` and `scenarios` once predicted), or why there is none."""
        if client.sidecar is None or server.sidecar is None:
            unknown = client if client.sidecar is None else server
            return f"the sidecar status of {unknown.ref} is unknown: {unknown.sidecar_why}"
        server_part = self._server_part(port, server)
        if isinstance(server_part, str):
            return server_part
        return (self._client_part(client, port), server_part)

    def predict(self, client: Workload, port: ServicePort, server: Workload) -> Prediction | str:
        """The prediction, or why there is none."""
        key = self.scenario_key(client, port, server)
        if isinstance(key, str):
            return key
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = self._ask_oracle(key, port)
        if isinstance(found, Prediction) and found.peer_identity:
            # the one field that names the client itself (its SPIFFE ID), so it is not in the key
            found = replace(found, peer_identity=sc.spiffe_id(client.namespace, client.service_account))
        return found

    def _ask_oracle(self, key: tuple[int, int], port: ServicePort) -> Prediction | str:
        client_ns, client_sidecar, client_labels, rules, _ = self._by_number[key[0]]
        exact, drs = self._by_number[rules]
        (server_ns, server_sidecar, server_labels, server_sa, service_port, target, port_name, headless, app,
         pas) = self._by_number[key[1]]
        fake = _oracle_host(server_ns)
        renamed: list[Resource] = [*pas, *(replace(d, host=fake) if is_exact else d
                                            for d, is_exact in zip(drs, exact, strict=True))]
        renamed.sort(key=lambda r: r.order)
        manifests = tuple(_renamed_manifest(self.raw.get((type(r).__name__, r.namespace, r.name), {}), r)
                          for r in renamed)
        scenario = sc.Scenario(
            client=sc.Workload(client_ns, client_sidecar, dict(client_labels), "client"),
            server=sc.Server(server_ns, server_sidecar, dict(server_labels), server_sa, service_port, target,
                             port_name=port_name, headless=headless, app=app),
            resources=tuple(renamed), manifests=manifests, istio_version=self.version,
            root_namespace=self.root, name=port.ref)
        self.scenarios[key] = scenario
        self.oracle_calls += 1
        try:
            return expect(scenario)
        except ManifestError as err:  # NotSupportedYet: a port or Service kind the oracle has no rules for yet
            return f"not predicted: {err.field_path} {err.problem}"


def audit(inv: Inventory, root_namespace: str = sc.DEFAULT_ROOT_NAMESPACE,
          istio_version: str = sc.DEFAULT_ISTIO_VERSION, filters: Filters = Filters()) -> tuple[list[Pair], Predictor]:
    predictor = Predictor(inv, root_namespace, istio_version)
    clients = [w for w in inv.workloads if filters.client(w)]
    by_namespace: dict[str, list[Workload]] = {}
    for w in inv.workloads:
        by_namespace.setdefault(w.namespace, []).append(w)
    pairs = []
    for port in inv.service_ports:
        if not filters.service(port):
            continue
        for server in backends(by_namespace.get(port.namespace, []), port):
            for client in clients:
                found = predictor.predict(client, port, server)
                pairs.append(Pair(client, port, server, found, None) if isinstance(found, Prediction)
                             else Pair(client, port, server, None, found))
    return pairs, predictor
