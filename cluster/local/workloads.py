"""The applications of every scenario: the server app (server.app: httpbin, PyPI httpbin under gunicorn;
https, the same behind its own TLS; tcp-echo and banner, cluster/local/tcp_servers.py) and sleep (the client:
curl, and the TCP probe client probes/tcp_probe.py).

Both run inside their pod as APP_UID: not the proxy's 1337 (interception must apply to them) and not 1000
(taken on this image).
"""

from __future__ import annotations

import os
import shlex
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.local import netns, tcp_servers
from cluster.local.ca import app_server_certificate
from cluster.local.runtime import Runtime
from meshproof.scenario import Server
from probes.canary import HEADER as CANARY_HEADER
from probes.tcp_probe import PROBE_DEADLINE_S, app_arguments, read_account

APP_UID = 1717
APPS_LOG = "httpbin.log"  # every server app's output, whatever the app (the server pod is "httpbin" in any case)


class ServerApp:
    """One server app process in a pod, listening on `port`, as APP_UID from the run's staged runtime."""

    what = "app"

    def __init__(self, pod_netns: str, pod_dir: Path, port: int, runtime: Runtime):
        self.netns, self.dir, self.port, self.runtime = pod_netns, pod_dir, port, runtime
        self.process: subprocess.Popen | None = None

    def arguments(self, binds: list[str]) -> list[str]:
        """What the staged interpreter runs (after `python`)."""
        raise NotImplementedError

    def answers(self) -> bool:
        """It answers as its clients expect, from inside the pod (not only that something listens)."""
        raise NotImplementedError

    def _listeners(self) -> list[socket.socket]:
        return []

    def start(self, record_pid) -> None:
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        os.chown(home, APP_UID, APP_UID)
        listeners = self._listeners()
        binds = [f"fd://{s.fileno()}" for s in listeners] or [f"0.0.0.0:{self.port}"]
        cmd = netns.exec_prefix(self.netns, APP_UID) + [
            "env", f"HOME={home}", *self.runtime.app_env(), str(self.runtime.python), *self.arguments(binds)]
        try:
            with open(self.dir / APPS_LOG, "ab") as log:
                self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=home, start_new_session=True,
                                                pass_fds=[s.fileno() for s in listeners])
        finally:
            for sock in listeners:  # the app holds them now
                sock.close()
        record_pid(self.process.pid)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until it answers: a socket made for it listens before the app runs, so an open port says nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.what} in {self.netns} exited: {self._log_tail()}")
            if self.answers():
                return
            time.sleep(0.005)
        raise TimeoutError(f"{self.what} in {self.netns} not answering on {self.port} after {timeout}s")

    def _log_tail(self) -> str:
        try:
            return " | ".join((self.dir / APPS_LOG).read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)  # a gunicorn master and its worker share the group
            except ProcessLookupError:
                pass
            self.process.wait()


class Httpbin(ServerApp):
    """httpbin in one pod; or, with `serves` (other pods' namespace and port), one process answering in every
    one of those pods too: its listening sockets are made inside each pod's network namespace and handed to
    gunicorn (`--bind fd://N`), so each pod still answers on its own address and port and only the process
    (about 50 MB and a second of start-up CPU per pod) is shared (a co-deployment's server pods)."""

    what = "httpbin"

    def __init__(self, pod_netns: str, pod_dir: Path, port: int, runtime: Runtime,
                 serves: tuple[tuple[str, int], ...] = ()):
        super().__init__(pod_netns, pod_dir, port, runtime)
        self.serves = serves

    def _listeners(self) -> list[socket.socket]:
        return [netns.listen(name, port) for name, port in ((self.netns, self.port), *self.serves)] \
            if self.serves else []

    def arguments(self, binds: list[str]) -> list[str]:
        return ["-m", "gunicorn", *(arg for bind in binds for arg in ("-b", bind)), "-w", "1",
                "--log-level", "warning", "--no-control-socket", "--log-file=-", *self._tls_arguments(),
                "httpbin:app"]

    def _tls_arguments(self) -> list[str]:
        return []

    def answers(self) -> bool:
        return netns.answers(self.netns, "127.0.0.1", self.port)


