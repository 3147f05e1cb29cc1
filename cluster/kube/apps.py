"""The server apps a scenario names (server.app) as pods on a cluster, where its probe goes, and how each
probe's answer reads in the oracle's words.

- httpbin: Istio's samples/httpbin (go-httpbin), probed with curl over HTTP as before;
- https: the same go-httpbin serving its own self-signed TLS, probed like `curl -k`;
- tcp-echo: Istio's samples/tcp-echo server (it answers each line with "<prefix> <line>");
- banner: the reference mesh's server-first program (cluster/local/tcp_servers.py) in a pinned Python.
Both TCP apps are probed by the reference mesh's client (probes/tcp_probe.py), run by that Python in a second
container of the sleep pod: the same bytes, the same deadline, the same account on both meshes.

TCP carries no X-Forwarded-Client-Cert, so the server sidecar's own account of the peer it authenticated is read
from an access log the harness adds to its inbound tcp_proxy filters (cluster/manifests/peer-identity-log.yaml).
"""

from __future__ import annotations

from pathlib import Path

from meshproof.scenario import Scenario, Server
from probes.heartbeat import HEARTBEAT_SOURCE_PORT
from probes.identity import PEER_LOG_MARK, account_identity, peer_log_entries, server_account  # noqa: F401 - shared with the reference mesh
from probes.tcp_probe import PROBE_DEADLINE_S, app_arguments

ROOT = Path(__file__).resolve().parents[2]
# Read as text and sent to the pod's Python, never imported here: both are standard-library-only programs.
BANNER_PROGRAM = ROOT / "cluster" / "local" / "tcp_servers.py"
TCP_PROBE_PROGRAM = ROOT / "probes" / "tcp_probe.py"
TCP_APPS = ("tcp-echo", "banner")
APPS = ("httpbin", "https", *TCP_APPS)  # what the kube backend deploys and probes
# What the kube backend handles of each scenario dimension (meshproof.scenario.require_supported; None: every
# valid value): every app, any port name (Istio reads the protocol from it), headless Services, ClusterIP and pod-IP
# requests.
HANDLES = {"server.app": APPS, "server.port_name": None, "server.headless": None, "request.to": None}
# Istio's tcp-echo answers "<prefix> <line>" (samples/tcp-echo/src/main.go); the reference mesh's echoes alike
ECHO_PREFIX = "meshproof-echo"
PROBE_CONTAINER = "tcp-probe"
PROBE_PATH = "/tmp/tcp_probe.py"  # where the container writes the program at start (cluster/manifests/tcp-probe.yaml)


def calls_tcp_app(servers: list[Server]) -> bool:
    """Whether a sleep pod calling these servers needs the TCP probe container."""
    return any(s.app in TCP_APPS for s in servers)


def logs_peer_identity(server: Server) -> bool:
    """Whether the server sidecar gets the peer-identity access log: any shape but the default HTTP httpbin,
    whose app reads the client's identity from X-Forwarded-Client-Cert."""
    return server.sidecar and (server.app != "httpbin" or (server.port_name, server.app_protocol) != ("http", None))


def destination(scenario: Scenario, server_namespace: str, server_ip: str, cluster_ip: str = "") -> tuple[str, int]:
    """(host, port) the probe connects to: the Service's name and port (a headless name resolves to the pod's
    IP), its ClusterIP (spec.clusterIP, as read from the cluster) and port (request.to: cluster-ip), or the server
    pod's IP and target port (request.to: pod-ip)."""
    server = scenario.server
    if scenario.request.to == "pod-ip":
        return server_ip, server.target_port
    if scenario.request.to == "cluster-ip":
        if not cluster_ip:
            raise ValueError(f"request.to cluster-ip: the Service httpbin in {server_namespace} has no ClusterIP read")
        return cluster_ip, server.service_port
    return f"httpbin.{server_namespace}.svc.cluster.local", server.service_port


def wire_port(scenario: Scenario) -> int:
    """The server pod's port the hop arrives on, where the capture looks: the target port, except for a
    headless Service, where the client (or its sidecar's ORIGINAL_DST cluster) connects to the pod's IP on the
    port it asked for, the Service port."""
    server = scenario.server
    if scenario.server.headless and scenario.request.to == "service":
        return server.service_port
    return server.target_port


def tcp_probe_command(app: str, host: str, port: int, canary: str) -> list[str]:
    """The probe client in the sleep pod's tcp-probe container, as the reference mesh runs it."""
    return ["python3", PROBE_PATH, host, str(port), canary, *app_arguments(app, ECHO_PREFIX)]


def curl_deadline_s(app: str) -> float:
    """https probes share the TCP probe client's deadline (as on the reference mesh); HTTP probes keep 10 s."""
    return PROBE_DEADLINE_S if app == "https" else 10.0


def without_heartbeat(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    """The peer-identity lines but the capture heartbeat's: on kube it connects from HEARTBEAT_SOURCE_PORT
    (cluster/kube/capture.py), and a PERMISSIVE server sidecar proxies and logs it like any connection."""
    return [e for e in entries if not str(e.get("downstream") or "").endswith(f":{HEARTBEAT_SOURCE_PORT}")]
