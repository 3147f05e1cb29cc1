"""The adversary's TLS client: `openssl s_client` run in a pod without a sidecar, and what it and the wire say.

    s_client_command(host, port, versions, alpn, cert, key) -> argv   (the same on every backend)
    read_s_client(exit code, stdout, stderr) -> {outcome, alert, tls_version, http_status, body}
    handshake_stop(judged capture) -> where the handshake stopped on the wire and who closed the connection

openssl is a real TLS client (OpenSSL 3 on Debian, the same in the kube capture image), so a refusal is the
server's own: a TLS alert it sent, or a connection it closed without answering.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from probes.verdict import WireVerdict

REQUEST = "GET /headers HTTP/1.1\r\nHost: httpbin\r\n{header}: {canary}\r\nConnection: close\r\n\r\n"
_ALERT = re.compile(r"(?:sslv3|tlsv1|tlsv13) alert ([a-z ]+?):.*?SSL alert number (\d+)")
_VERSION = re.compile(r"^Protocol version: (\S+)", re.MULTILINE)
_STATUS = re.compile(r"^HTTP/1\.[01] (\d{3})", re.MULTILINE)
LEGACY_VERSIONS = ("TLSv1", "TLSv1.1")  # OpenSSL 3 offers them only at security level 0


def s_client_command(host: str, port: int, versions: tuple[str, ...], alpn: tuple[str, ...] = (),
                     cert: str | None = None, key: str | None = None) -> list[str]:
    """argv of one handshake; the HTTP request goes to its stdin (REQUEST). -ign_eof keeps reading the answer
    after stdin ends; the server's certificate is not checked (the adversary does not care who answers)."""
    argv = ["openssl", "s_client", "-connect", f"{host}:{port}", "-brief", "-ign_eof",
            "-min_protocol", versions[0], "-max_protocol", versions[-1]]
    if versions[0] in LEGACY_VERSIONS:
        argv += ["-cipher", "DEFAULT@SECLEVEL=0"]
    if alpn:
        argv += ["-alpn", ",".join(alpn)]
    if cert:
        argv += ["-cert", cert, "-key", key or cert]
    return argv


def read_s_client(exit_code: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The client's view: accepted (an HTTP answer came back over TLS), alert (the peer sent a TLS alert),
    closed (the connection ended without either) or error (openssl could not even try)."""
    alert = _ALERT.search(stderr)
    version = _VERSION.search(stderr)
    status = _STATUS.search(stdout)
    body = stdout.partition("\r\n\r\n")[2] or stdout.partition("\n\n")[2]
    if status:
        outcome = "accepted"
    elif alert:
        outcome = "alert"
    elif "CONNECTED" in stderr or "CONNECTION ESTABLISHED" in stderr or "errno=" in stderr \
            or "unexpected eof" in stderr or "Connection reset" in stderr:
        outcome = "closed"
    else:
        outcome = "error"
    return {"outcome": outcome, "alert": f"{alert.group(1)} ({alert.group(2)})" if alert else None,
            "tls_version": version.group(1) if version else None,
            "http_status": int(status.group(1)) if status else None, "body": body,
            "detail": f"openssl exit {exit_code}: " + " | ".join(stderr.strip().splitlines()[-2:])}


def handshake_stop(judged: WireVerdict) -> dict[str, Any]:
    """Where the handshake of the probe's flow stopped, read from the capture: what the server sent after the
    ClientHello (nothing, a cleartext alert, a ServerHello and encrypted records) and which side closed how."""
    flow = next((f for f in judged.flows if f.get("probe_flow")), None)
    if flow is None:
        return {"stopped": "no flow to the server was captured", "server_bytes": 0}
    hello = (flow.get("tls") or {}).get("server_hello")
    records = flow["to_client"].get("records", {})
    server_bytes = flow["to_client"]["bytes"]
    closed = {"server": flow.get("server_closed"), "client": flow.get("client_closed")}
    if server_bytes == 0:
        stopped = "at the ClientHello: the server sent no byte"
    elif hello is None and records.get("alert"):
        stopped = "at the ClientHello: the server answered with a cleartext TLS alert"
    elif hello is None:
        stopped = "at the ClientHello: the server answered without a ServerHello"
    elif records.get("alert"):
        stopped = f"after the ServerHello ({hello['version']}): the server sent a TLS alert record"
    else:
        stopped = (f"after the ServerHello ({hello['version']}): the server sent "
                   f"{records.get('application_data', 0)} encrypted record(s)")
    how = {"rst": "reset", "fin": "closed"}
    stopped += "; " + (f"then the server {how[closed['server']]} the connection" if closed["server"]
                       else "the server did not close the connection")
    return {"stopped": stopped, "server_hello": hello["version"] if hello else None, "server_records": records,
            "server_bytes": server_bytes, "server_closed": closed["server"], "client_closed": closed["client"]}
