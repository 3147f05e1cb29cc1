"""A loopback HTTP server that answers the Kubernetes API paths a kube self-test names, for the official
client to talk to. It is not a cluster: each test gives the answers and says what its exchange proves
(which requests the client sends, in which order, on which transport). Requests are recorded.

Exec (`pods/<name>/exec`) is a real WebSocket upgrade with the v4.channel.k8s.io framing the API server
uses: channel 1 stdout, 2 stderr, 3 the final Status; the test decides what runs (e.g. the command in a
network namespace of its own) and may hold the handshake to order concurrent calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

from kubernetes import client

from cluster.kube.client import Cluster

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
PROTOCOL = "v4.channel.k8s.io"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: object = None

    @property
    def websocket(self) -> bool:
        return self.headers.get("upgrade", "").lower() == "websocket"


@dataclass
class ExecCall:
    namespace: str
    pod: str
    container: str
    command: list[str]


Answer = tuple[int, object]  # (HTTP status, JSON body)


@dataclass
class FakeApiServer:
    """routes: (METHOD, path regex) -> function(Request, match) -> (status, body): JSON, bytes sent as they are,
    or a str sent as text/plain (a pod's log). Unrouted: 404 Status."""

    routes: list[tuple[str, str, Callable[[Request, re.Match], Answer]]] = field(default_factory=list)
    # exec: function(ExecCall) -> (exit code, stdout, stderr), or None to refuse the upgrade (403)
    on_exec: Callable[[ExecCall], tuple[int, str, str] | None] | None = None
    requests: list[Request] = field(default_factory=list)

    def route(self, method: str, pattern: str, answer: Callable[[Request, re.Match], Answer] | Answer) -> None:
        self.routes.append((method, pattern, answer if callable(answer) else (lambda *_: answer)))

    def __enter__(self) -> Self:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._serve()

            def do_POST(self):
                self._serve()

            def do_PATCH(self):
                self._serve()

            def do_DELETE(self):
                self._serve()

            def _serve(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Request(self.command, url.path, parse_qs(url.query),
                                  {k.lower(): v for k, v in self.headers.items()},
                                  json.loads(raw) if raw else None)
                server.requests.append(request)
                if request.websocket and url.path.endswith("/exec"):
                    self._exec(request)
                    return
                for method, pattern, answer in server.routes:
                    match = re.fullmatch(pattern, url.path)
                    if method == self.command and match:
                        status, body = answer(request, match)
                        break
                else:
                    status, body = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "reason": "NotFound", "code": 404, "message": f"no route {url.path}"}
                self._json(status, body)

            def _json(self, status: int, body: object) -> None:
                raw = isinstance(body, bytes)  # a file, sent as it is
                text = isinstance(body, str)  # plain text, as pods/<name>/log answers
                data = body if raw else body.encode() if text else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw else "text/plain" if text
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _exec(self, request: Request) -> None:
                parts = request.path.strip("/").split("/")  # api v1 namespaces NS pods POD exec
                call = ExecCall(parts[3], parts[5], request.query.get("container", [""])[0],
                                request.query.get("command", []))
                done = server.on_exec(call) if server.on_exec else None
                if done is None:
                    self._json(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                                     "reason": "Forbidden", "message": "exec refused by the test"})
                    return
                accept = base64.b64encode(hashlib.sha1(
                    (request.headers["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.send_header("Sec-WebSocket-Protocol", PROTOCOL)
                self.end_headers()
                code, stdout, stderr = done
                for channel, text in ((1, stdout), (2, stderr)):
                    if text:
                        self.wfile.write(_frame(bytes([channel]) + text.encode()))
                status = {"metadata": {}, "status": "Success"} if code == 0 else {
                    "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
                self.wfile.write(_frame(bytes([3]) + json.dumps(status).encode()))
                self.wfile.write(_frame(struct.pack("!H", 1000), opcode=0x8))  # close
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def cluster(self) -> Cluster:
        configuration = client.Configuration()
        configuration.host = self.host
        configuration.retries = 0
        return Cluster(client.ApiClient(configuration), "fake", self.host, "v0.0.0-fake")

    def seen(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]


def _frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One unmasked server frame (FIN set): binary by default."""
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        head += bytes([len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([127]) + struct.pack("!Q", len(payload))
    return head + payload


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{host}"}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
users: [{{name: u, user: {{token: not-a-secret}}}}]
"""
VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "x", "gitTreeState": "clean",
           "buildDate": "2025-08-27T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}


def kubeconfig_for(api: FakeApiServer, path) -> str:
    """A kubeconfig file naming this server, for code that connects itself (connect(), clean_leftovers);
    the server then answers /version as a v1.34 API server."""
    api.route("GET", "/version/?", (200, VERSION))
    path.write_text(KUBECONFIG.format(host=api.host))
    return str(path)


def status_failure(code: int, reason: str, message: str) -> Answer:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
                  "message": message}
