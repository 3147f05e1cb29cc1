"""The client identity the server application saw, read from httpbin's `/headers` echo.

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
