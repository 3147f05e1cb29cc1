"""Sidecar Envoy: bootstrap, process (uid 1337, inside the pod), readiness and admin reads.

The admin API listens on 127.0.0.1:15000 inside the pod, as Istio's does; the harness reaches it with a
socket created in the pod's netns.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
from pathlib import Path

from cluster.local import netns
from cluster.local.iptables import PROXY_UID

ADMIN_PORT = 15000
# Each sidecar watches its xDS and SDS files with inotify: 4 instances, all counted against PROXY_UID's
# per-user limit (fs.inotify.max_user_instances, 128 on a stock kernel). Past it Envoy aborts at start.
INOTIFY_PER_SIDECAR = 4
INOTIFY_FIX = ("every sidecar runs as uid 1337 and holds 4 inotify instances; raise the per-user limit: "
               "sysctl -w fs.inotify.max_user_instances=1024 (`make setup` does; see meshproof doctor --mesh local)")


def bootstrap(node_id: str, cluster: str, xds_dir: Path) -> dict:
    def source(name: str) -> dict:
        return {"resource_api_version": "V3", "path_config_source": {
            "path": str(xds_dir / f"{name}.json"), "watched_directory": {"path": str(xds_dir)}}}

    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ADMIN_PORT}}},
        "dynamic_resources": {"lds_config": source("lds"), "cds_config": source("cds")},
    }


class Sidecar:
    """One Envoy process in one pod."""

    def __init__(self, pod_netns: str, pod_dir: Path, node_id: str, cluster: str, binary: Path):
        self.netns = pod_netns
        self.binary = binary  # the run's staged copy (cluster/local/runtime.py)
        self.dir = pod_dir
        self.xds_dir = pod_dir / "xds"
        self.node_id, self.cluster = node_id, cluster
        self.process: subprocess.Popen | None = None

    def start(self, record_pid) -> None:
        boot = self.dir / "envoy.json"
        boot.write_text(json.dumps(bootstrap(self.node_id, self.cluster, self.xds_dir)))
        os.chmod(boot, 0o644)  # whatever the umask: Envoy reads it as PROXY_UID
        cmd = netns.exec_prefix(self.netns, PROXY_UID) + [
            str(self.binary), "-c", str(boot), "--concurrency", "1", "--disable-hot-restart", "--drain-time-s", "1",
            "--log-level", "warning",
            # Access log lines (the server's account of a TCP peer, controlplane.with_peer_identity_log) reach
            # envoy.log within 20 ms instead of Envoy's default 10 s, so the probe that caused one can read it.
            "--file-flush-interval-msec", "20"]
        with open(self.dir / "envoy.log", "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        record_pid(self.process.pid)

    def admin(self, path: str, method: str = "GET", timeout: float = 1.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=timeout)
        conn.sock = netns.connect(self.netns, "127.0.0.1", ADMIN_PORT, timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        try:
            return self.admin("/ready", timeout=0.2)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                tail = self.log_tail()
                why = f"; {INOTIFY_FIX}" if "inotify" in tail else ""
                raise RuntimeError(f"envoy in {self.netns} exited ({self.process.returncode}): {tail}{why}")
            if self.ready():
                return
            time.sleep(0.005)
        raise TimeoutError(f"envoy in {self.netns} not ready after {timeout}s: {self.log_tail()}")

    def versions(self) -> dict[str, str]:
        _, text = self.admin("/stats?filter=^(listener_manager.lds|cluster_manager.cds).(version_text|update_"
                             "rejected|update_failure)$")
        out = {}
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            out[key.strip()] = value.strip().strip('"')
        return out

    def refusals(self, seen: dict[str, str] | None = None) -> int:
        """How many LDS/CDS files this sidecar has refused (rejected or unparsable) so far."""
        seen = seen if seen is not None else self.versions()
        return sum(int(v) for k, v in seen.items() if k.endswith(("update_rejected", "update_failure")) and v.isdigit())

    def wait_version(self, version: str, refused_before: int | None = None, timeout: float = 5.0) -> None:
        """Return once both LDS and CDS report `version`; fail at once if the sidecar refuses the files
        (`refused_before`: refusals() read before they were written)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            seen = self.versions()
            if (seen.get("listener_manager.lds.version_text") == version
                    and seen.get("cluster_manager.cds.version_text") == version):
                return
            if refused_before is not None and self.refusals(seen) > refused_before:
                raise RuntimeError(f"envoy in {self.netns} refused config {version}: {self.log_tail(3)}")
            time.sleep(0.002)
        raise TimeoutError(f"envoy in {self.netns} did not take config {version} within {timeout}s "
                           f"(admin says {seen}); log: {self.log_tail()}")

    def counters(self, pattern: str) -> dict[str, int]:
        _, text = self.admin(f"/stats?filter={pattern}")
        out = {}
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if re.fullmatch(r"\d+", value.strip()):
                out[key] = int(value)
        return out

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the log; after a crash, the line that says why (Envoy logs it before the
        backtrace, which would otherwise fill the tail)."""
        try:
            log = (self.dir / "envoy.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        trace = len(log)
        while trace and "[backtrace]" in log[trace - 1]:
            trace -= 1
        if trace == len(log):
            return " | ".join(log[-lines:])
        return " | ".join([*log[max(0, trace - 2):trace], *log[trace:trace + 1]])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # Sent to the process group: `ip netns exec` and setpriv exec into envoy, so this is envoy itself.
            try:
                os.killpg(self.process.pid, 9)
            except ProcessLookupError:
                pass
            self.process.wait()
