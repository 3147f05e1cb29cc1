"""Istio-style traffic interception and kube-proxy-style Service translation, inside one pod's netns.

Loaded with one `iptables-restore` per pod (nat table only). The root network namespace gets no rules.
Chain layout follows istio-iptables: inbound TCP to 15006, outbound TCP to 15001, the proxy's own uid/gid
1337 and the sidecar's health/admin/stats ports excluded.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

PROXY_UID = 1337
INBOUND_PORT, OUTBOUND_PORT = 15006, 15001
EXCLUDED_INBOUND_PORTS = (15000, 15020, 15021, 15090)


@dataclass(frozen=True)
class ServiceRule:
    """A Service's virtual IP:port translated to one endpoint, as kube-proxy does."""

    vip: str
    port: int
    endpoint_ip: str
    target_port: int


def rules(sidecar: bool, services: list[ServiceRule]) -> str:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":MESH_SERVICES - [0:0]"]
    if sidecar:
        lines += [":ISTIO_INBOUND - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]", ":ISTIO_OUTPUT - [0:0]",
                  ":ISTIO_REDIRECT - [0:0]",
                  "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                  # Interception first: the sidecar must see the Service VIP as the original destination.
                  "-A OUTPUT -p tcp -j ISTIO_OUTPUT"]
        lines += [f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN" for port in EXCLUDED_INBOUND_PORTS]
        lines += [
            "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}",
            "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
            f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {PROXY_UID} -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {PROXY_UID} -j RETURN",
            f"-A ISTIO_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN",
            f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner {PROXY_UID} -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {PROXY_UID} -j RETURN",
            f"-A ISTIO_OUTPUT -m owner --gid-owner {PROXY_UID} -j RETURN",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
            f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}",
        ]
    lines.append("-A OUTPUT -p tcp -j MESH_SERVICES")
    lines += [f"-A MESH_SERVICES -d {s.vip}/32 -p tcp --dport {s.port} -j DNAT "
              f"--to-destination {s.endpoint_ip}:{s.target_port}" for s in services]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def install(netns: str, sidecar: bool, services: list[ServiceRule]) -> None:
    proc = subprocess.run(["ip", "netns", "exec", netns, "iptables-restore", "-w"],
                          input=rules(sidecar, services), check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"iptables-restore in {netns}: {proc.stderr.strip()}")

