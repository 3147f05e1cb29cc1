"""The TCP probe client (probes/tcp_probe.py) against the reference mesh's TCP apps (cluster/local/tcp_servers.py)
run on loopback, and against servers that misbehave on purpose: each result word must be reachable."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster.backend import tcp_outcome
from cluster.local.tcp_servers import ECHO_PREFIX, GREETING
from probes import tcp_probe

ROOT = Path(__file__).resolve().parents[1]
CANARY = "mp-canary-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["tcp-echo", "banner"])
def app(request):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "cluster" / "local" / "tcp_servers.py"), request.param,
                             str(port)])
    try:
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.01)
        yield request.param, port
    finally:
        proc.kill()
        proc.wait()


def test_each_app_completes_with_the_client_its_protocol_needs(app):
    name, port = app
    prefix = "" if name == "banner" else ECHO_PREFIX.decode()
    account = tcp_probe.probe("127.0.0.1", port, CANARY, wait_greeting=name == "banner", echo_prefix=prefix)
    assert account["result"] == "completed", account
    assert account["answer"] == (f"{prefix} " if prefix else "") + tcp_probe.canary_line(CANARY).decode()
    assert account["greeting"] == (GREETING.decode() if name == "banner" else None)


def test_tcp_echo_answers_what_is_not_a_line_protocol_with_what_is_not_tls_either(app):
    """As Istio's samples/tcp-echo: a ClientHello (bytes up to a newline) comes back behind the prefix, so a
    client sidecar's TLS handshake fails at once instead of reading a TLS record header and waiting."""
    name, port = app
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if name == "banner":
            assert sock.recv(len(GREETING)) == GREETING
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\n")
        answer = sock.recv(100)
    assert answer == (b"" if name == "banner" else ECHO_PREFIX + b" ") + b"\x16\x03\x01\x02\x00\x01\n"


def test_the_canary_line_is_not_the_start_of_an_http_request():
    line = tcp_probe.canary_line(CANARY)
    assert line.endswith(b"\n") and CANARY.encode() in line and not line.split()[1].startswith(b"/")


def serve_once(behaviour) -> int:
    """A server on loopback that handles one connection with `behaviour(conn)`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def run():
        conn, _ = listener.accept()
        try:
            behaviour(conn)
        finally:
            conn.close()
            listener.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1]


def test_a_refused_connection_is_reset():
    account = tcp_probe.probe("127.0.0.1", free_port(), CANARY, wait_greeting=False)
    assert (account["result"], account["step"]) == ("reset", "connect"), account
    assert "ConnectionRefused" in account["detail"]


def test_a_server_that_closes_without_the_echo_is_reset():
    port = serve_once(lambda conn: conn.recv(100))
    account = tcp_probe.probe("127.0.0.1", port, CANARY, wait_greeting=False)
    assert (account["result"], account["step"]) == ("reset", "echo"), account


def test_a_silent_server_is_a_timeout_at_the_client_deadline():
    done = threading.Event()
    port = serve_once(lambda conn: done.wait(5))
    try:
        account = tcp_probe.probe("127.0.0.1", port, CANARY, wait_greeting=True, deadline_s=0.3)
    finally:
        done.set()
    assert (account["result"], account["step"]) == ("timeout", "greeting"), account


def test_another_answer_then_a_close_is_reset_with_the_answer_kept():
    """A proxy's HTTP codec answering the canary line with a 400 and closing: a closed connection."""
    answer = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n\r\nBad Request"
    port = serve_once(lambda conn: (conn.recv(100), conn.sendall(answer)))
    account = tcp_probe.probe("127.0.0.1", port, CANARY, wait_greeting=False)
    assert (account["result"], account["answer"]) == ("reset", answer.decode()), account
    assert tcp_outcome(account["result"], account["answer"], None, None) == "reset"


def test_another_answer_on_a_connection_that_stays_open_is_answered():
    done = threading.Event()
    port = serve_once(lambda conn: (conn.recv(100), conn.sendall(b"HTTP/1.1 400 Bad Request\r\n"), done.wait(5)))
    try:
        account = tcp_probe.probe("127.0.0.1", port, CANARY, wait_greeting=False, deadline_s=0.5)
    finally:
        done.set()
    assert account["result"] == "answered", account
    assert tcp_outcome(account["result"], account["answer"], None, None) == "400"
    assert tcp_outcome("answered", "hello\n", None, None) == "answered"


@pytest.mark.parametrize("result,wire,peer,outcome", [
    ("completed", "plaintext", None, "plaintext"),
    ("completed", "mtls", "spiffe://cluster.local/ns/a/sa/sleep", "mtls"),
    ("completed", "mtls", None, "mtls"),  # the wire's Istio marks decide; the identity is judged on its own
    ("completed", "app-tls", None, "app-tls"),
    ("completed", "app-tls", "spiffe://cluster.local/ns/a/sa/sleep", "mtls"),  # MUTUAL terminated by the sidecar
    ("completed", None, None, "plaintext"),  # no capture, no identity: nothing shows TLS
    ("completed", "none", None, "completed-none"),  # an echo with nothing on the wire is outside the words
    ("reset", "none", None, "reset"),
    ("timeout", None, None, "timeout"),
    ("error", None, None, "error"),
])
def test_tcp_outcome(result, wire, peer, outcome):
    assert tcp_outcome(result, None, wire, peer) == outcome


def test_the_command_line_prints_one_account_and_exits_with_its_code():
    port = free_port()
    proc = subprocess.run([sys.executable, str(ROOT / "probes" / "tcp_probe.py"), "127.0.0.1", str(port), CANARY],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == tcp_probe.EXIT_CODES["reset"] and '"result": "reset"' in proc.stdout
    usage = subprocess.run([sys.executable, str(ROOT / "probes" / "tcp_probe.py"), "x"], capture_output=True,
                           text=True, check=False)
    assert usage.returncode == 64 and "usage" in usage.stderr


def test_an_echo_with_the_servers_prefix_completes_at_once_when_the_client_expects_it():
    """Istio's samples/tcp-echo answers "<prefix> <line>" and keeps the connection open."""
    done = threading.Event()
    line = tcp_probe.canary_line(CANARY)
    port = serve_once(lambda conn: (conn.recv(100), conn.sendall(b"hello " + line), done.wait(5)))
    try:
        account = tcp_probe.probe("127.0.0.1", port, CANARY, wait_greeting=False, echo_prefix="hello")
    finally:
        done.set()
    assert account["result"] == "completed", account  # without the prefix: "answered" at the deadline
    proc = subprocess.run([sys.executable, str(ROOT / "probes" / "tcp_probe.py"), "127.0.0.1", str(free_port()),
                           CANARY, "--echo-prefix", "hello"], capture_output=True, text=True, check=False)
    assert '"result": "reset"' in proc.stdout, proc.stderr
