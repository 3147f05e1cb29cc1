"""The reference mesh's server apps (tcp-echo, banner, https) end to end: real sidecars, real interception, the
probe clients users reach for (the TCP probe client, curl -k), each probe captured and judged on the wire.

Needs root; skipped with that reason otherwise.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from cluster.factory import started
from cluster.local.backend import LocalBackend, _tcp_proxied
from meshproof.scenario import scenario_from_dict

pytestmark = [pytest.mark.root, pytest.mark.mesh,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with started(LocalBackend(out_dir=tmp_path_factory.mktemp("local-apps"))) as backend:
        yield backend


def scenario(app: str, client_sidecar: bool = True, server_sidecar: bool = True, mode: str = "PERMISSIVE",
             port_name: str = "http", to: str = "service"):
    resources = [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                  "metadata": {"name": "default", "namespace": "bar"}, "spec": {"mtls": {"mode": mode}}}]
    return scenario_from_dict({"client": {"namespace": "foo", "sidecar": client_sidecar},
                               "server": {"namespace": "bar", "sidecar": server_sidecar, "app": app,
                                          "port_name": port_name},
                               "request": {"to": to}, "resources": resources}, source="test")


def probe(mesh, scn):
    handle = mesh.deploy(scn)
    try:
        return mesh.probe(handle, capture=True)
    finally:
        mesh.teardown(handle)


@pytest.mark.parametrize("app", ["tcp-echo", "banner"])
def test_tcp_apps_without_sidecars_complete_in_the_clear(mesh, app):
    result = probe(mesh, scenario(app, client_sidecar=False, server_sidecar=False))
    assert (result.outcome, result.http_status) == ("plaintext", None), result.to_json()
    account = result.extra["tcp_client"]
    assert account["answer"] == ("" if app == "banner" else "meshproof-echo ") + f"meshproof-canary {result.canary}\n"
    assert account["greeting"] == ("220 meshproof-banner ready\r\n" if app == "banner" else None)
    # The canary travels in the TCP payload: plaintext shows it in the clear.
    assert result.wire.verdict == "plaintext" and result.wire.canary_in_clear, result.wire


def test_https_app_without_sidecars_is_its_own_tls_on_the_wire(mesh):
    result = probe(mesh, scenario("https", client_sidecar=False, server_sidecar=False))
    assert (result.outcome, result.http_status) == ("app-tls", 200), result.to_json()
    wire = result.wire
    assert wire.verdict == "app-tls" and not wire.canary_in_clear, wire
    assert "h2" in wire.alpn and "http/1.1" in wire.alpn and not wire.sni.startswith("outbound_"), wire  # curl -k


def test_pod_ip_requests_go_to_the_pod_and_its_target_port(mesh, monkeypatch):
    """The probe's side of request.to (the sidecars' side is the control plane's): without sidecars, nothing
    but the destination differs."""
    from cluster.local import backend

    monkeypatch.setitem(backend.HANDLES, "request.to", ("service", "pod-ip"))
    handle = mesh.deploy(scenario("tcp-echo", client_sidecar=False, server_sidecar=False, to="pod-ip"))
    try:
        result = mesh.probe(handle, capture=True)
        assert result.outcome == "plaintext", result.to_json()
        assert f"-m tcp_probe {handle.pair.server.ip} 8080 {result.canary}" in result.command, result.command
    finally:
        mesh.teardown(handle)


def test_a_server_first_app_behind_a_sidecars_http_chain_times_out(mesh):
    """banner on an http port, a plaintext client, the server sidecar's HTTP connection manager: it waits for a
    request the client never sends (the client waits for the greeting), until the client's deadline."""
    result = probe(mesh, scenario("banner", client_sidecar=False))
    assert result.outcome == "timeout", result.to_json()
    assert result.extra["tcp_client"]["step"] == "greeting"
    # The client sent nothing, and nothing but TCP's handshake crossed the wire.
    assert result.wire.verdict == "none" and not result.wire.canary_in_clear, result.wire


