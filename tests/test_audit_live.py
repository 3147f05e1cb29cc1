"""`meshproof audit --from-cluster` through the official kubernetes client against the loopback API server of
tests/kube_apiserver.py (not a cluster: it serves the example mesh's objects as list answers). What this proves:
which requests the source sends (GET list calls only, each allowed by the shipped ClusterRole), that it pages
with `continue`, that list items without kind are read like manifests, and how refusals are reported. What
only a real cluster shows (its RBAC, its real objects) is not tested here."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from meshproof import cli
from meshproof.audit.live import CLUSTER_ROLE, read_cluster
from meshproof.audit.manifests import read_folder, read_manifests
from meshproof.audit.pairs import audit
from meshproof.errors import UsageError
from tests.kube_apiserver import FakeApiServer, kubeconfig_for, status_failure

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "audit" / "mesh"
PATHS = {  # list path -> (API group, resource)
    r"/api/v1/namespaces": ("", "namespaces"),
    r"/api/v1/pods": ("", "pods"),
    r"/api/v1/services": ("", "services"),
    r"/apis/apps/v1/deployments": ("apps", "deployments"),
    r"/apis/apps/v1/statefulsets": ("apps", "statefulsets"),
    r"/apis/apps/v1/daemonsets": ("apps", "daemonsets"),
    r"/apis/batch/v1/cronjobs": ("batch", "cronjobs"),
    r"/apis/security.istio.io/v1/peerauthentications": ("security.istio.io", "peerauthentications"),
    r"/apis/networking.istio.io/v1/destinationrules": ("networking.istio.io", "destinationrules"),
}
PLURAL = {"Namespace": "namespaces", "Pod": "pods", "Service": "services", "Deployment": "deployments",
          "StatefulSet": "statefulsets", "DaemonSet": "daemonsets", "CronJob": "cronjobs",
          "PeerAuthentication": "peerauthentications", "DestinationRule": "destinationrules"}


def example_objects() -> dict[str, list[dict]]:
    """The example folder's objects by resource, as an API server lists them: without kind or apiVersion."""
    served = defaultdict(list)
    for _, doc in read_folder(EXAMPLE):
        if doc.get("kind") in PLURAL:
            served[PLURAL[doc["kind"]]].append({k: v for k, v in doc.items() if k not in ("kind", "apiVersion")})
    return served


def serve(api: FakeApiServer, objects: dict[str, list[dict]], page: int = 2) -> None:
    """Each list in pages of `page` items, chained by continue tokens."""
    for path, (_, plural) in PATHS.items():
        def answer(request, _match, plural=plural):
            start = int(request.query.get("continue", ["0"])[0])
            items = objects.get(plural, [])
            rest = {"continue": str(start + page)} if start + page < len(items) else {}
            return 200, {"kind": "List", "apiVersion": "v1", "metadata": rest, "items": items[start:start + page]}
        api.route("GET", path, answer)
    api.route("GET", "/api/v1/namespaces/istio-system/configmaps/istio",
              (200, {"data": {"mesh": "rootNamespace: istio-system\n"}}))


def test_live_source_reads_what_the_folder_holds_with_list_calls_only():
    with FakeApiServer() as api:
        serve(api, example_objects())
        inv, root = read_cluster(api.cluster().api, "cluster fake")
        requests = list(api.requests)
    folder = read_manifests(EXAMPLE)
    assert root == "istio-system"
    live_pairs = {p.key: p.prediction.rule if p.prediction else p.not_predicted for p in audit(inv)[0]}
    folder_pairs = {p.key: p.prediction.rule if p.prediction else p.not_predicted for p in audit(folder)[0]}
    assert live_pairs == folder_pairs and len(live_pairs) == 56
    assert [w.ref for w in inv.unknown_sidecars] == ["reporting/dashboard"]
    assert len(inv.rejected) == 1 and "monitoring/strict" in inv.rejected[0]
    # read-only: GETs, each allowed by the shipped ClusterRole, and paged (the pods list took several calls)
    assert {r.method for r in requests} == {"GET"}
    rules = yaml.safe_load(CLUSTER_ROLE.read_text())["rules"]
    for request in requests:
        group, resource, verb = _what(request.path)
        assert any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules), \
            request.path
    assert sum(1 for r in requests if r.path == "/apis/apps/v1/deployments") > 1


def _what(path: str) -> tuple[str, str, str]:
    if path == "/api/v1/namespaces/istio-system/configmaps/istio":
        return "", "configmaps", "get"
    return (*PATHS[path], "list")


def test_refused_list_names_the_resource_and_the_cluster_role():
    with FakeApiServer() as api:
        serve(api, example_objects())
        api.routes.insert(0, ("GET", r"/api/v1/pods", lambda *_: status_failure(403, "Forbidden", "no")))
        with pytest.raises(UsageError, match=r"list pods failed: 403 Forbidden.*clusterrole\.yaml"):
            read_cluster(api.cluster().api, "cluster fake")


def test_missing_istio_crds_and_mesh_config_are_noted():
    with FakeApiServer() as api:
        objects = example_objects()
        serve(api, objects)
        api.routes[:] = [r for r in api.routes if "istio" not in r[1]]  # unrouted: 404
        inv, root = read_cluster(api.cluster().api, "cluster fake")
    assert root is None and inv.resources == []
    assert any("peerauthentications.security.istio.io is not served" in n for n in inv.notes)
    assert any("mesh config ConfigMap istio-system/istio is unreadable" in n for n in inv.notes)


def test_cli_from_cluster(tmp_path, capsys):
    with FakeApiServer() as api:
        serve(api, example_objects())
        api.routes.insert(0, ("GET", "/api/v1/namespaces/istio-system/configmaps/istio",
                              lambda *_: (200, {"data": {"mesh": "rootNamespace: mesh-root\n"}})))
        kubeconfig = kubeconfig_for(api, tmp_path / "kubeconfig")
        out = tmp_path / "audit.json"
        assert cli.main(["audit", "--from-cluster", "--kubeconfig", kubeconfig, "--json", str(out)]) == 0
        # the mesh config names another root: the istio-system policy is no longer mesh-wide
        assert cli.main(["what-if", "--from-cluster", "--kubeconfig", kubeconfig, "--strict-mesh"]) == 1
        printed = capsys.readouterr().out
    assert "56 pairs" in printed and re.search(r"adding a STRICT PeerAuthentication to namespace mesh-root", printed)
    with pytest.raises(SystemExit) as refused:  # one source at a time
        cli.main(["audit", "--from-cluster", "--from-manifests", str(EXAMPLE)])
    assert refused.value.code == 2
