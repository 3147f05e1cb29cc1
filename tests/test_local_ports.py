"""The reference mesh's TCP, sniffed and headless Service ports on real Envoys, with a small socket app in
the server pod instead of httpbin (its pair is removed afterwards).

Each test checks one kind of chain the control plane compiles from the Service port's name
(cluster/local/controlplane.py CHAIN_OPTIONS and the outbound listeners): a TCP port under STRICT refuses
plaintext and carries mTLS, PERMISSIVE TCP passes an app's own TLS through, an auto port keeps a server-first
client waiting while a DISABLE TCP port greets it, a headless Service is reached on the pod's own address.
Needs root; skipped with that reason otherwise.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from cluster.factory import started
from cluster.local import ca as mesh_ca
from cluster.local import netns
from cluster.local.backend import LocalBackend
from meshproof.scenario import scenario_from_dict
from probes.identity import peer_log_entries

pytestmark = [pytest.mark.root, pytest.mark.mesh,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]

GREETING = b"220 meshproof-banner ready\r\n"
LINE = b"meshproof-canary ports-test\n"
WAIT_S = 4.0  # how long a client waits for a byte that, in a hanging cell, never comes


def scenario(port_name, pa_mode=None, client_sidecar=True, headless=False, port=8000):
    docs = [] if pa_mode is None else [{
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "bar"}, "spec": {"mtls": {"mode": pa_mode}}}]
    # A headless Service has no port translation: its clients dial the target port, so the two agree here.
    return scenario_from_dict({
        "client": {"namespace": "foo", "sidecar": client_sidecar},
        "server": {"namespace": "bar", "port_name": port_name, "headless": headless,
                   "service_port": 8080 if headless else port, "target_port": 8080},
        "resources": docs}, source="test")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with started(LocalBackend(out_dir=tmp_path_factory.mktemp("local-ports"))) as backend:
        yield backend


def echo(conn: socket.socket) -> None:
    while data := conn.recv(4096):
        conn.sendall(data)


def banner(conn: socket.socket) -> None:
    conn.sendall(GREETING)  # before reading anything, as MySQL or SMTP servers do
    echo(conn)


@contextmanager
def own_app(mesh, scn, serve, tls: ssl.SSLContext | None = None):
    """The scenario deployed with `serve(connection)` on the server's target port in place of httpbin."""
    handle = mesh.deploy(scn)
    pair = handle.pair
    stop = threading.Event()
    listener = None
    try:
        pair.server.app.stop()
        listener = _listen_once_free(pair.server.name, pair.server.workload.target_port)
        listener.settimeout(0.2)

        def accept_loop():
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                threading.Thread(target=_serve_one, args=(conn, serve, tls), daemon=True).start()

        threading.Thread(target=accept_loop, daemon=True).start()
        yield handle
    finally:
        stop.set()
        if listener:
            listener.close()
        mesh.teardown(handle)
        mesh._destroy_pair(pair)  # its httpbin is gone: never reuse it


def _listen_once_free(pod: str, port: int) -> socket.socket:
    """The port, once httpbin's worker (killed with its master, which alone was waited for) lets it go."""
    for _ in range(100):
        try:
            return netns.listen(pod, port)
        except OSError:
            threading.Event().wait(0.05)
    return netns.listen(pod, port)


def _serve_one(conn: socket.socket, serve, tls: ssl.SSLContext | None) -> None:
    conn.settimeout(10)
    try:
        serve(tls.wrap_socket(conn, server_side=True) if tls else conn)
    except OSError:
        pass
    finally:
        conn.close()


def dial(handle, to: str = "service") -> socket.socket:
    """A connection from the client pod (intercepted by its sidecar, if any) to the Service or the pod IP."""
    server = handle.pair.server
    if to == "pod-ip":
        return netns.connect(handle.pair.client.name, server.ip, server.workload.target_port, timeout=WAIT_S)
    address = handle.pair.vip if not server.workload.headless else _resolve(handle)
    return netns.connect(handle.pair.client.name, address, server.workload.service_port, timeout=WAIT_S)


def _resolve(handle) -> str:
    """The Service name as the client pod's hosts file resolves it."""
    hosts = Path("/etc/netns", handle.pair.client.name, "hosts").read_text().split("\n")
    return next(line.split()[0] for line in hosts if line.endswith(" " + handle.pair.server.workload.host))


def exchange(sock: socket.socket, greeting_first: bool = False, expected: bytes = LINE) -> bytes | str:
    """Send LINE (after reading the greeting, if `greeting_first`) and read up to `expected`'s length: the
    bytes, "closed", or "nothing" (the client's deadline passed)."""
    received = b""
    try:
        if greeting_first:
            received = sock.recv(len(GREETING))
            if not received:
                return "closed"
        sock.sendall(LINE)
        while len(received) < len(expected):
            chunk = sock.recv(4096)
            if not chunk:
                return "closed"
            received += chunk
        return received
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except TimeoutError:
        return "nothing"
    finally:
        sock.close()


def peer_log(handle) -> dict:
    """The server sidecar's account of the one TCP connection of this pair (probes/identity.py's log line,
    written once the connection closes, flushed every 20 ms)."""
    for _ in range(100):
        entries = peer_log_entries((handle.pair.server.dir / "envoy.log").read_text(errors="replace"))
        if entries:
            break
        threading.Event().wait(0.05)
    [entry] = entries
    return entry


