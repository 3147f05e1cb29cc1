"""The client identity the server side saw: from httpbin's `/headers` echo (HTTP), or from the server sidecar's
own access log (TCP, and TLS it passes through, which carry no header).

A mesh sidecar that terminates mTLS sets X-Forwarded-Client-Cert (XFCC), e.g.
`By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=...;Subject="";URI=spiffe://cluster.local/ns/foo/sa/sleep`.
Several proxies may each append an element (comma separated); the last one is the hop nearest the app.
"""

from __future__ import annotations

import json

XFCC = "x-forwarded-client-cert"


def peer_identity_from_headers(body: str | bytes) -> str | None:
    """The URI (SPIFFE ID) of the last XFCC element in an httpbin `/headers` JSON body; None when the body is
    not that JSON (an error page, an empty answer) or the app saw no XFCC / no URI in it."""
    try:
        echoed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    headers = echoed.get("headers") if isinstance(echoed, dict) else None
    if not isinstance(headers, dict):
        return None
    value = next((v for k, v in headers.items() if k.lower() == XFCC), None)
    if not isinstance(value, str) or not value.strip():
        return None
    elements = _split(value, ",")
    for key, _, field_value in (pair.partition("=") for pair in _split(elements[-1], ";")):
        if key.strip().lower() == "uri" and field_value.strip():
            return _unquote(field_value.strip())
    return None


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes (XFCC quotes Subject and DNS values that contain , or ;)."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


# --- The server sidecar's own account (TCP, and TLS it passes through: no XFCC) ------------------------------

PEER_LOG_MARK = "meshproof-peer"
# The access log (JSON, to the sidecar's stdout) that both meshes add to the server sidecar's inbound tcp_proxy
# filters: the client certificate's URI SAN it verified ("-"/null when it terminated no TLS or got none), the TLS
# version and SNI it terminated, and the client address a probe's line is picked by.
PEER_LOG_FORMAT = {"meshproof": PEER_LOG_MARK, "downstream": "%DOWNSTREAM_REMOTE_ADDRESS%",
                   "peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%", "tls_version": "%DOWNSTREAM_TLS_VERSION%",
                   "sni": "%REQUESTED_SERVER_NAME%", "upstream_cluster": "%UPSTREAM_CLUSTER%",
                   "response_flags": "%RESPONSE_FLAGS%", "bytes_received": "%BYTES_RECEIVED%"}


def peer_log_entries(log_text: str) -> list[dict[str, str]]:
    """The peer-identity access log lines in a sidecar's log, oldest first."""
    entries = []
    for line in log_text.splitlines():
        if PEER_LOG_MARK not in line or not line.lstrip().startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("meshproof") == PEER_LOG_MARK:
            entries.append(entry)
    return entries


def server_account(before: list[dict[str, str]], after: list[dict[str, str]], client_ip: str) -> dict | None:
    """The server sidecar's line for this probe: the newest of the lines logged since `before` whose downstream
    address is the client pod's (probes never overlap on one pod pair). A shorter log (the proxy restarted)
    counts from its start."""
    new = after[len(before):] if len(after) >= len(before) else after
    mine = [e for e in new if e.get("downstream", "").rsplit(":", 1)[0].strip("[]") == client_ip]
    return mine[-1] if mine else None


def account_identity(account: dict | None) -> str | None:
    """The client identity the server sidecar verified: none when it terminated no TLS or got no certificate
    (Envoy's JSON log writes such a field as null; its text log as "-")."""
    san = (account or {}).get("peer_uri_san")
    return None if san in (None, "", "-") else san
