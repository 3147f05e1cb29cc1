"""The capture container's scripts, run here with this machine's sh and a real tcpdump on loopback: the pcap
they copy out is what probes.verdict judges on a cluster. (On a cluster the same scripts run through exec in
the ephemeral container, on the httpbin pod's eth0.)"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from cluster.kube.capture import heartbeat_command, start_script, stop_script
from probes.canary import new_canary
from probes.errors import CaptureError
from probes.verdict import judge

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed (make setup)")


class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = repr(dict(self.headers)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port
    httpd.shutdown()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_tcpdump_left(tmp_path):
    """A test that fails between start and stop must not leave its tcpdump running."""
    yield
    for pid in tmp_path.glob("*.pid"):
        subprocess.run(["sh", "-c", f"kill $(cat {pid}) 2>/dev/null"], check=False)


def sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False)


def request(port: int, canary: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET /headers HTTP/1.1\r\nHost: x\r\nX-Meshproof-Canary: {canary}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        while conn.recv(4096):
            pass


def test_plaintext_probe_is_captured_and_judged(server, tmp_path):
    canary = new_canary()
    started = sh(start_script("lo", server, canary, str(tmp_path)))
    assert started.returncode == 0, started.stdout + started.stderr
    request(server, canary)
    stopped = sh(stop_script(canary, str(tmp_path)))
    assert stopped.returncode == 0, stopped.stderr
    pcap = tmp_path / "copied.pcap"
    pcap.write_bytes(base64.b64decode("".join(stopped.stdout.split())))
    wire = judge(pcap, canary, "127.0.0.1", server)
    assert wire.verdict == "plaintext" and wire.canary_in_clear is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copied.pcap"]  # the script removed its files


def test_capture_of_another_port_is_a_harness_error_not_a_verdict(server, tmp_path):
    canary = new_canary()
    other_port = server + 1 if server < 65535 else server - 1
    assert sh(start_script("lo", other_port, canary, str(tmp_path))).returncode == 0
    request(server, canary)
    stopped = sh(stop_script(canary, str(tmp_path)))
    pcap = tmp_path / "copied.pcap"
    pcap.write_bytes(base64.b64decode("".join(stopped.stdout.split())))
    with pytest.raises(CaptureError, match="no packets"):
        judge(pcap, canary, "127.0.0.1", server)


def test_tcpdump_that_cannot_start_says_why(tmp_path):
    done = sh(start_script("no-such-if0", 8080, "t", str(tmp_path)))
    assert done.returncode == 3
    assert "no-such-if0" in done.stdout


def captured(tmp_path, port: int, canary: str, between) -> object:
    """start_script, `between()`, stop_script, and the copied pcap's path."""
    started = sh(start_script("lo", port, canary, str(tmp_path)))
    assert started.returncode == 0, started.stdout + started.stderr
    between()
    stopped = sh(stop_script(canary, str(tmp_path)))
    assert stopped.returncode == 0, stopped.stderr
    pcap = tmp_path / "copied.pcap"
    pcap.write_bytes(base64.b64decode("".join(stopped.stdout.split())))
    return pcap


def send_heartbeat(port: int) -> None:
    command = heartbeat_command("127.0.0.1", port)
    assert command[:3] == ["setpriv", "--regid=1337", "--clear-groups"]  # out past Istio's ISTIO_OUTPUT
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_the_heartbeat_proves_the_capture_saw_the_path_and_an_absent_probe_is_verdict_none(server, tmp_path):
    canary = new_canary()
    pcap = captured(tmp_path, server, canary, lambda: send_heartbeat(server))  # the probe sent nothing
    wire = judge(pcap, canary, "127.0.0.1", server, heartbeat=True)
    assert wire.verdict == "none"
    sent = captured(tmp_path, server, canary, lambda: (request(server, canary), send_heartbeat(server)))
    assert judge(sent, canary, "127.0.0.1", server, heartbeat=True).verdict == "plaintext"
    # twice in a row from the same source port: no TIME_WAIT stands in the way
    again = captured(tmp_path, server, canary, lambda: (send_heartbeat(server), send_heartbeat(server)))
    assert judge(again, canary, "127.0.0.1", server, heartbeat=True).verdict == "none"


def test_without_its_heartbeat_a_capture_proves_nothing(server, tmp_path):
    canary = new_canary()
    unproven = captured(tmp_path, server, canary, lambda: request(server, canary))
    with pytest.raises(CaptureError, match="did not see its heartbeat"):
        judge(unproven, canary, "127.0.0.1", server, heartbeat=True)