def counter(handle, pattern: str) -> int:
    return sum(handle.pair.server.sidecar.counters(pattern).values())


def sleep_id(mesh) -> str:
    return f"spiffe://cluster.local/ns/foo-{mesh.run.prefix}/sa/sleep"


def test_a_tcp_port_under_strict_refuses_plaintext_and_carries_mtls_with_the_peer_in_the_log(mesh):
    with own_app(mesh, scenario("tcp", "STRICT", client_sidecar=False), echo) as handle:
        before = counter(handle, r"no_filter_chain_match$")
        assert exchange(dial(handle)) == "closed"
        assert counter(handle, r"no_filter_chain_match$") == before + 1
    with own_app(mesh, scenario("tcp", "STRICT"), echo) as handle:
        assert exchange(dial(handle)) == LINE
        entry = peer_log(handle)
        assert entry["peer_uri_san"] == sleep_id(mesh) and entry["tls_version"] == "TLSv1.3"
        assert entry["sni"] == f"outbound_.8000_._.httpbin.bar-{mesh.run.prefix}.svc.cluster.local"


def _app_tls() -> tuple[ssl.SSLContext, bytes]:
    cert, key = mesh_ca.self_signed("spiffe://app.example/own-tls")
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "c.pem").write_bytes(cert)
        Path(folder, "k.pem").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(folder, "c.pem"), Path(folder, "k.pem"))
    return context, ssl.PEM_cert_to_DER_cert(cert.decode())


def _curl_k_client() -> ssl.SSLContext:
    """Like curl -k: ALPN h2,http/1.1, no client certificate, no verification."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


@pytest.mark.parametrize(("port_name", "passes"), [("tcp", True), ("https", True), ("web", True),
                                                   ("http", False)])
def test_permissive_passes_an_apps_own_tls_through_on_tcp_and_auto_ports_only(mesh, port_name, passes):
    server_tls, app_cert = _app_tls()
    with own_app(mesh, scenario(port_name, "PERMISSIVE", client_sidecar=False), echo, server_tls) as handle:
        raw = dial(handle)
        try:
            sock = _curl_k_client().wrap_socket(raw)
        except (ssl.SSLError, ConnectionResetError):
            assert not passes, "the TLS handshake failed, but this port keeps a TLS passthrough chain"
            return
        assert passes, "an HTTP port has no chain for TLS without Istio's ALPN"
        assert sock.getpeercert(binary_form=True) == app_cert  # the app's certificate, not the sidecar's
        assert exchange(sock) == LINE
        entry = peer_log(handle)
        # Not terminated: the sidecar saw no TLS of its own and no client certificate.
        assert entry["peer_uri_san"] in ("-", None, "") and entry["tls_version"] in ("-", None, "")


@pytest.mark.parametrize(("port_name", "pa_mode", "client_sidecar", "greets"), [
    ("tcp", "DISABLE", False, True),  # no inspector on the port: the greeting comes at once
    ("tcp", "STRICT", True, True),  # the client sidecar's ClientHello satisfies the server's TLS inspector
    ("web", "PERMISSIVE", False, False),  # the server's TLS and HTTP inspectors wait for the client
    ("tcp", "PERMISSIVE", False, False),  # its TLS inspector alone waits too
    ("web", "DISABLE", True, False),  # the client sidecar's HTTP inspector waits (protocolDetectionTimeout 0s)
])
def test_a_server_first_client_is_greeted_only_where_no_inspector_waits(mesh, port_name, pa_mode, client_sidecar,
                                                                        greets):
    with own_app(mesh, scenario(port_name, pa_mode, client_sidecar), banner) as handle:
        got = exchange(dial(handle), greeting_first=True, expected=GREETING + LINE)
        assert got == (GREETING + LINE if greets else "nothing")
        if not greets:
            # Not broken, only waiting: once the client speaks first, the greeting and the echo come back.
            assert exchange(dial(handle), expected=GREETING + LINE) == GREETING + LINE


def test_a_headless_service_resolves_to_the_pod_and_gets_mtls_on_its_own_listener(mesh):
    with own_app(mesh, scenario("tcp", "STRICT", headless=True), echo) as handle:
        assert _resolve(handle) == handle.pair.server.ip
        rules = netns_iptables(handle.pair.client.name)
        assert "DNAT" not in rules  # nothing translates a headless Service
        assert exchange(dial(handle)) == LINE
        assert peer_log(handle)["peer_uri_san"] == sleep_id(mesh)


def test_a_pod_ip_request_passes_through_in_plaintext_and_strict_refuses_it(mesh):
    """No listener matches the pod's IP and target port: the client sidecar's PassthroughCluster sends
    plaintext, which STRICT refuses; PERMISSIVE takes it in cleartext."""
    with own_app(mesh, scenario("tcp", "STRICT"), echo) as handle:
        assert exchange(dial(handle, to="pod-ip")) == "closed"
    with own_app(mesh, scenario("tcp", "PERMISSIVE"), echo) as handle:
        assert exchange(dial(handle, to="pod-ip")) == LINE
        assert peer_log(handle)["peer_uri_san"] in ("-", None, "")


def netns_iptables(pod: str) -> str:
    import subprocess

    return subprocess.run(["ip", "netns", "exec", pod, "iptables-save", "-t", "nat"], check=True,
                          capture_output=True, text=True).stdout
