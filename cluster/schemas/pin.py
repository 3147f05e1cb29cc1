"""Regenerate the pinned schemas in this folder (run by hand when moving to new upstream versions).

    python -m cluster.schemas.pin --k8s-definitions <_definitions.json> --k8s-version v1.34.0 \
        --istio-crds <customresourcedefinitions.gen.yaml> --istio-ref v1.30.3 --istio-commit <sha>

Kubernetes: `_definitions.json` of the `local-strict` set shipped by the PyPI package kubernetes-validate
1.37.0 (JSON Schema generated from the Kubernetes OpenAPI spec, with additionalProperties: false). Only the
definitions reachable from the kinds meshproof creates are kept, so reviews stay readable.
Istio: the CRDs of istio/api `kubernetes/customresourcedefinitions.gen.yaml`; only PeerAuthentication,
DestinationRule and EnvoyFilter (the kube harness sets connection reuse with one) are kept, each version's
openAPIV3Schema as published.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml

HERE = Path(__file__).parent
K8S_ROOTS = {
    "Namespace": "io.k8s.api.core.v1.Namespace",
    "ServiceAccount": "io.k8s.api.core.v1.ServiceAccount",
    "Service": "io.k8s.api.core.v1.Service",
    "Deployment": "io.k8s.api.apps.v1.Deployment",
    "Pod": "io.k8s.api.core.v1.Pod",
    "EphemeralContainer": "io.k8s.api.core.v1.EphemeralContainer",
}
ISTIO_KINDS = ("PeerAuthentication", "DestinationRule", "EnvoyFilter")
_REF = re.compile(r'"\$ref": "#/\$defs/([^"]+)"')


def pin_kubernetes(definitions: Path, version: str) -> dict:
    all_defs = json.loads(definitions.read_text())["$defs"]
    keep: dict[str, dict] = {}
    todo = list(K8S_ROOTS.values())
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = all_defs[name]
        todo.extend(_REF.findall(json.dumps(all_defs[name])))
    return {
        "$comment": f"Kubernetes {version} API definitions (local-strict JSON Schema from the Kubernetes OpenAPI "
                    "spec, as shipped by PyPI kubernetes-validate==1.37.0), trimmed to the kinds in 'kinds' by "
                    "cluster/schemas/pin.py",
        "source": {"package": "kubernetes-validate==1.37.0",
                   "path": f"kubernetes_validate/kubernetes-json-schema/{version}-local-strict/_definitions.json",
                   "kubernetes_version": version},
        "kinds": K8S_ROOTS,
        "$defs": dict(sorted(keep.items())),
    }


def pin_istio(crds: Path, ref: str, commit: str) -> dict[str, dict]:
    pinned = {}
    for doc in yaml.safe_load_all(crds.read_text()):
        if not doc or doc["spec"]["names"]["kind"] not in ISTIO_KINDS:
            continue
        kind = doc["spec"]["names"]["kind"]
        pinned[kind] = {
            "$comment": f"{kind} CRD schema from istio/api {ref} kubernetes/customresourcedefinitions.gen.yaml, "
                        "pinned by cluster/schemas/pin.py",
            "source": {"repository": "github.com/istio/api", "ref": ref, "commit": commit,
                       "path": "kubernetes/customresourcedefinitions.gen.yaml"},
            "group": doc["spec"]["group"],
            "kind": kind,
            "versions": {v["name"]: v["schema"]["openAPIV3Schema"] for v in doc["spec"]["versions"]},
        }
    missing = set(ISTIO_KINDS) - set(pinned)
    if missing:
        raise SystemExit(f"{crds}: no CRD for {sorted(missing)}")
    return pinned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-definitions", type=Path, required=True)
    parser.add_argument("--k8s-version", required=True)
    parser.add_argument("--istio-crds", type=Path, required=True)
    parser.add_argument("--istio-ref", required=True)
    parser.add_argument("--istio-commit", required=True)
    args = parser.parse_args()
    _write(HERE / "kubernetes.json", pin_kubernetes(args.k8s_definitions, args.k8s_version))
    for kind, schema in pin_istio(args.istio_crds, args.istio_ref, args.istio_commit).items():
        _write(HERE / f"istio-{kind.lower()}.json", schema)


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
