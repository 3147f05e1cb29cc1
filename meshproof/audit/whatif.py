"""`meshproof what-if`: the same pairs before and after a proposed change, and what the change does to each.

A change is Istio objects to apply (`--apply`: a new object is added, one of the same kind, namespace and name
replaces it) or a shorthand: `--strict NAMESPACE` sets the namespace-wide PeerAuthentications of that namespace
to STRICT (or adds one), `--strict-mesh` does the same in the root namespace. Workload and port-level
PeerAuthentications stay as they are: they override the namespace in Istio too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

from meshproof.audit.inventory import Inventory
from meshproof.audit.manifests import read_file, read_folder
from meshproof.audit.pairs import Pair
from meshproof.errors import UsageError
from meshproof.istio_api import API_VERSIONS, ManifestError, PeerAuthentication, parse_resource

WHAT_IF_NAME = "what-if-strict"


def strict(inv: Inventory, namespace: str, must_exist: bool = True) -> tuple[Inventory, str]:
    """The inventory with `namespace` switched to STRICT, and a sentence saying so. A namespace the input does
    not know is refused: a typo would otherwise break nothing and pass the gate."""
    known = set(inv.namespaces) | {w.namespace for w in inv.workloads} | {p.namespace for p in inv.service_ports} \
        | {r.namespace for r in inv.resources}
    if must_exist and namespace not in known:
        raise UsageError(f"--strict {namespace}: no such namespace in the input; known: {', '.join(sorted(known))}")
    wide = [r for r in inv.resources if isinstance(r, PeerAuthentication) and r.namespace == namespace
            and not r.selector]
    if wide:
        changed = {id(r): replace(r, mode="STRICT") for r in wide}
        resources = [changed.get(id(r), r) for r in inv.resources]
        for r in wide:
            raw = copy.deepcopy(inv.raw.get(("PeerAuthentication", r.namespace, r.name), {}))
            raw.setdefault("spec", {})["mtls"] = {"mode": "STRICT"}
            inv = replace(inv, raw={**inv.raw, ("PeerAuthentication", r.namespace, r.name): raw})
        return replace(inv, resources=resources), \
            f"setting PeerAuthentication {', '.join(f'{r.namespace}/{r.name}' for r in wide)} to STRICT"
    doc = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
           "metadata": {"name": WHAT_IF_NAME, "namespace": namespace}, "spec": {"mtls": {"mode": "STRICT"}}}
    return _with(inv, [("--strict", doc)]), f"adding a STRICT PeerAuthentication to namespace {namespace}"


def apply_file(inv: Inventory, path: str) -> tuple[Inventory, str]:
    docs = read_folder_or_file(path)
    istio = [(source, d) for source, d in docs if d.get("kind") in API_VERSIONS]
    others = sorted({str(d.get("kind")) for _, d in docs if d.get("kind") not in API_VERSIONS})
    if others:
        raise ManifestError(path, "change", "kind",
                            f"what-if applies PeerAuthentication and DestinationRule only, not {', '.join(others)}")
    if not istio:
        raise ManifestError(path, "change", "", "holds no PeerAuthentication or DestinationRule")
    names = ", ".join(f"{d['kind']} {(d.get('metadata') or {}).get('namespace')}/"
                      f"{(d.get('metadata') or {}).get('name')}" for _, d in istio)
    return _with(inv, istio), f"applying {names}"


def read_folder_or_file(path: str) -> list[tuple[str, dict]]:
    return read_folder(path) if Path(path).is_dir() else read_file(path)


def _with(inv: Inventory, docs: list[tuple[str, dict]]) -> Inventory:
    """Apply each object: validated as Istio's webhook would (a refused change is an error, nothing applied);
    the newest object, except that a replaced one keeps its creation time."""
    resources = list(inv.resources)
    raw = dict(inv.raw)
    next_order = max((r.order for r in resources), default=0) + 1
    for offset, (source, doc) in enumerate(docs):
        new = parse_resource(doc, source, next_order + offset)
        key = (type(new).__name__, new.namespace, new.name)
        old = next((r for r in resources if (type(r).__name__, r.namespace, r.name) == key), None)
        if old is not None:
            new = replace(new, order=old.order)
            resources = [new if r is old else r for r in resources]
        else:
            resources.append(new)
        raw[key] = doc
    return replace(inv, resources=sorted(resources, key=lambda r: r.order), raw=raw)


@dataclass(frozen=True)
class Change:
    before: Pair
    after: Pair

    @property
    def kind(self) -> str:
        """breaks | encrypts | stays-cleartext | fixes | unchanged | unknown"""
        b, a = self.before.status, self.after.status
        if "unknown" in (a, b):
            return "unknown"
        if a == "broken" and b != "broken":
            return "breaks"
        if b == "broken" and a != "broken":
            return "fixes"
        if a == "mtls" and b != "mtls":
            return "encrypts"
        if a == b == "cleartext":
            return "stays-cleartext"
        return "unchanged"

    def why(self) -> str:
        pred = self.after.prediction
        if pred is None:
            return self.after.not_predicted or ""
        client, server = self.after.client, self.after.server
        if not client.sidecar:
            cause = f"{client.ref} has no sidecar"
        elif not server.sidecar:
            cause = f"{server.ref} has no sidecar"
        else:
            how = pred.reason.split(";", 1)[0]  # the client side's last decision, as the oracle words it
            cause = f"{client.ref} sends {pred.client_tls} ({how[0].lower()}{how[1:]}) to a {pred.server_mode} port"
        return f"{cause} -> {pred.outcome} ({pred.rule})"

    def to_json(self) -> dict:
        return {"change": self.kind, "client": self.after.client.ref, "service": self.after.port.ref,
                "server": self.after.server.ref, "before": self.before.status, "after": self.after.status,
                "outcome_before": str(self.before.prediction.outcome) if self.before.prediction else None,
                "outcome_after": str(self.after.prediction.outcome) if self.after.prediction else None,
                "why": self.why(), "after_reason": self.after.prediction.reason if self.after.prediction else None}


def compare(before: list[Pair], after: list[Pair]) -> list[Change]:
    by_key = {p.key: p for p in before}
    return [Change(by_key[p.key], p) for p in after if p.key in by_key]
