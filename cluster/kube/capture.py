"""Packet capture inside a pod's network namespace on a real cluster.

An ephemeral container (pinned tcpdump image, NET_RAW) is added once to the httpbin pod; for each probe
tcpdump runs in it on eth0, the pod's side of the node link where traffic from other pods arrives before
any sidecar redirect, and the pcap is copied out (base64 over exec). Classification is the probes/ code.
"""

from __future__ import annotations

import base64
import ipaddress
import shlex
import time

from cluster.kube.client import Cluster, exec_in
from cluster.kube.render import Images, capture_container
from probes.heartbeat import HEARTBEAT_SOURCE_PORT, heartbeat_port

CONTAINER = "meshproof-capture"
WORKDIR = "/tmp/meshproof"
PROXY_GID = 1337  # Istio's iptables let the proxy's group out unredirected (ISTIO_OUTPUT --gid-owner RETURN)


class CaptureError(RuntimeError):
    """The harness could not capture: never a verdict about the mesh."""


class PodCapture:
    def __init__(self, cluster: Cluster, namespace: str, pod: str, port: int, images: Images,
                 interface: str = "eth0", peer: str | None = None):
        self.cluster, self.namespace, self.pod, self.port = cluster, namespace, pod, port
        self.images, self.interface = images, interface
        self.peer = peer  # only this client's flows (a co-deployed server serves other clients' probes too)

    def ensure_container(self, timeout_s: float = 120.0) -> None:
        """Add the capture container unless it is there, and wait until it runs."""
        pod = self.cluster.core.read_namespaced_pod(self.pod, self.namespace)
        if not any(c.name == CONTAINER for c in (pod.spec.ephemeral_containers or [])):
            body = {"spec": {"ephemeralContainers": [capture_container(CONTAINER, self.images)]}}
            self.cluster.core.patch_namespaced_pod_ephemeralcontainers(self.pod, self.namespace, body)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pod = self.cluster.core.read_namespaced_pod(self.pod, self.namespace)
            status = next((s for s in (pod.status.ephemeral_container_statuses or []) if s.name == CONTAINER), None)
            if status and status.state and status.state.running:
                return
            waiting = status.state.waiting if status and status.state else None
            if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                raise CaptureError(f"capture image {self.images.capture}: {waiting.reason}: {waiting.message}")
            time.sleep(1.0)
        raise CaptureError(f"capture container in {self.namespace}/{self.pod} not running after {timeout_s:g} s "
                           "(are ephemeral containers allowed? see meshproof doctor --mesh kube)")

    def start(self, tag: str) -> None:
        script = start_script(self.interface, self.port, tag, peer=self.peer)
        result = exec_in(self.cluster, self.namespace, self.pod, CONTAINER, ["sh", "-c", script], timeout_s=20)
        if result.exit_code != 0:
            raise CaptureError(f"tcpdump did not start in {self.namespace}/{self.pod}: "
                               f"{(result.stdout + result.stderr).strip()[:300]}")

    def heartbeat(self, server_ip: str, server_port: int) -> None:
        """Send the capture's heartbeat from this (the client's) pod to the server pod (heartbeat_command)."""
        result = exec_in(self.cluster, self.namespace, self.pod, CONTAINER, heartbeat_command(server_ip, server_port),
                         timeout_s=20)
        if result.exit_code != 0:
            raise CaptureError(f"the heartbeat from {self.namespace}/{self.pod} did not go out: "
                               f"{(result.stdout + result.stderr).strip()[:300]}")

    def stop(self, tag: str) -> bytes:
        """Stop tcpdump (it flushes on SIGINT) and return the pcap bytes."""
        result = exec_in(self.cluster, self.namespace, self.pod, CONTAINER, ["sh", "-c", stop_script(tag)],
                         timeout_s=30)
        if result.exit_code != 0:
            raise CaptureError(f"could not copy the pcap out of {self.namespace}/{self.pod}: "
                               f"{result.stderr.strip()[:300]}")
        return base64.b64decode("".join(result.stdout.split()))


# The scripts run inside the capture container (busybox or any POSIX sh); they are plain functions so the
# self-tests run them with this machine's sh and tcpdump.

def start_script(interface: str, port: int, tag: str, workdir: str = WORKDIR, peer: str | None = None) -> str:
    """Start tcpdump in the background and return once it listens (exit 3 with its log, and no tcpdump left
    running, if it does not).

    --immediate-mode: without it libpcap hands packets over in blocks, and a SIGINT drops the last one. The
    filter takes the probe's port and the heartbeat's (heartbeat_command)."""
    pcap, log, pid = _paths(tag, workdir)
    # Any line but a warning or "listening on" is an error; "listening on" is looked for again after the
    # loop, since tcpdump may write it between the loop's two greps.
    bpf = f"tcp and (port {int(port)} or port {heartbeat_port(int(port))})" \
        + (f" and host {ipaddress.ip_address(peer)}" if peer else "")
    return (f"mkdir -p {shlex.quote(workdir)} && rm -f {pcap} {log} && "
            f"(setsid tcpdump -i {shlex.quote(interface)} --immediate-mode -U -s 0 -w {pcap} {shlex.quote(bpf)} "
            f"> {log} 2>&1 & "
            f"echo $! > {pid}) && "
            f"for i in $(seq 200); do grep -q 'listening on' {log} && exit 0; "
            f"grep -v -e WARNING -e 'listening on' {log} | grep -q . && break; sleep 0.05; done; "
            f"grep -q 'listening on' {log} && exit 0; kill $(cat {pid}) 2>/dev/null; cat {log}; exit 3")


def stop_script(tag: str, workdir: str = WORKDIR) -> str:
    """Let tcpdump catch up, stop it with SIGINT (it flushes), wait for it, print the pcap as base64 and remove
    the files.

    Packets still in the capture socket when tcpdump leaves its loop are lost, and on a busy node tcpdump
    may not have read the probe's packets yet: so first wait (at most ~3 s, the full wait only when nothing
    was captured) until the pcap holds more than its 24-byte header and stops growing.
    tcpdump's exit is seen in its log ("N packets captured"): in the container nothing reaps it, so
    `kill -0` would keep finding the zombie."""
    pcap, log, pid = _paths(tag, workdir)
    return (f"last=-1; for i in $(seq 15); do size=$(wc -c < {pcap}); "
            f"[ \"$size\" -gt 24 ] && [ \"$size\" -eq \"$last\" ] && break; last=$size; sleep 0.2; done; "
            f"kill -INT $(cat {pid}) && for i in $(seq 200); do grep -q 'packets captured' {log} && break; "
            f"sleep 0.05; done; base64 {pcap} && rm -f {pcap} {log} {pid}")


def heartbeat_command(server_ip: str, server_port: int) -> list[str]:
    """The capture's heartbeat on a cluster (probes/heartbeat.py), run as root in the capture container of the
    *client* pod after the probe: one TCP connect from source port HEARTBEAT_SOURCE_PORT to the server pod's
    heartbeat port, from the proxy's group so that the client sidecar's iptables let it out unredirected
    (tools/istio-iptables/pkg/capture/run.go: ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN, 1.28-1.30).
    A SYN, not the reference mesh's lone RST: kube-proxy drops a RST without a connection between nodes
    (KUBE-FORWARD ctstate INVALID DROP). SO_LINGER 0 closes with a RST, so no TIME_WAIT blocks the next one."""
    script = ("import socket, struct, sys\n"
              "s = socket.socket()\n"
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n"
              "s.bind(('', int(sys.argv[3])))\n"
              "s.settimeout(1)\n"
              "try:\n    s.connect((sys.argv[1], int(sys.argv[2])))\nexcept OSError:\n    pass\n"
              "s.close()\n")
    return ["setpriv", f"--regid={PROXY_GID}", "--clear-groups", "python3", "-c", script,
            str(ipaddress.ip_address(server_ip)), str(heartbeat_port(server_port)), str(HEARTBEAT_SOURCE_PORT)]


def _paths(tag: str, workdir: str) -> tuple[str, str, str]:
    safe = "".join(ch for ch in tag if ch.isalnum())[:40] or "probe"
    return tuple(shlex.quote(f"{workdir}/{safe}.{ext}") for ext in ("pcap", "log", "pid"))
