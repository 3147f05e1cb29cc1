"""Adversarial TLS clients on a real cluster (KubeBackend.tls_handshake). Not yet run on a cluster (docs/kube.md).

The sleep pod has no sidecar in these cells, so what leaves it is its own. openssl runs in the pinned capture
image (it ships openssl), added to the sleep pod as an ephemeral container; the credentials are minted here and
handed to it in the exec's script, base64-encoded, and removed when it ends. Mesh-CA certificates need the key
istiod signs with: the root namespace's `istio-ca-secret` (Istio's self-signed CA) or `cacerts` (a plugged-in
CA). The httpbin pod's capture and its judgement are the ones the probes use.
"""

from __future__ import annotations

import base64
import dataclasses
import shlex
import time

from kubernetes import client

from cluster.backend import HandshakeResult, TlsAttempt
from cluster.kube.capture import CONTAINER, PodCapture
from cluster.kube.client import exec_in
from cluster.local.ca import MeshCA
from cluster.local.credentials import mint
from probes.canary import HEADER as CANARY_HEADER
from probes.canary import echoed_canary, new_canary
from probes.identity import peer_identity_from_headers
from probes.tls_client import REQUEST, handshake_stop, read_s_client, s_client_command
from probes.verdict import judge

CA_SECRETS = ("istio-ca-secret", "cacerts")  # istiod's self-signed CA, then a plugged-in one
WORKDIR = "/tmp/meshproof-adversary"


def mesh_ca_from_cluster(core: client.CoreV1Api, root_ns: str) -> MeshCA:
    """The CA istiod signs workload certificates with, from its secret in the root namespace."""
    for name in CA_SECRETS:
        try:
            data = core.read_namespaced_secret(name, root_ns).data or {}
        except client.ApiException as err:
            if err.status == 404:
                continue
            raise
        if "ca-cert.pem" in data and "ca-key.pem" in data:
            return MeshCA.from_pem(base64.b64decode(data["ca-cert.pem"]), base64.b64decode(data["ca-key.pem"]))
    raise LookupError(f"no mesh CA key readable in {root_ns} (secrets {', '.join(CA_SECRETS)}): an external CA "
                      "signs workload certificates, so the adversary cannot mint mesh certificates")


def client_script(argv: list[str], request: str, credentials: tuple[bytes, bytes] | None, tag: str) -> str:
    """sh script: write the credentials, run openssl with the request on stdin, remove the credentials.
    openssl's own exit code is the script's."""
    safe = "".join(ch for ch in tag if ch.isalnum())[:40]
    cert, key = f"{WORKDIR}/{safe}.pem", f"{WORKDIR}/{safe}.key"
    lines = [f"mkdir -p {WORKDIR}", "umask 077"]
    if credentials:
        argv = [*argv, "-cert", cert, "-key", key]
        for path, data in zip((cert, key), credentials, strict=True):
            lines.append(f"echo {base64.b64encode(data).decode()} | base64 -d > {path}")
    lines += [f"printf %s {shlex.quote(request)} | {shlex.join(argv)}", "rc=$?", f"rm -f {cert} {key}", "exit $rc"]
    return "\n".join(lines)


def tls_handshake(backend, handle, attempt: TlsAttempt, capture: bool = True) -> HandshakeResult:
    cluster = backend._cluster()
    if handle.scenario.client.sidecar:
        raise ValueError("tls_handshake: the adversary's client pod must have no sidecar (its TLS is its own)")
    canary = new_canary()
    client_ns, client_pod = handle.client_pod
    server_ns, server_pod, server_ip = handle.server_pod
    port = handle.scenario.server.target_port
    try:
        credentials = mint(attempt, mesh_ca_from_cluster(cluster.core, backend.root_ns), MeshCA("meshproof other CA"))
    except LookupError as err:
        return HandshakeResult("error", None, None, None, None, canary=canary, detail=str(err))
    argv = s_client_command(server_ip, port, attempt.versions, attempt.alpn)
    script = client_script(argv, REQUEST.format(header=CANARY_HEADER, canary=canary), credentials, canary)
    PodCapture(cluster, client_ns, client_pod, port, backend.images).ensure_container()
    server_capture = None
    if capture:
        if handle.capture is None:
            handle.capture = PodCapture(cluster, server_ns, server_pod, port, backend.images)
        server_capture = handle.capture
        server_capture.ensure_container()
        server_capture.start(canary)
    done = exec_in(cluster, client_ns, client_pod, CONTAINER, ["sh", "-c", script], timeout_s=30)
    wire = None
    if server_capture:
        time.sleep(0.3)  # let the last segments reach the capture
        pcap = backend.out_dir / "pcaps" / f"{handle.cell_id}-{canary}.pcap"
        pcap.parent.mkdir(parents=True, exist_ok=True)
        pcap.write_bytes(server_capture.stop(canary))
        judged = judge(pcap, canary, server_ip, port)
        wire = dataclasses.replace(judged, handshake=handshake_stop(judged))
    seen = read_s_client(done.exit_code, done.stdout, done.stderr)
    identity = peer_identity_from_headers(seen["body"]) if seen["http_status"] == 200 else None
    outcome, detail = seen["outcome"], seen["detail"]
    if seen["http_status"] == 200 and echoed_canary(seen["body"]) != canary:
        outcome, detail = "error", f"the 200 did not echo this attempt's canary; {detail}"
    # server_refusal stays None: the server sidecar's counters are not read here yet.
    return HandshakeResult(outcome, seen["alert"], seen["tls_version"], seen["http_status"], identity, None, wire,
                           canary, f"kubectl exec -n {client_ns} {client_pod} -c {CONTAINER} -- " + shlex.join(argv),
                           detail)
