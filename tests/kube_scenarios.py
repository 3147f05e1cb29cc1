"""Scenarios and Istio manifests the kube self-tests share (rendering, pair reuse)."""

import copy

from meshproof.scenario import scenario_from_dict

RUN = "kab12c1"
PA_STRICT = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "default", "namespace": "httpbin"}, "spec": {"mtls": {"mode": "STRICT"}}}
MESH_WIDE = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}


def dr_istio_mutual(**spec) -> dict:
    """A DestinationRule in the client's namespace for httpbin with tls ISTIO_MUTUAL, plus `spec` fields."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "httpbin", "namespace": "sleep"},
            "spec": {"host": "httpbin.httpbin.svc.cluster.local", **spec,
                     "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}


def scenario(resources=(), client=None, server=None):
    return scenario_from_dict({"client": client or {"namespace": "sleep", "sidecar": True},
                               "server": server or {"namespace": "httpbin", "sidecar": True},
                               "resources": [copy.deepcopy(r) for r in resources]}, "test")
