"""Canary markers: a unique token per probe, sent in a header and in the body, searched for on the wire."""

from __future__ import annotations

import secrets

PREFIX = "mp-canary-"


def new_canary() -> str:
    """A token no other probe, log line or certificate will contain by chance (64 random bits)."""
    return f"{PREFIX}{secrets.token_hex(8)}"
