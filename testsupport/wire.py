"""A WireVerdict for self-tests that need one without a capture: the facts a test names, neutral values for
the rest."""

from __future__ import annotations

from typing import Any

from meshproof.vocabulary import Wire
from probes.verdict import WireVerdict

NEUTRAL: dict[str, Any] = {
    "reason": "", "sni": None, "alpn": None, "offered_versions": None, "tls_version": None, "cipher": None,
    "certificates_visible": False, "certificate_uris": [], "canary_in_clear": False, "leaking_flows": [],
    "request_in_clear": False, "response_in_clear": False, "http_request_line": None, "http_status_on_wire": None,
    "request": "none", "response": "none", "packets": 0, "pcap": "", "flows": [],
}


def wire_verdict(verdict: str = "mtls", **facts: Any) -> WireVerdict:
    return WireVerdict(verdict=Wire(verdict), **{**NEUTRAL, **facts})
