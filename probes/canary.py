"""Canary markers: a unique token per probe, sent in a header and in the body, searched for on the wire."""

from __future__ import annotations

import json
import secrets

PREFIX = "mp-canary-"
HEADER = "X-Meshproof-Canary"  # the request header a probe sends its canary in


def new_canary() -> str:
    """A token no other probe, log line or certificate will contain by chance (64 random bits)."""
    return f"{PREFIX}{secrets.token_hex(8)}"


def echoed_canary(body: str | bytes) -> str | None:
    """The canary an httpbin `/headers` answer echoes back (python httpbin gives each header a string,
    go-httpbin a list of values, joined here as HTTP joins repeated headers); None when the body is not that
    JSON or holds no canary header. A 200 that does not echo the probe's own canary answered another request."""
    try:
        headers = json.loads(body).get("headers")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    if not isinstance(headers, dict):
        return None
    value = next((v for k, v in headers.items() if k.lower() == HEADER.lower()), None)
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return value if isinstance(value, str) else None
