"""The kube adversary's pieces that run without a cluster: the script handed to the client pod (run here with
this machine's sh and openssl against a local TLS server) and reading the mesh CA from its secret."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes import client

from cluster.kube.adversary import WORKDIR, client_script, mesh_ca_from_cluster
from cluster.local.ca import MeshCA
from probes.tls_client import read_s_client, s_client_command

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


def _server(ca: MeshCA, tmp_path):
    """A TLS 1.3 server on loopback that requires a client certificate of `ca`; answers one HTTP 200."""
    chain, key = ca.issue("spiffe://cluster.local/ns/httpbin/sa/httpbin")
    (tmp_path / "s.pem").write_bytes(chain + key)
    (tmp_path / "ca.pem").write_bytes(ca.root_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "s.pem")
    ctx.load_verify_locations(tmp_path / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(4096)
                tls.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}')
        except (ssl.SSLError, OSError):
            pass
        finally:
            listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


@pytest.mark.parametrize("with_cert,outcome", [(True, "accepted"), (False, "alert")])
def test_client_script_runs_openssl_with_the_minted_credentials_and_leaves_none(tmp_path, with_cert, outcome):
    ca = MeshCA()
    port = _server(ca, tmp_path)
    creds = ca.issue("spiffe://cluster.local/ns/sleep/sa/sleep") if with_cert else None
    tag = f"t{port}{with_cert}"
    script = client_script(s_client_command("127.0.0.1", port, ("TLSv1.2", "TLSv1.3")),
                           "GET / HTTP/1.1\r\nHost: x\r\n\r\n", creds, tag)
    done = subprocess.run(["sh", "-c", script], check=False, capture_output=True, text=True, timeout=20)
    assert read_s_client(done.returncode, done.stdout, done.stderr)["outcome"] == outcome, done.stderr
    assert not list(Path(WORKDIR).glob(f"{tag}.*"))


def test_mesh_ca_is_read_from_istiods_secret_or_refused_clearly():
    ca = MeshCA()
    key = ca.key.private_bytes(*_pkcs8())
    secrets = {"cacerts": {"ca-cert.pem": base64.b64encode(ca.root_pem).decode(),
                           "ca-key.pem": base64.b64encode(key).decode()}}

    def read(name, namespace):
        if name not in secrets:
            raise client.ApiException(status=404)
        return SimpleNamespace(data=secrets[name])

    found = mesh_ca_from_cluster(SimpleNamespace(read_namespaced_secret=read), "istio-system")
    assert found.root_pem == ca.root_pem
    secrets.clear()
    with pytest.raises(LookupError, match="istio-ca-secret, cacerts"):
        mesh_ca_from_cluster(SimpleNamespace(read_namespaced_secret=read), "istio-system")


def _pkcs8():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
