"""Control plane away and sidecar crashes on kube, through the official client against a loopback API server
(tests/kube_apiserver.py) that keeps the state of one istiod deployment, its pods and Istio's validating
webhook. It proves the order and content of the requests KubeFaults sends and what it waits for; how fast
a cluster gets there is not shown here (docs/kube.md, "not yet run on a cluster")."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

from cluster.kube.backend import KubeBackend, Pair, clean_leftovers
from cluster.kube.faults import (
    MAX_BACKOFF_S,
    RECOVER_S,
    RESTORE_POLICY_ANNOTATION,
    KubeFaults,
    opening_patch,
    recovery_budget_s,
    restoring_patch,
)
from tests.kube_apiserver import FakeApiServer, kubeconfig_for

NS, NAME, REV = "istio-system", "istiod-1-30-3", "1-30-3"
DEPLOYMENT = rf"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"
VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
PODS = rf"/api/v1/namespaces/{NS}/pods"


class Istiod:
    """One revisioned istiod and the default tag's validator (manifests/charts/default/templates/validatingwebhook.yaml,
    labelled istio.io/rev=<revision>): scaling to 0 leaves `terminating` pods for that many pod listings (what
    status.replicas does not count), scaling up makes it ready at once."""

    def __init__(self, api: FakeApiServer, terminating: int = 2, policy: str = "Fail"):
        self.replicas, self.terminating = 1, terminating
        self.webhook = {"name": "validation.istio.io", "failurePolicy": policy, "sideEffects": "None",
                        "admissionReviewVersions": ["v1"], "clientConfig": {"service": {"name": "istiod", "namespace": NS}}}
        self.annotations: dict = {}
        api.route("GET", "/apis/apps/v1/deployments", lambda *_: (200, {"items": [self.deployment()]}))
        api.route("GET", DEPLOYMENT, lambda *_: (200, self.deployment()))
        api.route("PATCH", DEPLOYMENT, lambda *_: (200, self.deployment()))
        api.route("GET", DEPLOYMENT + "/scale", lambda *_: (200, self.scale()))
        api.route("PATCH", DEPLOYMENT + "/scale", self.patch_scale)
        api.route("GET", PODS, self.pods)
        api.route("GET", VWC, lambda *_: (200, {"items": [self.validator()]}))
        api.route("GET", VWC + "/istiod-default-validator", lambda *_: (200, self.validator()))
        api.route("PATCH", VWC + "/istiod-default-validator", self.patch_validator)

    def deployment(self) -> dict:
        labels = {"app": "istiod", "istio.io/rev": REV}
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": NAME, "namespace": NS, "labels": labels},
                "spec": {"replicas": self.replicas, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": "discovery", "image": "istio/pilot:1.30.3"}]}}},
                # status.replicas counts only pods without a deletion timestamp (Kubernetes API reference)
                "status": {"replicas": self.replicas, "readyReplicas": self.replicas}}

    def scale(self) -> dict:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": NAME, "namespace": NS},
                "spec": {"replicas": self.replicas}, "status": {"replicas": self.replicas}}

    def patch_scale(self, request, match):
        self.replicas = request.body["spec"]["replicas"]
        return 200, self.scale()

    def pods(self, request, match):
        if self.replicas:
            items = [{"metadata": {"name": "istiod-1-30-3-abc", "namespace": NS}}]
        elif self.terminating:
            self.terminating -= 1
            items = [{"metadata": {"name": "istiod-1-30-3-abc", "namespace": NS,
                                   "deletionTimestamp": "2026-01-01T00:00:00Z"}}]
        else:
            items = []
        return 200, {"items": items}

    def validator(self) -> dict:
        return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "istiod-default-validator", "labels": {"istio.io/rev": REV},
                             "annotations": dict(self.annotations)},
                "webhooks": [dict(self.webhook)]}

    def patch_validator(self, request, match):
        # strategic merge: webhooks merge by name; a null annotation is removed
        for key, value in request.body["metadata"]["annotations"].items():
            if value is None:
                self.annotations.pop(key, None)
            else:
                self.annotations[key] = value
        for change in request.body.get("webhooks", []):
            assert change["name"] == self.webhook["name"]
            self.webhook.update(change)
        return 200, self.validator()


def faults_on(api: FakeApiServer, **backend) -> KubeFaults:
    kube = KubeBackend(allow_mesh_wide=True, revision=REV, **backend)
    kube.cluster = api.cluster()
    return KubeFaults(kube)


def requests(api, *methods_and_paths):
    return [i for i, r in enumerate(api.requests) if (r.method, r.path) in methods_and_paths]


def test_stop_waits_until_no_istiod_pod_is_left_not_for_status_replicas():
    with FakeApiServer() as api:
        istiod = Istiod(api, terminating=2)
        faults_on(api).stop_control_plane()
        listed = api.seen("GET", PODS)
    assert istiod.replicas == 0
    assert len(listed) == 3 and istiod.terminating == 0  # two listings with a terminating pod, then none
    assert listed[0].query["labelSelector"] == ["app=istiod,istio.io/rev=1-30-3"]  # the deployment's own selector


def test_the_validating_webhook_ignores_failures_while_istiod_is_away_and_is_restored_after():
    """istiod sets failurePolicy Fail once it has been ready (pkg/webhooks/validation/controller); with it
    gone the scenario's PeerAuthentication create would be refused, so the window opens the webhook first."""
    with FakeApiServer() as api:
        istiod = Istiod(api, terminating=0)
        faults = faults_on(api)
        faults.stop_control_plane()
        assert istiod.webhook["failurePolicy"] == "Ignore"
        assert json.loads(istiod.annotations[RESTORE_POLICY_ANNOTATION]) == {"validation.istio.io": "Fail"}
        opened = requests(api, ("PATCH", VWC + "/istiod-default-validator"))[0]
        scaled = requests(api, ("PATCH", DEPLOYMENT + "/scale"))[0]
        assert opened < scaled  # open before istiod goes: never a moment of refusals
        assert api.seen("GET", VWC)[0].query["labelSelector"] == [f"istio.io/rev in ({REV})"]
        faults.start_control_plane()
    assert istiod.replicas == 1 and istiod.webhook["failurePolicy"] == "Fail"
    assert RESTORE_POLICY_ANNOTATION not in istiod.annotations


