"""The capture container's scripts, run here with this machine's sh and a real tcpdump on loopback: the pcap
they copy out is what probes.verdict judges on a cluster. (On a cluster the same scripts run through exec in
the ephemeral container, on the httpbin pod's eth0.)"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from cluster.kube.capture import heartbeat_command, start_script, stop_script
from probes.canary import new_canary
from probes.errors import CaptureError
from probes.verdict import judge
from tests.test_kube_faults import NetnsPair

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



def captured(tmp_path, port: int, canary: str, between, run=sh, interface: str = "lo") -> object:
    """start_script, `between()`, stop_script (each `run`, e.g. in a network namespace), and the pcap copied out."""
    started = run(start_script(interface, port, canary, str(tmp_path)))
    assert started.returncode == 0, started.stdout + started.stderr
    between()
    stopped = run(stop_script(canary, str(tmp_path)))
    assert stopped.returncode == 0, stopped.stderr
    pcap = tmp_path / "copied.pcap"
    pcap.write_bytes(base64.b64decode("".join(stopped.stdout.split())))
    return pcap


@pytest.fixture
def pods():
    """A client and a server network namespace joined by eth0 (tests/test_kube_faults.py): the heartbeat's
    frames stay off this machine's loopback, where other captures listen."""
    pair = NetnsPair()
    try:
        yield pair
    finally:
        pair.close()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_the_heartbeat_proves_the_capture_saw_the_path_and_an_absent_probe_is_verdict_none(pods, tmp_path):
    canary, port = new_canary(), 8080

    def in_server(script: str) -> subprocess.CompletedProcess:
        return pods.run(pods.server, ["sh", "-c", script])

    def heartbeat() -> None:
        command = heartbeat_command(pods.server_ip, port)
        assert command[:3] == ["setpriv", "--regid=1337", "--clear-groups"]  # out past Istio's ISTIO_OUTPUT
        done = pods.run(pods.client, [sys.executable if c == "python3" else c for c in command])
        assert done.returncode == 0, done.stderr

    def probe() -> None:
        send = (f"import socket; s = socket.create_connection(('{pods.server_ip}', {port}), timeout=5); "
                f"s.sendall(b'meshproof-canary {canary}\\n'); s.recv(100); s.close()")
        assert pods.run(pods.client, [sys.executable, "-c", send]).returncode == 0

    pcap = captured(tmp_path, port, canary, heartbeat, in_server, "eth0")  # the probe sent nothing
    assert judge(pcap, canary, pods.server_ip, port, heartbeat=True).verdict == "none"
    with pytest.raises(CaptureError, match="no packets"):  # the same silence without a heartbeat proves nothing
        judge(captured(tmp_path, port, canary, lambda: None, in_server, "eth0"), canary, pods.server_ip, port,
              heartbeat=True)
    echo = subprocess.Popen(["ip", "netns", "exec", pods.server, sys.executable, "-c",
                             ("import socket\ns = socket.create_server(('', 8080))\nwhile True:\n"
                              "    c, _ = s.accept()\n    c.sendall(c.recv(100))\n    c.close()")])
    try:
        listening = (f"import socket, time\nfor _ in range(100):\n    try:\n        socket.create_connection("
                     f"('{pods.server_ip}', {port}), 1).close()\n        break\n    except OSError:\n"
                     "        time.sleep(0.1)\nelse:\n    raise SystemExit(1)")
        assert pods.run(pods.client, [sys.executable, "-c", listening]).returncode == 0
        sent = captured(tmp_path, port, canary, lambda: (probe(), heartbeat(), heartbeat()), in_server, "eth0")
    finally:
        echo.kill()
        echo.wait(10)
    assert judge(sent, canary, pods.server_ip, port, heartbeat=True).verdict == "plaintext"  # twice: no TIME_WAIT


def test_without_its_heartbeat_a_capture_proves_nothing(server, tmp_path):
    canary = new_canary()
    unproven = captured(tmp_path, server, canary, lambda: request(server, canary))
    with pytest.raises(CaptureError, match="did not see its heartbeat"):
        judge(unproven, canary, "127.0.0.1", server, heartbeat=True)
