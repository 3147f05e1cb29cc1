"""Faults on the reference mesh: real signals, real qdiscs and real netfilter rules inside the pods.

- Sidecar crash: a signal to the Envoy PID (`ip netns exec` and setpriv exec into it, so the PID is Envoy's).
- Control plane away: the backend holds every xDS write until the control plane returns, and refuses applies
  meanwhile as Istio's fail-closed webhook does (or, with the webhook opened as the kube backend does it,
  accepts them and holds their push too).
- Certificates: new SDS secrets from the mesh CA, a short-lived one, or one from the untrusted rogue CA.
- Bandwidth: a tbf qdisc on each pod's eth0 (inside the pod's netns; `tc netem` does not exist here).
- Loss and partition: filter-table rules in the server pod's netns, with the same `iptables` the pod's
  interception rules were loaded with, in chains of their own so healing removes exactly them.
- Delay: Envoy's HTTP fault filter in the server sidecar's inbound HTTP connection managers, pushed like any
  config change. It delays requests, not every packet; for a sidecar-less server there is nothing to push.

Nothing here touches the root network namespace.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import signal as signals
import subprocess
from pathlib import Path

from cryptography import x509

from cluster.faults import FaultError, Faults, check_role
from cluster.local import ca as mesh_ca
from cluster.local.iptables import PROXY_UID

FAULT_IN, FAULT_OUT = "MESHPROOF-FAULT-IN", "MESHPROOF-FAULT-OUT"
HTTP_FAULT = "envoy.filters.http.fault"
HCM = "envoy.filters.network.http_connection_manager"


class LocalFaults(Faults):
    backend_name = "local"

    def __init__(self, backend, refuses_applies_while_away: bool = True):
        self.backend = backend
        # False: as the kube backend opens Istio's webhook for the window, changes are accepted while the
        # control plane is away and held until it returns (the scenario's kube path, run locally).
        self.refuses_applies_while_away = refuses_applies_while_away

    # --- sidecars and control plane -----------------------------------------------------------------

    def _pod(self, handle, role: str):
        check_role(role)
        return handle.pair.client if role == "client" else handle.pair.server

    def _sidecar(self, handle, role: str):
        pod = self._pod(handle, role)
        if pod.sidecar is None:
            raise FaultError(f"the {role} pod {pod.name} has no sidecar")
        return pod.sidecar

    def kill_sidecar(self, handle, role: str, signal: int = signals.SIGKILL) -> None:
        sidecar = self._sidecar(handle, role)
        if not sidecar.alive():
            raise FaultError(f"the {role} sidecar in {sidecar.netns} is not running")
        os.kill(sidecar.process.pid, signal)
        try:
            sidecar.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise FaultError(f"the {role} sidecar (pid {sidecar.process.pid}) outlived signal {signal} by 5 s") from None

    def restart_sidecar(self, handle, role: str) -> None:
        self._sidecar(handle, role)
        self.backend.restart_sidecar(handle, role)

    def stop_control_plane(self) -> None:
        if self.backend.held_pushes is not None:
            raise FaultError("the control plane is already stopped")
        self.backend.held_pushes = {}
        self.backend.admission_closed_while_away = self.refuses_applies_while_away

    def start_control_plane(self) -> None:
        held, self.backend.held_pushes = self.backend.held_pushes or {}, None
        for pair, configs in held.values():
            self.backend._push(pair, configs)

    # --- certificates -------------------------------------------------------------------------------

    def rotate_certificates(self, handle) -> None:
        for role in ("client", "server"):
            if self._pod(handle, role).sidecar:
                self.backend.rotate_identity(handle, role)

    def serving_certificates(self, handle) -> dict[str, frozenset[str]]:
        served = {}
        for pod in handle.pair.pods():
            if pod.sidecar:
                _, body = pod.sidecar.admin("/certs")
                served[pod.role] = frozenset(cert["serial_number"] for entry in json.loads(body)["certificates"]
                                             for cert in entry.get("cert_chain", []))
        return served

    def expire_certificate(self, handle, role: str, lifetime_s: float) -> float:
        pod = self._pod(handle, role)
        self._sidecar(handle, role)
        issuer = _ShortLived(self.backend.ca, datetime.timedelta(seconds=lifetime_s))
        mesh_ca.install_identity(pod.dir / "certs", pod.dir / "sds", issuer, pod.workload.spiffe_id, PROXY_UID,
                                 trust=self.backend.ca)
        return issuer.not_after

    def rogue_certificate(self, handle, role: str) -> None:
        self._sidecar(handle, role)
        self.backend.rotate_identity(handle, role, rogue=True)

    # --- network ------------------------------------------------------------------------------------

    def limit_bandwidth(self, handle, rate: str) -> None:
        for pod in handle.pair.pods():
            # A small bucket: a large one lets the first requests of the window through at full speed.
            _run(pod.name, ["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate,
                            "burst", "3kb", "latency", "1s"])

    def drop_packets(self, handle, probability: float) -> None:
        server = handle.pair.server
        self._chains(server.name)
        _run(server.name, ["iptables", "-w", "-A", FAULT_IN, "-i", "eth0", "-m", "statistic", "--mode", "random",
                           "--probability", f"{probability:.4f}", "-j", "DROP"])

    def partition(self, handle) -> None:
        server, client = handle.pair.server, handle.pair.client
        self._chains(server.name)
        _run(server.name, ["iptables", "-w", "-A", FAULT_IN, "-s", client.ip, "-j", "DROP"])
        _run(server.name, ["iptables", "-w", "-A", FAULT_OUT, "-d", client.ip, "-j", "DROP"])

    def delay_packets(self, handle, ms: int) -> None:
        server = handle.pair.server
        if server.sidecar is None:
            raise FaultError(f"delay needs the server sidecar's fault filter; {server.name} has no sidecar")
        current = without_request_delay(handle.pair.configs[server.name])
        self.backend._push(handle.pair, {server.name: with_request_delay(current, ms)})

    def heal(self, handle) -> None:
        for pod in handle.pair.pods():
            if "tbf" in _run(pod.name, ["tc", "qdisc", "show", "dev", "eth0"]):
                _run(pod.name, ["tc", "qdisc", "del", "dev", "eth0", "root"])
        server = handle.pair.server
        rules = _run(server.name, ["iptables", "-w", "-S"])
        for hook, chain in (("INPUT", FAULT_IN), ("OUTPUT", FAULT_OUT)):
            if f"-A {hook} -j {chain}" in rules:
                _run(server.name, ["iptables", "-w", "-D", hook, "-j", chain])
            if f"-N {chain}" in rules:
                _run(server.name, ["iptables", "-w", "-F", chain])
                _run(server.name, ["iptables", "-w", "-X", chain])
        if server.sidecar is not None:
            served = handle.pair.configs[server.name]
            undelayed = without_request_delay(served)
            if undelayed is not served:
                self.backend._push(handle.pair, {server.name: undelayed})

    def _chains(self, pod: str) -> None:
        rules = _run(pod, ["iptables", "-w", "-S"])
        for hook, chain in (("INPUT", FAULT_IN), ("OUTPUT", FAULT_OUT)):
            if f"-N {chain}" not in rules:
                _run(pod, ["iptables", "-w", "-N", chain])
                _run(pod, ["iptables", "-w", "-I", hook, "1", "-j", chain])

    # --- observation --------------------------------------------------------------------------------

    def capture(self, handle, pcap: Path):
        from probes.capture import Capture

        Path(pcap).parent.mkdir(parents=True, exist_ok=True)
        return Capture(iface=handle.pair.server.veth, bpf="tcp", pcap_path=Path(pcap))

    def server_address(self, handle) -> tuple[str, int]:
        return handle.pair.server.ip, handle.pair.server.workload.target_port


class _ShortLived:
    """The mesh CA, issuing with a chosen lifetime (install_identity calls `issue(spiffe_id)`)."""

    def __init__(self, ca: mesh_ca.MeshCA, ttl: datetime.timedelta):
        self.ca, self.ttl, self.root_pem = ca, ttl, ca.root_pem

    def issue(self, spiffe_id: str) -> tuple[bytes, bytes]:
        chain, key = self.ca.issue(spiffe_id, self.ttl)
        # X.509 times have whole seconds: the real expiry is up to a second before now + ttl.
        self.not_after = x509.load_pem_x509_certificate(chain).not_valid_after_utc.timestamp()
        return chain, key


def with_request_delay(config, ms: int):
    """A copy of a sidecar config whose inbound HTTP connection managers delay every request by `ms`."""
    delayed = copy.deepcopy(config)
    fault = {"name": HTTP_FAULT, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "delay": {"fixed_delay": f"{ms / 1000:.3f}s", "percentage": {"numerator": 100, "denominator": "HUNDRED"}}}}
    touched = 0
    for listener in delayed.listeners:
        if listener["name"] != "virtualInbound":
            continue
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == HCM:
                    network_filter["typed_config"]["http_filters"].insert(0, fault)
                    touched += 1
    if not touched:
        raise FaultError(f"no inbound HTTP connection manager to delay in {json.dumps(delayed.decisions)[:200]}")
    return delayed


def without_request_delay(config):
    """The config without any fault filter added by with_request_delay (the same object if it has none)."""
    if HTTP_FAULT not in json.dumps(config.listeners):
        return config
    plain = copy.deepcopy(config)
    for listener in plain.listeners:
        for chain in listener.get("filter_chains", []):
            for network_filter in chain["filters"]:
                if network_filter["name"] == HCM:
                    hcm = network_filter["typed_config"]
                    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != HTTP_FAULT]
    return plain


def _run(pod: str, cmd: list[str]) -> str:
    proc = subprocess.run(["ip", "netns", "exec", pod, *cmd], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FaultError(f"in pod {pod}: {' '.join(cmd)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout
