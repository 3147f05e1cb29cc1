"""Packet capture inside a pod's network namespace on a real cluster.

An ephemeral container (pinned tcpdump image, NET_RAW) is added once to the httpbin pod; for each probe
tcpdump runs in it on eth0, the pod's side of the node link where traffic from other pods arrives before
any sidecar redirect, and the pcap is copied out (base64 over exec). Classification is the probes/ code.
"""

from __future__ import annotations

import base64
import shlex
import time

from cluster.kube.client import Cluster, exec_in
from cluster.kube.render import Images, capture_container

CONTAINER = "meshproof-capture"
WORKDIR = "/tmp/meshproof"


class CaptureError(RuntimeError):
    """The harness could not capture: never a verdict about the mesh."""


class PodCapture:
    def __init__(self, cluster: Cluster, namespace: str, pod: str, port: int, images: Images,
                 interface: str = "eth0"):
        self.cluster, self.namespace, self.pod, self.port = cluster, namespace, pod, port
        self.images, self.interface = images, interface

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
        pcap, log, pid = self._paths(tag)
        script = (f"mkdir -p {WORKDIR} && rm -f {pcap} {log} && "
                  f"(setsid tcpdump -i {self.interface} -U -s 0 -w {pcap} tcp port {self.port} > {log} 2>&1 & "
                  f"echo $! > {pid}) && "
                  f"for i in $(seq 100); do grep -q 'listening on' {log} && exit 0; sleep 0.05; done; "
                  f"cat {log}; exit 3")
        result = exec_in(self.cluster, self.namespace, self.pod, CONTAINER, ["sh", "-c", script], timeout_s=20)
        if result.exit_code != 0:
            raise CaptureError(f"tcpdump did not start in {self.namespace}/{self.pod}: "
                               f"{(result.stdout + result.stderr).strip()[:300]}")

    def stop(self, tag: str) -> bytes:
        """Stop tcpdump (it flushes on SIGINT) and return the pcap bytes."""
        pcap, log, pid = self._paths(tag)
        script = (f"p=$(cat {pid}); kill -INT $p; for i in $(seq 100); do kill -0 $p 2>/dev/null || break; "
                  f"sleep 0.05; done; base64 {pcap} && rm -f {pcap} {log} {pid}")
        result = exec_in(self.cluster, self.namespace, self.pod, CONTAINER, ["sh", "-c", script], timeout_s=30)
        if result.exit_code != 0:
            raise CaptureError(f"could not copy the pcap out of {self.namespace}/{self.pod}: "
                               f"{result.stderr.strip()[:300]}")
        return base64.b64decode("".join(result.stdout.split()))

    @staticmethod
    def _paths(tag: str) -> tuple[str, str, str]:
        safe = shlex.quote("".join(ch for ch in tag if ch.isalnum())[:40] or "probe")
        return f"{WORKDIR}/{safe}.pcap", f"{WORKDIR}/{safe}.log", f"{WORKDIR}/{safe}.pid"
