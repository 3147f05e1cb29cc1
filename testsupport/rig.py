"""A throwaway two-namespace rig with real TCP/TLS endpoints, for the wire-proof self-tests and benchmark.

Namespaces `<prefix>-c` (client) and `<prefix>-s` (server) are joined by a veth pair (`<prefix>-c` /
`<prefix>-s`, one end in each), addressed 10.251.0.1/30 and 10.251.0.2/30. Endpoints run in threads of this
process: their sockets are opened inside the namespaces and then served from here. Nothing is left in the
root namespace; `close()` deletes both namespaces, which also removes the veth pair.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.local.lifecycle import RunState
from probes import netns

CLIENT_IP, SERVER_IP = "10.251.0.1", "10.251.0.2"
ISTIO_ALPN = ["istio-peer-exchange", "istio"]
ISTIO_SNI = "outbound_.8000_._.httpbin.ns.svc.cluster.local"
SERVER_ID = "spiffe://cluster.local/ns/ns/sa/httpbin"
CLIENT_ID = "spiffe://cluster.local/ns/ns/sa/sleep"
IO_TIMEOUT_S = 5.0


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


# --- certificates --------------------------------------------------------------------------------------

@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_pki(directory: Path) -> Pki:
    """An EC P-256 root and two leaves shaped like a mesh CA's: empty subject, a critical URI SAN only."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshproof wire-proof rig")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths = {}
    for role, spiffe in (("server", SERVER_ID), ("client", CLIENT_ID)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        paths[f"{role}_cert"] = directory / f"{role}.pem"
        paths[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{role}_key"] = directory / f"{role}-key.pem"
        _write_key(key, paths[f"{role}_key"])
    return Pki(ca=directory / "ca.pem", **paths)


def server_tls(pki: Pki, mutual: bool, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if mutual else ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    return ctx


def client_tls(pki: Pki, mutual: bool, alpn: list[str], max_version=ssl.TLSVersion.TLSv1_3) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the mesh checks the URI SAN, not the SNI name
    ctx.load_verify_locations(pki.ca)
    if mutual:
        ctx.load_cert_chain(pki.client_cert, pki.client_key)
    ctx.maximum_version = max_version
    ctx.set_alpn_protocols(alpn)
    return ctx


# --- endpoints -----------------------------------------------------------------------------------------

def http_request(canary: str, path: str = "/headers") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: httpbin.ns.svc.cluster.local:8000\r\nUser-Agent: meshproof\r\n"
            f"X-Meshproof-Canary: {canary}\r\nConnection: close\r\n\r\n").encode()


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def answer_echo(conn: socket.socket) -> None:
    """httpbin-like: 200 with the request echoed in the body (so the canary travels both ways)."""
    body = _read_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))


def answer_large(conn: socket.socket, size: int = 200_000) -> None:
    """A 200 whose body ends with the request's echo after `size` filler bytes: many segments, GSO."""
    head = _read_head(conn)
    body = b"x" * size + head
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


def answer_400(conn: socket.socket) -> None:
    _read_head(conn)
    answer_400_body(conn)


def answer_400_at_once(conn: socket.socket) -> None:
    """A plaintext HTTP server given bytes it cannot parse (e.g. a ClientHello) answers 400 at once."""
    conn.recv(65536)
    answer_400_body(conn)


def answer_400_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\ncontent-type: text/plain\r\n"
                 b"connection: close\r\n\r\nBad Request")


def answer_keepalive(conn: socket.socket) -> None:
    """Answer requests on one connection until the client closes it (a pooled upstream connection)."""
    while head := _read_head(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(head), head))


def answer_upload(conn: socket.socket) -> None:
    """Read a request with a Content-Length body, answer 200 with the body size."""
    head = _read_head(conn)
    headers, _, body = head.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in headers.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length and (chunk := conn.recv(65536)):
        body += chunk
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%d"
                 % (len(str(len(body))), len(body)))


def answer_nothing(conn: socket.socket) -> None:
    """Like a STRICT sidecar given plaintext: read the request, close without a word."""
    _read_head(conn)


@dataclass
class Exchange:
    response: bytes
    alpn: str | None = None
    tls_version: str | None = None


class Rig:
    def __init__(self):
        # Recorded like a mesh run, so `meshproof clean` removes the pair after a killed test or bench.
        self._run = RunState()
        self._run.create()
        self.prefix = self._run.prefix
        self.client_ns, self.server_ns = f"{self.prefix}-c", f"{self.prefix}-s"
        self.server_iface = f"{self.prefix}-s"
        self._servers: list[socket.socket] = []
        try:
            for ns in (self.client_ns, self.server_ns):
                self._run.record("netns", ns)
                _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", f"{self.prefix}-c", "netns", self.client_ns, "type", "veth",
                 "peer", "name", f"{self.prefix}-s", "netns", self.server_ns)
            for ns, ip in ((self.client_ns, CLIENT_IP), (self.server_ns, SERVER_IP)):
                _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", f"{self.prefix}-{ns[-1]}")
                _run("ip", "-n", ns, "link", "set", f"{self.prefix}-{ns[-1]}", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._run.teardown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def serve(self, port: int, answer: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None) -> None:
        """Accept connections on SERVER_IP:port in the server namespace, each answered in its own thread."""
        with netns.entered(self.server_ns):
            listener = socket.create_server((SERVER_IP, port))
        self._servers.append(listener)

        def handle(conn: socket.socket) -> None:
            conn.settimeout(IO_TIMEOUT_S)
            try:
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                answer(conn)
            except (OSError, ssl.SSLError):
                pass  # a refused handshake is part of what the tests observe
            finally:
                conn.close()

        def accept_loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return  # listener closed
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

        threading.Thread(target=accept_loop, name=f"rig-{port}", daemon=True).start()

    def connect(self, port: int) -> socket.socket:
        with netns.entered(self.client_ns):
            conn = socket.create_connection((SERVER_IP, port), timeout=IO_TIMEOUT_S)
        return conn

    def exchange(self, port: int, request: bytes, tls: ssl.SSLContext | None = None,
                 sni: str | None = None) -> Exchange:
        """Send `request` from the client namespace and read the answer until the server closes."""
        conn = self.connect(port)
        alpn = version = None
        try:
            if tls is not None:
                conn = tls.wrap_socket(conn, server_hostname=sni)
                alpn, version = conn.selected_alpn_protocol(), conn.version()
            conn.sendall(request)
            return Exchange(read_until_close(conn), alpn, version)
        except (ConnectionResetError, ssl.SSLError) as err:
            return Exchange(f"error: {err}".encode(), alpn, version)
        finally:
            conn.close()


def read_until_close(conn: socket.socket) -> bytes:
    response = b""
    while chunk := conn.recv(65536):
        response += chunk
    return response


def read_response(conn: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length, leaving the connection open."""
    head = _read_head(conn)
    headers, _, body = head.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in headers.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(65536)
    return headers + b"\r\n\r\n" + body