def test_a_client_first_tcp_line_into_a_sidecars_http_chain_is_closed_after_a_400(mesh):
    """The server sidecar's HTTP connection manager cannot parse the canary line: a codec error answers 400 and
    closes, so the TCP client's connection was closed without the echo (reset, the 400 kept in its account)."""
    result = probe(mesh, scenario("tcp-echo", client_sidecar=False))
    assert result.outcome == "reset" and result.wire.http_status_on_wire == 400, result.to_json()
    assert result.extra["tcp_client"]["answer"].startswith("HTTP/1.1 400 ")
    assert result.wire.canary_in_clear  # the line crossed in the clear: the probe says so


def test_tls_into_a_sidecars_http_port_is_closed(mesh):
    result = probe(mesh, scenario("https", client_sidecar=False))
    assert result.outcome == "reset" and result.wire.verdict == "app-tls", result.to_json()
    assert "no_filter_chain_match" in result.failure_detail


@pytest.mark.parametrize("app,outcome,wire", [("tcp-echo", "reset", "plaintext"), ("banner", "timeout", "none"),
                                              ("https", "reset", "app-tls")])
def test_a_client_sidecars_http_port_passes_non_http_bytes_through_and_holds_a_silent_client(mesh, app, outcome, wire):
    """Both sidecars on an http port: the client sidecar's http_inspector sends what is not HTTP through its
    PassthroughCluster (Istio's listener.go gives a wildcard HTTP listener a TCP fallthrough), so the server
    sidecar's connection manager answers the TCP line with a 400 (cleartext on the wire) and a ClientHello meets
    no chain there; a server-first client waits on the inspector and nothing reaches the server (verdict none,
    the capture's heartbeat proves it looked)."""
    result = probe(mesh, scenario(app))
    assert result.outcome == outcome, result.to_json()
    assert result.wire.verdict == wire, result.wire
    if wire == "none":
        assert "nothing of the probe reached" in result.wire.reason and result.wire.flows == []


