"""What the official kubernetes client (a generated, pydantic-typed client) puts on the wire for each object
the backend creates: it must be exactly the rendered, schema-validated object (no field dropped or renamed
by the client's models). A loopback HTTP server records the requests; it is not a cluster and answers
nothing but an echo, so this proves serialization only."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from kubernetes import client

from cluster.kube.backend import KubeBackend
from cluster.kube.client import Cluster
from cluster.kube.render import (
    Images,
    Revisions,
    capture_container,
    namespace_docs,
    policy_docs,
    run_labels,
    workload_docs,
)
from meshproof.scenario import scenario_from_dict


class Recorder(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str, str, dict]]] = []

    def do_POST(self):
        self._record()

    def do_PATCH(self):
        self._record()

    def _record(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.requests.append((self.command, self.path, self.headers.get("Content-Type"), body))
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    Recorder.requests = []
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_port}"
    with client.ApiClient(configuration) as api_client:
        yield api_client
    server.shutdown()
    thread.join(timeout=5)


def test_every_created_object_is_sent_unchanged(api):
    backend = KubeBackend()
    backend.cluster = Cluster(api, "recorder", api.configuration.host, "none")  # the backend's own create path
    scn = scenario_from_dict({
        "client": {"namespace": "sleep"}, "server": {"namespace": "httpbin"},
        "resources": [
            {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "p", "namespace": "httpbin"},
             "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "portLevelMtls": {8080: {"mode": "DISABLE"}}}},
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "d", "namespace": "sleep"},
             "spec": {"host": "httpbin.httpbin.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}},
        ]}, "serialization")
    docs = (namespace_docs(scn, "r1", "s", "o", Revisions.both("1-30-3"))
            + workload_docs(scn, "r1", Images(), Revisions.both("1-30-3"))
            + policy_docs(scn, "r1", False, run_labels("s", "o", "r1")))
    for doc in docs:
        if doc["kind"] == "Namespace":
            client.CoreV1Api(api).create_namespace(doc)
        else:
            backend._create(doc)
        method, _, _, sent = Recorder.requests[-1]
        assert method == "POST"
        assert sent == json.loads(json.dumps(doc)), f"{doc['kind']} {doc['metadata']['name']} changed on the wire"
    paths = sorted(r[1] for r in Recorder.requests)
    assert "/apis/networking.istio.io/v1alpha3/namespaces/sleep-r1/envoyfilters" in paths
    assert "/apis/networking.istio.io/v1/namespaces/sleep-r1/destinationrules" in paths
    assert "/apis/apps/v1/namespaces/httpbin-r1/deployments" in paths
    assert sorted({r[1] for r in Recorder.requests if "/apis/security.istio.io/" in r[1]}) == [
        "/apis/security.istio.io/v1/namespaces/httpbin-r1/peerauthentications"]


def test_capture_container_is_added_by_strategic_merge(api):
    body = {"spec": {"ephemeralContainers": [capture_container("meshproof-capture", Images())]}}
    with pytest.raises(ValueError):  # the echo is no Pod (pydantic refuses it); only the request matters here
        client.CoreV1Api(api).patch_namespaced_pod_ephemeralcontainers("httpbin-1", "httpbin-r1", body)
    method, path, content_type, sent = Recorder.requests[-1]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/httpbin-r1/pods/httpbin-1/ephemeralcontainers")
    # Strategic merge adds to the list by name; a JSON merge patch would try to replace it.
    assert content_type == "application/strategic-merge-patch+json"
    assert sent == body
