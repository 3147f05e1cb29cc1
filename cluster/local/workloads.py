"""The two applications of every scenario: httpbin (PyPI httpbin under gunicorn) and sleep (a curl client).

Both run inside their pod as APP_UID: not the proxy's 1337 (interception must apply to them) and not 1000
(taken on this image).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.local import netns
from cluster.local.runtime import Runtime
from probes.canary import HEADER as CANARY_HEADER

APP_UID = 1717


class Httpbin:
    """httpbin in one pod; or, with `serves` (other pods' namespace and port), one process answering in every
    one of those pods too: its listening sockets are made inside each pod's network namespace and handed to
    gunicorn (`--bind fd://N`), so each pod still answers on its own address and port and only the process
    (about 50 MB and a second of start-up CPU per pod) is shared (a co-deployment's server pods)."""

    def __init__(self, pod_netns: str, pod_dir: Path, port: int, runtime: Runtime,
                 serves: tuple[tuple[str, int], ...] = ()):
        self.netns, self.dir, self.port, self.runtime = pod_netns, pod_dir, port, runtime
        self.serves = serves
        self.process: subprocess.Popen | None = None

    def start(self, record_pid) -> None:
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        os.chown(home, APP_UID, APP_UID)
        listeners = [netns.listen(name, port) for name, port in ((self.netns, self.port), *self.serves)] \
            if self.serves else []
        binds = [f"fd://{s.fileno()}" for s in listeners] or [f"0.0.0.0:{self.port}"]
        cmd = netns.exec_prefix(self.netns, APP_UID) + [
            "env", f"HOME={home}", *self.runtime.app_env(), str(self.runtime.python), "-m", "gunicorn",
            *(arg for bind in binds for arg in ("-b", bind)), "-w", "1", "--log-level", "warning",
            "--no-control-socket", "--log-file=-", "httpbin:app"]
        try:
            with open(self.dir / "httpbin.log", "ab") as log:
                self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=home, start_new_session=True,
                                                pass_fds=[s.fileno() for s in listeners])
        finally:
            for sock in listeners:  # gunicorn holds them now
                sock.close()
        record_pid(self.process.pid)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until it answers: a socket made for it listens before gunicorn runs, so an open port says nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"httpbin in {self.netns} exited: {self._log_tail()}")
            if netns.answers(self.netns, "127.0.0.1", self.port):
                return
            time.sleep(0.005)
        raise TimeoutError(f"httpbin in {self.netns} not answering on {self.port} after {timeout}s")

    def _log_tail(self) -> str:
        try:
            return " | ".join((self.dir / "httpbin.log").read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)  # gunicorn master and its worker share the group
            except ProcessLookupError:
                pass
            self.process.wait()


@dataclass
class CurlResult:
    http_status: int | None
    curl_exit: int
    body: str
    stderr: str
    headers: dict[str, str]
    command: str
    elapsed_ms: float


class Sleep:
    """The curl client. Each probe is one curl process started with `ip netns exec` as APP_UID."""

    def __init__(self, pod_netns: str):
        self.netns = pod_netns

    def command(self, url: str, canary: str, timeout_s: float = 5.0) -> list[str]:
        return netns.exec_prefix(self.netns, APP_UID) + [
            # GET with a body (httpbin's /headers takes only GET): the canary travels in a header and the body.
            "curl", "-sS", "--max-time", str(timeout_s), "-X", "GET", "-H", f"{CANARY_HEADER}: {canary}",
            "--data-binary", f"canary={canary}", "--include", url]

    def request(self, url: str, canary: str) -> CurlResult:
        cmd = self.command(url, canary)
        started = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        elapsed = (time.perf_counter() - started) * 1000
        status, headers, body = _split_response(proc.stdout)
        return CurlResult(status, proc.returncode, body, proc.stderr.strip(), headers, shlex.join(cmd), elapsed)


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
