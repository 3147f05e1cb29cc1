"""`meshproof doctor --mesh kube`: can this cluster run the suites, and what to do when it cannot.

Every check asks the cluster (nothing is assumed): injection and the capture container's capabilities are
tried with server-side dry runs in a short-lived namespace of our own, image pulls with a real pod there.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from cluster.checks import Check
from cluster.kube.capture import CONTAINER
from cluster.kube.client import Cluster, KubeUnavailable, connect
from cluster.kube.inspect import (
    auto_mtls_enabled,
    control_planes,
    mesh_config,
    mesh_wide_policies,
    root_namespace,
)
from cluster.kube.render import INJECT_LABEL, MANAGED_BY, REV_LABEL, Images, capture_container

PULL_TIMEOUT_S = 120.0


def checks(args: Any = None, *, kubeconfig: str | None = None, context: str | None = None,
           istio_revision: str | None = None, quick: bool = False) -> list[Check]:
    """From CLI options (`args`) or keywords. `quick` skips the image pull (which starts a real pod)."""
    kubeconfig = getattr(args, "kubeconfig", None) or kubeconfig
    context = getattr(args, "context", None) or context
    istio_revision = getattr(args, "istio_revision", None) or istio_revision
    quick = bool(getattr(args, "quick", False) or quick)
    try:
        cluster = connect(kubeconfig, context)
    except KubeUnavailable as err:
        return [Check(name="API server reachable", ok=False, detail=str(err),
                      hint="check --kubeconfig/--context; for a local cluster run `make kind-up`")]
    try:
        return _cluster_checks(cluster, istio_revision, Images.from_env(), pull=not quick)
    finally:
        cluster.api.close()


def _cluster_checks(cluster: Cluster, revision: str | None, images: Images, pull: bool) -> list[Check]:
    found = [Check(name="API server reachable", ok=True,
                   detail=f"{cluster.server} (context {cluster.context}), Kubernetes {cluster.version}")]
    planes = control_planes(cluster)
    found.append(Check(name="Istio control planes", ok=bool(planes) and all(p.ready for p in planes),
                       detail=", ".join(f"revision {p.revision} = {p.version} in {p.namespace}"
                                        + ("" if p.ready else " (not ready)") for p in planes) or "none found",
                       hint="install Istio (cluster/kind/up.sh does, with a revision label)"))
    if not planes:
        return found
    if revision:
        found.append(Check(name=f"revision {revision} installed", ok=any(p.revision == revision for p in planes),
                           detail=", ".join(p.revision for p in planes),
                           hint="install it, or pass the revision that is installed (--istio-revision)"))
    mesh = mesh_config(cluster, next((p for p in planes if p.revision == revision), planes[0]))
    found.append(Check(name="auto mTLS on", ok=auto_mtls_enabled(mesh),
                       detail=f"meshConfig.enableAutoMtls={mesh.get('enableAutoMtls', 'unset (default true)')}",
                       hint="set meshConfig.enableAutoMtls: true; the oracle assumes it"))
    root = root_namespace(mesh)
    foreign = mesh_wide_policies(cluster, root)
    found.append(Check(name="no mesh-wide policies", ok=not foreign,
                       detail="; ".join(map(str, foreign)) or f"none in {root}",
                       hint="meshproof's expectations assume none: use a cluster without them"))
    found += _namespace_checks(cluster, revision, images, pull)
    return found


def _namespace_checks(cluster: Cluster, revision: str | None, images: Images, pull: bool) -> list[Check]:
    name = f"meshproof-doctor-{secrets.token_hex(3)}"
    labels = {MANAGED_BY: "meshproof", "meshproof.io/run": "doctor"}
    labels.update({REV_LABEL: revision} if revision else {"istio-injection": "enabled"})
    core = cluster.core
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    try:
        _wait_for_default_serviceaccount(core, name)
        found = [_try(lambda: _injection(core, name, images), "sidecar injection works",
                      "is the injector webhook of this revision installed and reachable?")]
        found.append(_try(lambda: _capture_allowed(cluster, name, images), "capture container allowed",
                          "allow ephemeral containers with NET_RAW/NET_ADMIN in test namespaces "
                          "(Pod Security 'privileged', no policy engine denying them)"))
        if pull:
            found.append(_try(lambda: _images_pullable(core, name, images), "images pullable",
                              "mirror the images and pass their names (cluster.kube.render.Images)"))
        return found
    finally:
        core.delete_namespace(name, propagation_policy="Background")


def _try(run: Callable[[], str], name: str, hint: str) -> Check:
    try:
        return Check(name=name, ok=True, detail=run())
    except (client.ApiException, RuntimeError) as err:
        reason = getattr(err, "body", None) or str(err)
        return Check(name=name, ok=False, detail=str(reason)[:400], hint=hint)


def _pod(name: str, containers: list[dict], inject: bool) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {INJECT_LABEL: "true" if inject else "false"}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0, "containers": containers}}


def _injection(core: client.CoreV1Api, ns: str, images: Images) -> str:
    # A server-side dry run goes through the mutating webhooks (Istio's declares sideEffects: None).
    body = _pod("injection", [{"name": "sleep", "image": images.sleep, "command": ["/bin/sleep", "infinity"]}], True)
    pod = core.create_namespaced_pod(ns, body, dry_run="All")
    names = [c.name for c in pod.spec.containers] + [c.name for c in pod.spec.init_containers or []]
    if "istio-proxy" not in names:
        raise RuntimeError(f"a dry-run pod came back without istio-proxy (containers: {', '.join(names)})")
    return "a dry-run pod gets istio-proxy"


def _capture_allowed(cluster: Cluster, ns: str, images: Images) -> str:
    # Admission (Pod Security, policy engines) judges capabilities the same way for ephemeral containers.
    probe = capture_container(CONTAINER, images)
    cluster.core.create_namespaced_pod(ns, _pod("capture", [probe], False), dry_run="All")
    review = client.AuthorizationV1Api(cluster.api).create_self_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": ns, "verb": "patch", "resource": "pods",
                                        "subresource": "ephemeralcontainers"}}})
    if not review.status.allowed:
        raise RuntimeError("this user may not patch pods/ephemeralcontainers")
    return "NET_RAW/NET_ADMIN admitted; pods/ephemeralcontainers patch allowed"


def _images_pullable(core: client.CoreV1Api, ns: str, images: Images) -> str:
    containers = [{"name": role, "image": image, "command": ["sleep", "1"], "imagePullPolicy": "IfNotPresent"}
                  for role, image in (("sleep", images.sleep), ("httpbin", images.httpbin),
                                      ("capture", images.capture), ("tcp-echo", images.tcp_echo),
                                      ("python", images.python))]
    core.create_namespaced_pod(ns, _pod("pull", containers, False))
    deadline = time.monotonic() + PULL_TIMEOUT_S
    while time.monotonic() < deadline:
        statuses = core.read_namespaced_pod("pull", ns).status.container_statuses or []
        for status in statuses:
            waiting = status.state.waiting if status.state else None
            if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                raise RuntimeError(f"{status.image}: {waiting.reason}: {waiting.message}")
        # imageID is set once the image is on the node, whatever the command then does.
        if len(statuses) == len(containers) and all(s.image_id for s in statuses):
            return ", ".join(s.image for s in statuses)
        time.sleep(2.0)
    raise RuntimeError(f"images not pulled within {PULL_TIMEOUT_S:g} s")


def _wait_for_default_serviceaccount(core: client.CoreV1Api, ns: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if core.list_namespaced_service_account(ns, field_selector="metadata.name=default").items:
            return
        time.sleep(0.5)
