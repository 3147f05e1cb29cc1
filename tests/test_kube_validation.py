"""On a cluster, the validation suite also asks Istio: each manifest meshproof refuses is sent as a server-side
dry run (nothing stored) and the cluster must refuse it too. Against a loopback API server
(tests/kube_apiserver.py) this proves the request (run namespace, dryRun=All, fieldValidation=Strict) and how
the answer is read; which manifests a real Istio refuses is for the suite on a cluster (docs/kube.md)."""

from __future__ import annotations

from cluster.kube.backend import KubeBackend, KubeHandle
from suites.invalid import INVALID_MANIFESTS
from tests.kube_apiserver import FakeApiServer, status_failure
from tests.kube_scenarios import scenario

INVALID = {case: manifest for case, manifest, _ in INVALID_MANIFESTS}
DENIED = ('admission webhook "validation.istio.io" denied the request: configuration is invalid: '
          'unrecognized mode STRICTER')


def backend_on(api: FakeApiServer) -> tuple[KubeBackend, KubeHandle]:
    backend = KubeBackend()
    backend.cluster = api.cluster()
    handle = KubeHandle(scenario(), "r1", {"sleep": "sleep-r1", "httpbin": "httpbin-r1"}, ("sleep-r1", "s"),
                        ("httpbin-r1", "h", "10.0.0.2"), cell_id="c1")
    return backend, handle


def test_a_refusal_by_istios_webhook_is_read_from_a_dry_run_in_the_run_namespace():
    with FakeApiServer() as api:
        api.route("POST", "/apis/security.istio.io/v1/namespaces/httpbin-r1/peerauthentications",
                  status_failure(400, "BadRequest", DENIED))
        backend, handle = backend_on(api)
        said = backend.cluster_refusal(handle, INVALID["pa-unknown-mode"])
    assert said == DENIED
    [sent] = api.requests
    assert sent.query["dryRun"] == ["All"] and sent.query["fieldValidation"] == ["Strict"]
    assert sent.body["metadata"]["namespace"] == "httpbin-r1"


def test_a_manifest_the_cluster_accepts_is_reported_as_accepted():
    with FakeApiServer() as api:
        api.route("POST", "/apis/networking.istio.io/v1/namespaces/sleep-r1/destinationrules",
                  lambda request, match: (201, request.body))
        backend, handle = backend_on(api)
        assert backend.cluster_refusal(handle, INVALID["dr-mutual-without-cert"]) is None
    assert api.requests[0].body["spec"]["host"] == "httpbin.httpbin-r1.svc.cluster.local"


def test_what_the_api_cannot_route_is_not_sent():
    with FakeApiServer() as api:
        backend, handle = backend_on(api)
        for case in ("unknown-kind", "missing-namespace"):
            assert backend.cluster_refusal(handle, INVALID[case]).startswith("not sent")
    assert api.requests == []
