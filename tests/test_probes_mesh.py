"""Wire proof end to end through the reference mesh: real Envoy sidecars, iptables interception, the mesh CA;
the local backend captures on the server pod's veth and calls probes.verdict.judge."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from cluster.local.controlplane import ISTIO_CLIENT_ALPN
from meshproof.scenario import scenario_from_dict
from probes.verdict import judge

pytestmark = [pytest.mark.mesh, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root")]


@pytest.fixture(scope="module")
def local_mesh():
    from cluster.factory import open_backend

    with open_backend(SimpleNamespace(mesh="local")) as backend:
        yield backend


def scenario(server_mode: str, client_sidecar: bool = True, client_tls: str | None = None):
    resources = [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                  "metadata": {"name": "pa", "namespace": "foo"}, "spec": {"mtls": {"mode": server_mode}}}]
    if client_tls:
        resources.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                          "metadata": {"name": "dr", "namespace": "foo"},
                          "spec": {"host": "httpbin.foo.svc.cluster.local",
                                   "trafficPolicy": {"tls": {"mode": client_tls}}}})
    return scenario_from_dict({"client": {"namespace": "foo", "sidecar": client_sidecar},
                               "server": {"namespace": "foo"}, "resources": resources})


def probe(backend, scenario_):
    handle = backend.deploy(scenario_)
    try:
        result = backend.probe(handle, capture=True)
    finally:
        backend.teardown(handle)
    assert result.wire and result.wire.verdict != "error", result.wire
    return result


def test_strict_with_sidecars_is_mtls_on_the_wire(local_mesh):
    result = probe(local_mesh, scenario("STRICT"))
    wire = result.wire
    run_ns = f"foo-{local_mesh.run.prefix}"  # the workloads live in the run namespace, as on a cluster
    assert result.http_status == 200 and result.peer_identity == f"spiffe://cluster.local/ns/{run_ns}/sa/sleep"
    assert wire.verdict == "mtls" and result.outcome == "mtls"
    assert wire.sni == f"outbound_.8000_._.httpbin.{run_ns}.svc.cluster.local"
    # What the reference mesh's client sidecar is configured to offer, seen on the wire.
    assert wire.alpn == ISTIO_CLIENT_ALPN and wire.tls_version in ("TLSv1.2", "TLSv1.3")
    assert wire.canary_in_clear is False and result.canary
    # The backend keeps the pcap: judged again on its own it gives the same verdict.
    assert judge(wire.pcap, result.canary).verdict == "mtls"


def test_plaintext_strict_config_turns_the_wire_red(local_mesh):
    """What a STRICT expectation meets when the mesh serves the server in plaintext instead."""
    result = probe(local_mesh, scenario("DISABLE", client_tls="DISABLE"))
    assert result.http_status == 200 and result.wire.verdict == "plaintext"
    assert result.wire.canary_in_clear is True and result.outcome == "plaintext"


def test_client_without_sidecar_to_permissive_is_plaintext(local_mesh):
    result = probe(local_mesh, scenario("PERMISSIVE", client_sidecar=False))
    wire = result.wire
    assert result.http_status == 200 and wire.verdict == "plaintext"
    assert wire.canary_in_clear and wire.http_status_on_wire == 200


def test_client_without_sidecar_to_strict_is_rejected_on_the_wire(local_mesh):
    result = probe(local_mesh, scenario("STRICT", client_sidecar=False))
    wire = result.wire
    assert result.http_status is None
    assert wire.verdict == "plaintext" and wire.request_in_clear and wire.response == "none"
    assert wire.http_status_on_wire is None


def test_mesh_client_to_plaintext_only_server_is_refused_on_the_wire(local_mesh):
    """A DISABLE server has no chain for TLS: the mesh ClientHello is on the wire, then a reset, no answer."""
    result = probe(local_mesh, scenario("DISABLE", client_tls="ISTIO_MUTUAL"))
    wire = result.wire
    assert result.http_status == 503 and "no_filter_chain_match" in result.failure_detail
    assert (wire.request, wire.response) == ("tls", "none") and wire.http_status_on_wire is None
    assert wire.sni == f"outbound_.8000_._.httpbin.foo-{local_mesh.run.prefix}.svc.cluster.local" and wire.flows[0]["ended"] == "rst"
    assert wire.verdict == "mtls" and wire.canary_in_clear is False  # only the handshake's first flight


def test_simple_client_tls_is_app_tls(local_mesh):
    result = probe(local_mesh, scenario("PERMISSIVE", client_tls="SIMPLE"))
    assert result.wire.verdict == "app-tls" and result.wire.alpn == ["http/1.1"]
