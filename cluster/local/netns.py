"""Pods as network namespaces on a per-run bridge: veth pairs, addresses, hosts files, sockets inside a pod.

The bridge has no address and the root namespace gets no routes or rules: pods only reach each other.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess

from cluster.local.lifecycle import NETNS_ETC, RunState, shared_folder
from probes.netns import entered


class NetnsError(RuntimeError):
    pass


def run_ip(args: list[str], netns: str | None = None, stdin: str | None = None) -> None:
    cmd = ["ip"] + (["-n", netns] if netns else []) + args
    proc = subprocess.run(cmd, input=stdin, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {proc.stderr.strip()}")


def pick_subnet(run: RunState, in_use: set[str]) -> ipaddress.IPv4Network:
    """A /24 in 10.250.0.0/16 for this run: not claimed by another live run, not on a root-namespace route."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], check=False, capture_output=True, text=True).stdout
    routed = [ipaddress.ip_network(w, strict=False) for line in routes.splitlines()
              for w in line.split()[:2] if w[0].isdigit() and "/" in w]
    start = int(run.prefix.removeprefix("mp"), 16) % 256
    for i in range(256):
        net = ipaddress.ip_network(f"10.250.{(start + i) % 256}.0/24")
        if str(net) not in in_use and not any(net.overlaps(r) for r in routed):
            return net
    raise NetnsError("no free /24 left in 10.250.0.0/16")


def create_bridge(run: RunState, name: str) -> None:
    run.record("links", name)
    run_ip(["link", "add", name, "type", "bridge"])
    run_ip(["link", "set", name, "up"])


def create_pod(run: RunState, name: str, veth_host: str, bridge: str, address: str, prefixlen: int,
               hosts: dict[str, str]) -> None:
    """netns `name` with veth `veth_host` (root side, on `bridge`) and `eth0` inside at `address`."""
    run.record("netns", name)
    run.record("links", veth_host)
    etc = NETNS_ETC / name
    shared_folder(etc)
    # `ip netns exec` bind-mounts this over /etc/hosts: the pod's DNS for Service names.
    lines = ["127.0.0.1 localhost", f"{address} {name}"] + [f"{ip} {host}" for host, ip in hosts.items()]
    (etc / "hosts").write_text("\n".join(lines) + "\n")
    os.chmod(etc / "hosts", 0o644)  # whatever the umask: the apps resolve Service names with it
    run_ip(["netns", "add", name])
    run_ip(["link", "add", veth_host, "type", "veth", "peer", "name", "eth0", "netns", name])
    run_ip(["link", "set", veth_host, "master", bridge, "up"])
    run_ip(["-batch", "-"], netns=name, stdin="\n".join([
        "link set lo up",
        f"addr add {address}/{prefixlen} dev eth0",
        "link set eth0 up",
        # Service VIPs are off-subnet: like a pod's default route, so they route before DNAT/REDIRECT.
        "route add default dev eth0",
    ]) + "\n")


def delete_pod(name: str, veth_host: str) -> None:
    for pid in subprocess.run(["ip", "netns", "pids", name], check=False, capture_output=True, text=True).stdout.split():
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "link", "del", veth_host], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    etc = NETNS_ETC / name
    if etc.exists():
        for f in etc.iterdir():
            f.unlink()
        etc.rmdir()


def connect(netns: str, host: str, port: int, timeout: float = 1.0) -> socket.socket:
    """A TCP connection made from inside the pod (e.g. to its sidecar's admin on 127.0.0.1)."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def listen(netns: str, port: int) -> socket.socket:
    """A TCP socket listening on 0.0.0.0:port inside the pod (its holder may live in another namespace)."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def answers(netns: str, host: str, port: int) -> bool:
    """An HTTP server inside the pod answers a request (not only that something listens)."""
    try:
        sock = connect(netns, host, port, timeout=0.5)
    except OSError:
        return False
    try:
        sock.sendall(b"GET /status/200 HTTP/1.0\r\nHost: localhost\r\n\r\n")
        return sock.recv(12).startswith(b"HTTP/")
    except OSError:
        return False
    finally:
        sock.close()


def port_open(netns: str, host: str, port: int) -> bool:
    try:
        connect(netns, host, port, timeout=0.2).close()
        return True
    except OSError:
        return False


def exec_prefix(netns: str, uid: int) -> list[str]:
    """Command prefix running a program in the pod as `uid` (with the pod's /etc/hosts)."""
    return ["ip", "netns", "exec", netns, *as_user(uid)]


def as_user(uid: int) -> list[str]:
    """Command prefix running a program as `uid` (and its group), with no supplementary groups of root's."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]