class HttpsHttpbin(Httpbin):
    """The https app: httpbin behind its own TLS (gunicorn's), with a self-signed certificate made for the pod.
    gunicorn offers no ALPN, so a client that offers h2 and http/1.1 speaks HTTP/1.1."""

    what = "https httpbin"

    def __init__(self, pod_netns: str, pod_dir: Path, port: int, runtime: Runtime, server_name: str):
        super().__init__(pod_netns, pod_dir, port, runtime)
        folder = pod_dir / "app-tls"
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chown(folder, APP_UID, APP_UID)
        self.certfile, self.keyfile = folder / "cert.pem", folder / "key.pem"
        for path, data in zip((self.certfile, self.keyfile), app_server_certificate(server_name), strict=True):
            path.write_bytes(data)
            os.chmod(path, 0o600)
            os.chown(path, APP_UID, APP_UID)

    def _tls_arguments(self) -> list[str]:
        return ["--certfile", str(self.certfile), "--keyfile", str(self.keyfile)]

    def answers(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its own self-signed certificate
        try:
            with context.wrap_socket(netns.connect(self.netns, "127.0.0.1", self.port, timeout=0.5)) as sock:
                sock.sendall(b"GET /status/200 HTTP/1.0\r\nHost: localhost\r\n\r\n")
                return sock.recv(12).startswith(b"HTTP/")
        except OSError:
            return False


class TcpServer(ServerApp):
    """tcp-echo or banner (cluster/local/tcp_servers.py, staged as the module `tcp_servers`), one per pod."""

    def __init__(self, pod_netns: str, pod_dir: Path, port: int, runtime: Runtime, app: str):
        super().__init__(pod_netns, pod_dir, port, runtime)
        self.what = app

    def arguments(self, binds: list[str]) -> list[str]:
        return ["-m", "tcp_servers", self.what, str(self.port)]

    def answers(self) -> bool:
        try:
            with netns.connect(self.netns, "127.0.0.1", self.port, timeout=0.5) as sock:
                if self.what == "banner":
                    return sock.recv(len(tcp_servers.GREETING)) == tcp_servers.GREETING
                sock.sendall(b"ready?\n")
                expected = tcp_servers.ECHO_PREFIX + b" ready?\n"
                return sock.recv(len(expected)) == expected
        except OSError:
            return False


def server_app(server: Server, pod_netns: str, pod_dir: Path, runtime: Runtime) -> ServerApp:
    """The process that serves `server.app` on the server pod's target port."""
    if server.app == "httpbin":
        return Httpbin(pod_netns, pod_dir, server.target_port, runtime)
    if server.app == "https":
        return HttpsHttpbin(pod_netns, pod_dir, server.target_port, runtime, server.host)
    if server.app in tcp_servers.APPS:
        return TcpServer(pod_netns, pod_dir, server.target_port, runtime, server.app)
    raise ValueError(f"server.app {server.app!r}: the reference mesh runs httpbin, https, "
                     f"{', '.join(tcp_servers.APPS)}")


@dataclass
class CurlResult:
    http_status: int | None
    curl_exit: int
    body: str
    stderr: str
    headers: dict[str, str]
    command: str
    elapsed_ms: float


@dataclass
class TcpProbeResult:
    account: dict  # what probes/tcp_probe.py printed: result, step, greeting, answer, detail, elapsed_ms
    exit_code: int
    command: str
    elapsed_ms: float


class Sleep:
    """The client. Each probe is one process started with `ip netns exec` as APP_UID: curl for HTTP(S), the
    staged TCP probe client (probes/tcp_probe.py) for the TCP apps."""

    def __init__(self, pod_netns: str, runtime: Runtime | None = None):
        self.netns, self.runtime = pod_netns, runtime

    def command(self, url: str, canary: str, timeout_s: float = 5.0) -> list[str]:
        # https: as `curl -k` (ALPN h2 and http/1.1 offered, no client certificate, the app's self-signed
        # certificate not verified), within the TCP probes' deadline.
        tls = ["-k"] if url.startswith("https:") else []
        return netns.exec_prefix(self.netns, APP_UID) + [
            # GET with a body (httpbin's /headers takes only GET): the canary travels in a header and the body.
            "curl", "-sS", *tls, "--max-time", str(PROBE_DEADLINE_S if tls else timeout_s), "-X", "GET",
            "-H", f"{CANARY_HEADER}: {canary}", "--data-binary", f"canary={canary}", "--include", url]

    def request(self, url: str, canary: str) -> CurlResult:
        cmd = self.command(url, canary)
        started = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        elapsed = (time.perf_counter() - started) * 1000
        status, headers, body = _split_response(proc.stdout)
        return CurlResult(status, proc.returncode, body, proc.stderr.strip(), headers, shlex.join(cmd), elapsed)

    def tcp(self, host: str, port: int, canary: str, app: str) -> TcpProbeResult:
        """One TCP probe (tcp_probe.probe) of a tcp_servers app: the canary line echoed (with tcp-echo's prefix),
        after the greeting for banner."""
        cmd = netns.exec_prefix(self.netns, APP_UID) + [
            "env", *self.runtime.app_env(), str(self.runtime.python), "-m", "tcp_probe", host, str(port), canary,
            *app_arguments(app, tcp_servers.ECHO_PREFIX.decode())]
        started = time.perf_counter()
        # The client's own deadline ends it; this bound only keeps a hung interpreter from hanging the run.
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=PROBE_DEADLINE_S + 30)
        elapsed = (time.perf_counter() - started) * 1000
        account = read_account(proc.stdout) or {
            "result": "error", "detail": f"the TCP probe client printed no account (exit {proc.returncode}): "
                                        f"{proc.stderr.strip()[-300:]}"}
        return TcpProbeResult(account, proc.returncode, shlex.join(cmd), elapsed)


def _split_response(output: str) -> tuple[int | None, dict[str, str], str]:
    """curl --include: status line and headers, a blank line, then the body."""
    if not output.startswith("HTTP/"):
        return None, {}, output
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body