def test_an_already_open_webhook_is_left_alone():
    assert opening_patch([("validation.istio.io", "Ignore")]) is None
    assert restoring_patch({}) is None
    assert opening_patch([("a", None)])["webhooks"] == [{"name": "a", "failurePolicy": "Ignore"}]  # default: Fail


def test_clean_restores_a_webhook_a_dead_run_left_open(tmp_path):
    with FakeApiServer() as api:
        istiod = Istiod(api, terminating=0)
        istiod.webhook["failurePolicy"] = "Ignore"
        istiod.annotations[RESTORE_POLICY_ANNOTATION] = json.dumps({"validation.istio.io": "Fail"})
        api.route("GET", "/api/v1/namespaces", (200, {"items": []}))
        api.route("GET", r"/apis/[a-z.]+/v1/[a-z]+", (200, {"apiVersion": "v1", "kind": "List", "items": []}))
        said = clean_leftovers(kubeconfig_for(api, tmp_path / "kubeconfig"))
    assert istiod.webhook["failurePolicy"] == "Fail" and not istiod.annotations
    assert "validatingwebhookconfiguration istiod-default-validator: failurePolicy restored" in said


# --- sidecar crashes on reused pods -------------------------------------------------------------------------

def test_the_recovery_budget_covers_the_kubelets_back_off():
    assert recovery_budget_s(0) == RECOVER_S + 10
    assert recovery_budget_s(3) == RECOVER_S + 80
    assert recovery_budget_s(40) == RECOVER_S + MAX_BACKOFF_S


def sidecar_pod(ready: bool, restarts: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "httpbin", "namespace": "chaos"},
            "spec": {"containers": [{"name": "httpbin", "image": "x"}, {"name": "istio-proxy", "image": "y"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "istio-proxy", "image": "y", "imageID": "", "ready": ready,
                                              "restartCount": restarts}]}}


def test_a_pair_whose_sidecar_was_killed_is_not_reused():
    killed = []
    with FakeApiServer(on_exec=lambda call: killed.append(call.command) or (0, "42\n", "")) as api:
        api.route("GET", "/api/v1/namespaces/chaos/pods/httpbin",
                  lambda *_: (200, sidecar_pod(ready=not killed, restarts=3)))
        faults = faults_on(api)
        handle = SimpleNamespace(client_pod=("chaos", "sleep"), server_pod=("chaos", "httpbin", "10.0.0.2"),
                                 scenario=SimpleNamespace(server=SimpleNamespace(sidecar=True)))
        faults.kill_sidecar(handle, "server", signal.SIGKILL)
    assert killed and killed[0][:2] == ["sh", "-c"]
    pair = Pair(key=(), run_id="r1", namespaces={}, client_pod=("chaos", "sleep"),
                server_pod=("chaos", "httpbin", "10.0.0.2"))
    faults.backend._faults.append(faults)
    assert faults.backend._faults_left_on(pair)  # its teardown deletes it: the next cell gets fresh pods
