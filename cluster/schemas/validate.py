"""Validate manifests against the pinned Kubernetes and Istio CRD schemas in this folder.

Kubernetes kinds use the strict definitions (unknown fields are errors, as `kubectl apply` with the default
strict field validation reports them). The Istio CRD schemas are OpenAPI v3; two translations make them
JSON Schema with the API server's meaning: `nullable: true` admits null, and an object with declared
properties and no `x-kubernetes-preserve-unknown-fields` rejects unknown fields (strict field validation
instead of silent pruning). CEL rules (`x-kubernetes-validations`) are not evaluated here; the webhook
rules meshproof relies on are checked by meshproof.istio_api.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

HERE = Path(__file__).parent
ISTIO_FILES = {"PeerAuthentication": "istio-peerauthentication.json", "DestinationRule": "istio-destinationrule.json",
               "EnvoyFilter": "istio-envoyfilter.json"}


class SchemaError(ValueError):
    """A manifest the pinned schema refuses; the message names the source, the object and the field."""


def supported_kinds() -> tuple[str, ...]:
    return tuple(_kubernetes()["kinds"]) + tuple(ISTIO_FILES)


# Subresource request bodies: the API server takes a whole object but lets only these fields change.
SUBRESOURCES = {("Pod", "ephemeralcontainers"): ("ephemeralContainers", "io.k8s.api.core.v1.EphemeralContainer")}


def errors(doc: Any, as_kind: str | None = None, subresource: str | None = None) -> list[str]:
    """Every schema violation of one manifest as 'field.path: message' (empty when valid).

    `as_kind` validates a part that has no apiVersion/kind of its own, e.g. an EphemeralContainer;
    `subresource` a request body for one, e.g. a Pod for pods/ephemeralcontainers (only
    spec.ephemeralContainers, each a strict EphemeralContainer)."""
    if not isinstance(doc, dict):
        return ["<document>: a manifest must be a mapping"]
    doc = json.loads(json.dumps(doc))  # what the API server receives: YAML int keys become strings
    kind, api_version = as_kind or doc.get("kind"), doc.get("apiVersion")
    validator = _subresource_validator(kind, subresource) if subresource else _validator(kind, api_version)
    found = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in err.absolute_path) or "<root>"
        found.append(f"{path}: {err.message}")
    return found


def validate(doc: Any, source: str = "<manifest>") -> None:
    problems = errors(doc)
    if problems:
        meta = (doc.get("metadata") or {}) if isinstance(doc, dict) else {}
        name = f"{doc.get('kind')} {meta.get('namespace', '')}/{meta.get('name', '?')}" if meta else "manifest"
        raise SchemaError(f"{source}: {name}: " + "; ".join(problems))


def _validator(kind: Any, api_version: Any) -> jsonschema.protocols.Validator:
    if kind in ISTIO_FILES:
        crd = _istio(kind)
        group, _, version = str(api_version).partition("/")
        if group != crd["group"] or version not in crd["versions"]:
            allowed = ", ".join(f"{crd['group']}/{v}" for v in crd["versions"])
            raise SchemaError(f"{kind}: apiVersion {api_version!r} is not served; allowed: {allowed}")
        return _istio_validator(kind, version)
    kinds = _kubernetes()["kinds"]
    if kind not in kinds:
        raise SchemaError(f"kind {kind!r} has no pinned schema; allowed: {', '.join(supported_kinds())}")
    return _kubernetes_validator(kind)


@cache
def _kubernetes() -> dict:
    return json.loads((HERE / "kubernetes.json").read_text())


@cache
def _istio(kind: str) -> dict:
    return json.loads((HERE / ISTIO_FILES[kind]).read_text())


@cache
def _kubernetes_validator(kind: str) -> jsonschema.protocols.Validator:
    pinned = _kubernetes()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": f"#/$defs/{pinned['kinds'][kind]}", "$defs": pinned["$defs"]}
    return jsonschema.Draft202012Validator(schema)


@cache
def _subresource_validator(kind: Any, subresource: str) -> jsonschema.protocols.Validator:
    if (kind, subresource) not in SUBRESOURCES:
        allowed = ", ".join(f"{k}/{s}" for k, s in SUBRESOURCES)
        raise SchemaError(f"{kind}/{subresource}: no pinned subresource schema; allowed: {allowed}")
    field, item = SUBRESOURCES[(kind, subresource)]
    pinned = _kubernetes()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
              "properties": {"apiVersion": {"const": "v1"}, "kind": {"const": kind},
                             "metadata": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                             "spec": {"type": "object", "required": [field], "additionalProperties": False,
                                      "properties": {field: {"type": "array", "items": {"$ref": f"#/$defs/{item}"}}}}},
              "$defs": pinned["$defs"]}
    return jsonschema.Draft202012Validator(schema)


@cache
def _istio_validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    schema = _as_json_schema(copy.deepcopy(_istio(kind)["versions"][version]))
    # The CRD schema leaves metadata to the API server; require what every object needs.
    schema["properties"]["metadata"] = {"type": "object", "required": ["name"],
                                        "properties": {"name": {"type": "string"}}}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["properties"]["apiVersion"] = {"type": "string"}
    schema["properties"]["kind"] = {"const": kind}
    return jsonschema.Draft7Validator(schema)


def _as_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    if node.get("type") == "object" and "properties" in node \
            and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node