def test_the_server_sidecars_account_names_the_peer_it_verified_over_tcp(mesh, tmp_path):
    """The access log on inbound tcp_proxy filters (controlplane.with_peer_identity_log): a client with a mesh
    certificate and its own TLS to a port the server does not serve meets the mTLS passthrough chain (tcp_proxy);
    the server sidecar's line names the identity it verified, and no line names one for a plaintext client."""
    import socket
    import ssl
    import threading

    from cluster.local import netns
    from probes.netns import entered

    handle = mesh.deploy(scenario("tcp-echo", client_sidecar=False, mode="STRICT"))
    listener = netns.listen(handle.pair.server.name, 9443)  # behind the passthrough chain: a plain TCP server

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(conn.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    try:
        pair = handle.pair
        chain, key = mesh.ca.issue(pair.client.workload.spiffe_id)
        (tmp_path / "c.pem").write_bytes(chain)
        (tmp_path / "k.pem").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
        for tls in (True, False):
            start, proxied = backend_log_size(pair), _tcp_proxied(pair.server)
            with entered(pair.client.name):
                raw = socket.socket()
            with raw, contextlib.suppress(ConnectionResetError):
                raw.settimeout(5)
                raw.connect((pair.server.ip, 9443))
                if tls:
                    with context.wrap_socket(raw) as wrapped:
                        wrapped.sendall(b"x")
                        wrapped.recv(1)
                else:
                    raw.sendall(b"meshproof\n")
                    assert raw.recv(1) == b""  # STRICT: closed (or reset, below)
            extra = {}
            identity = mesh._peer_from_account(pair, start, completed=True, extra=extra)
            if tls:
                assert identity == pair.client.workload.spiffe_id, extra
                assert _tcp_proxied(pair.server) == proxied + 1  # how an httpbin probe knows to read the log
                assert extra["server_sidecar"]["upstream_cluster"] == "InboundPassthroughCluster"
            else:  # STRICT: no chain for plaintext, so no tcp_proxy and no line
                assert identity is None and extra["server_sidecar"] is None, extra
    finally:
        listener.close()
        mesh.teardown(handle)


def backend_log_size(pair) -> int:
    return (pair.server.dir / "envoy.log").stat().st_size


def _run_scoped(mesh, scn):
    """(probe result, the oracle's prediction for the scenario as deployed, in the run's namespaces)."""
    from suites.expectations import expect

    handle = mesh.deploy(scn)
    try:
        return mesh.probe(handle, capture=True), expect(handle.scenario)
    finally:
        mesh.teardown(handle)


@pytest.mark.parametrize("app,port_name", [("tcp-echo", "tcp"), ("banner", "tcp"), ("https", "https")])
def test_istio_mtls_on_a_tcp_port_is_proven_on_the_wire_and_by_the_server_sidecar(mesh, app, port_name):
    """STRICT with sidecars on a TCP (or TLS) port: the client sidecar's tcp_proxy wraps the app's bytes in
    Istio mTLS (ALPN istio-peer-exchange, istio; an outbound_ SNI), the canary never crosses in the clear, and the
    server sidecar's own account names the client (TCP has no XFCC). The https app's own TLS inside is still
    mTLS on the wire."""
    from suites.interpret import compare

    result, prediction = _run_scoped(mesh, scenario(app, mode="STRICT", port_name=port_name))
    wire = result.wire
    run_ns = f"bar-{mesh.run.prefix}"
    assert (result.outcome, wire.verdict) == ("mtls", "mtls"), result.to_json()
    assert wire.alpn == ["istio-peer-exchange", "istio"], wire.alpn
    assert wire.sni == f"outbound_.8000_._.httpbin.{run_ns}.svc.cluster.local"
    assert not wire.canary_in_clear
    assert result.peer_identity == f"spiffe://cluster.local/ns/foo-{mesh.run.prefix}/sa/sleep", result.extra
    assert compare(prediction, result, captured=True).passed, compare(prediction, result, captured=True).message


def test_a_tcp_client_sidecar_sending_plaintext_where_mtls_is_expected_turns_red(mesh, monkeypatch):
    """Broken on purpose: a control plane whose client TCP cluster drops Istio mTLS (raw_buffer instead) under
    PERMISSIVE. The echo still comes back, but the capture shows the canary in the clear, the server sidecar names
    no client, and compare() says PLAINTEXT LEAK against the oracle's mtls."""
    from cluster.local import controlplane
    from reports.categories import PLAINTEXT_LEAK
    from suites.interpret import compare

    raw = {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}
    monkeypatch.setattr(controlplane, "_istio_mutual", lambda *args, **kwargs: raw)
    result, prediction = _run_scoped(mesh, scenario("tcp-echo", mode="PERMISSIVE", port_name="tcp"))
    assert prediction.outcome == "mtls"
    assert (result.outcome, result.wire.verdict, result.wire.canary_in_clear) == ("plaintext", "plaintext", True)
    assert result.peer_identity is None
    verdict = compare(prediction, result, captured=True)
    assert not verdict.passed and verdict.category == PLAINTEXT_LEAK, verdict.message


@pytest.mark.parametrize("port_name", ["tcp", "https"])
def test_httpbin_on_a_tcp_or_tls_port_names_the_client_from_the_server_sidecars_account(mesh, port_name):
    """httpbin behind a tcp_proxy chain sees no X-Forwarded-Client-Cert (an https-named port is TLS, not HTTP):
    the client identity comes from the server sidecar's own account, as the oracle predicts."""
    result = probe(mesh, scenario("httpbin", mode="STRICT", port_name=port_name))
    assert (result.outcome, result.wire.verdict) == ("mtls", "mtls"), result.to_json()
    assert result.peer_identity == f"spiffe://cluster.local/ns/foo-{mesh.run.prefix}/sa/sleep", result.extra
    assert result.extra["server_sidecar"]["peer_uri_san"] == result.peer_identity
