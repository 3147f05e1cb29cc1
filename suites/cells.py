"""How a conformance cell is written: the `Cell` record and the builders of the Istio manifests in it.

A cell is declarative: an id that stays stable across runs (reports and expected tables key on it), a `why`
(one sentence: the question the cell asks, which the Allure report shows), the scenario fields that differ
from the defaults (meshproof/scenario.py DIMENSIONS) and the manifests, in creation order. The suites
(matrix, scope, chaos, adversary) build their manifests with the functions here. Namespaces are fixed
(sleep, httpbin, istio-system); a runner that shares one mesh between cells renames them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from suites.expectations import MESH_CERT_FILES

CLIENT_NS, SERVER_NS, ROOT_NS = "sleep", "httpbin", "istio-system"
HOST = f"httpbin.{SERVER_NS}.svc.cluster.local"
APP = {"app": "httpbin"}
# The server's identity, as a client that verifies it names it in subjectAltNames.
SERVER_SAN = "spiffe://cluster.local/ns/httpbin/sa/httpbin"
CA = MESH_CERT_FILES["caCertificates"]


@dataclass(frozen=True)
class Cell:
    """One cell. `client` and `server` hold scenario fields away from their defaults, e.g. {"sidecar": False}."""

    id: str
    why: str  # one sentence: what the cell pins down
    resources: tuple[dict, ...] = ()
    client: Mapping[str, Any] = field(default_factory=dict)
    server: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""  # a short title
    tags: tuple[str, ...] = ()
    request: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"to": "pod-ip"}
    root_namespace: str | None = None  # None: the mesh's (ROOT_NS)

    def scenario(self) -> dict:
        """The scenario as `meshproof.scenario.scenario_from_dict` reads it (a fresh copy each call)."""
        data = {"client": {"namespace": CLIENT_NS, "sidecar": True, **self.client},
                "server": {"namespace": SERVER_NS, "sidecar": True, **self.server},
                "resources": [_copy(r) for r in self.resources], "description": self.description,
                "tags": list(self.tags)}
        if self.request:
            data["request"] = dict(self.request)
        if self.root_namespace is not None:
            data["root_namespace"] = self.root_namespace
        return {**data, "why": self.why} if self.why else data


def question(cell: Cell) -> str:
    """What a cell asks of the mesh: its scenario without the words (why, description, tags). Two cells with
    one question are one cell twice."""
    data = {k: v for k, v in cell.scenario().items() if k not in ("why", "description", "tags")}
    return json.dumps(data, sort_keys=True)


def same_questions(cells: list[Cell]) -> list[tuple[str, str]]:
    """(first id, later id) of every pair of cells that ask the same question."""
    first: dict[str, str] = {}
    pairs = []
    for cell in cells:
        key = question(cell)
        if key in first:
            pairs.append((first[key], cell.id))
        else:
            first[key] = cell.id
    return pairs


def without(cells: list[Cell], not_yet: Mapping[str, str]) -> list[Cell]:
    """The cells a suite runs: its designed cells but those `not_yet` holds (id -> why it does not pass end to end
    on the reference mesh yet, and whose side it is), which wait outside the suite instead of failing or skipping."""
    unknown = set(not_yet) - {cell.id for cell in cells}
    if unknown:
        raise ValueError(f"not_yet names cells the suite does not have: {sorted(unknown)}")
    return [cell for cell in cells if cell.id not in not_yet]


def as_scenarios(cells: list[Cell]) -> list[tuple[str, dict]]:
    """(id, scenario dict) per cell, for code that runs or predicts scenarios."""
    return [(cell.id, cell.scenario()) for cell in cells]


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def pa(mode: str | None, namespace: str = SERVER_NS, name: str = "default", selector: dict | None = None,
       ports: dict[int, str | None] | None = None) -> dict:
    """A PeerAuthentication; mode None leaves out spec.mtls, a port mode None leaves out its mode (UNSET)."""
    spec: dict = {}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if ports:
        spec["portLevelMtls"] = {port: ({"mode": m} if m else {}) for port, m in ports.items()}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def tls(mode: str, **extra) -> dict:
    settings = {"mode": mode}
    if mode == "MUTUAL":
        settings.update(MESH_CERT_FILES)
    settings.update(extra)
    return settings


def dr(mode: str | None, namespace: str = CLIENT_NS, name: str = "httpbin", host: str = HOST,
       export_to: list[str] | None = None, selector: dict | None = None,
       ports: dict[int, dict | None] | None = None, traffic_policy: dict | None = None) -> dict:
    """A DestinationRule; `ports` maps a port number to its tls settings (None: a port entry without tls)."""
    policy = dict(traffic_policy or {})
    if mode is not None:
        policy["tls"] = tls(mode)
    if ports:
        policy["portLevelSettings"] = [
            {"port": {"number": port}, **({"tls": t} if t else {"connectionPool": {"tcp": {"maxConnections": 100}}})}
            for port, t in ports.items()]
    spec: dict = {"host": host}
    if policy:
        spec["trafficPolicy"] = policy
    if export_to is not None:
        spec["exportTo"] = export_to
    if selector:
        spec["workloadSelector"] = {"matchLabels": selector}
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def scenario(resources: list[dict], client_sidecar: bool = True, server_sidecar: bool = True,
             description: str = "", tags: list[str] | None = None, **server) -> dict:
    """A scenario dict straight away, for suites whose cells are built at run time (chaos, adversary)."""
    return Cell("", "", tuple(resources), {"sidecar": client_sidecar}, {"sidecar": server_sidecar, **server},
                description, tuple(tags or ())).scenario()
