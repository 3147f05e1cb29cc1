"""The adversary suite's cells: a sleep pod without a sidecar speaks TLS itself (openssl s_client) straight to
the httpbin pod's target port, with each credential below, against STRICT, PERMISSIVE and DISABLE.

The oracle predicts each handshake (suites/expectations.py expect_handshake, with the Istio rule it rests
on); the backend runs it (MeshBackend.tls_handshake) and proves it on the wire: where the handshake stopped
and who ended it (a TLS alert from the server, or a connection it closed without a TLS answer).
"""

from __future__ import annotations

import json

import allure
import pytest

from cluster.backend import HandshakeResult, TlsAttempt
from meshproof.scenario import scenario_from_dict
from reports import allure_cell
from reports.categories import HARNESS_ERROR, PLAINTEXT_LEAK, UNEXPECTED_OUTCOME
from suites.cells import pa, scenario
from suites.expectations import HandshakePrediction, expect_handshake

CLIENT_ID = "spiffe://cluster.local/ns/sleep/sa/sleep"
ISTIO_ALPN = ("istio-http/1.1", "istio")  # what a sidecar offers for HTTP/1.1 (xds/filters/filters.go Alpn)
MODES = ("STRICT", "PERMISSIVE", "DISABLE")

# The credentials of issue 13. The ones with a certificate offer Istio's ALPN, so that PERMISSIVE's mTLS chain
# (not only its ALPN match) is what judges them; "no client certificate" is plain one-way TLS, as curl sends.
ATTEMPTS: dict[str, TlsAttempt] = {
    "no-client-cert": TlsAttempt(None),
    "self-signed": TlsAttempt("self-signed", CLIENT_ID, alpn=ISTIO_ALPN),
    "other-ca": TlsAttempt("other-ca", CLIENT_ID, alpn=ISTIO_ALPN),
    "mesh-ca-other-trust-domain": TlsAttempt("mesh", "spiffe://evil.example/ns/sleep/sa/sleep", alpn=ISTIO_ALPN),
    "mesh-cert-expired": TlsAttempt("mesh", CLIENT_ID, expired=True, alpn=ISTIO_ALPN),
    "mesh-cert-other-workload": TlsAttempt("mesh", "spiffe://cluster.local/ns/other/sa/other", alpn=ISTIO_ALPN),
    "istio-alpn-no-cert": TlsAttempt(None, alpn=ISTIO_ALPN),
    "tls12-only": TlsAttempt("mesh", CLIENT_ID, alpn=ISTIO_ALPN, versions=("TLSv1.2",)),
    "tls10-11": TlsAttempt("mesh", CLIENT_ID, alpn=ISTIO_ALPN, versions=("TLSv1", "TLSv1.1")),
}


def adversary_cells() -> list[tuple[str, dict, TlsAttempt]]:
    """(cell id, scenario dict, attempt): every credential against every server mode."""
    return [(f"adversary/pa-{mode.lower()}/{name}",
             scenario([pa(mode)], client_sidecar=False, description=f"{name} against {mode}",
                      tags=["adversary", f"pa-{mode.lower()}", name]), attempt)
            for mode in MODES for name, attempt in ATTEMPTS.items()]


def run_handshake_cell(mesh, options, cell_id: str, scenario_dict: dict, attempt: TlsAttempt) -> None:
    scn = scenario_from_dict(scenario_dict, source=f"cell {cell_id}")
    prediction = expect_handshake(scn, attempt)
    allure_cell.describe(cell_id, scn, tuple(scenario_dict["tags"]), mesh.name)
    allure.dynamic.title(f"{scenario_dict['description']} ⇒ {prediction.outcome}")
    allure.dynamic.description(f"{prediction.reason}\n\nRule `{prediction.rule}`: {prediction.source}")
    handle = mesh.deploy(scn)
    try:
        with allure.step("handshake from the sidecar-less client to the server pod's port"):
            result = mesh.tls_handshake(handle, attempt, capture=options.capture)
            allure.attach(json.dumps(result.to_json(), indent=1, default=str), "handshake.json",
                          allure.attachment_type.JSON)
    finally:
        mesh.teardown(handle)
    problem = compare_handshake(prediction, result, captured=options.capture)
    if problem:
        pytest.fail(problem, pytrace=False)


def compare_handshake(prediction: HandshakePrediction, result: HandshakeResult, captured: bool) -> str:
    """'' when the handshake went as predicted, else a one-line failure starting with its category."""
    stop = (result.wire.handshake if result.wire else None) or {}
    summary = (f"expected {prediction.outcome} ({prediction.refusal or prediction.peer_identity}) by rule "
               f"{prediction.rule}; observed {result.outcome} (alert {result.alert}, server refusal "
               f"{result.server_refusal}, {result.tls_version}, http {result.http_status}, peer "
               f"{result.peer_identity}; wire: {stop.get('stopped')}); {result.detail}")
    if result.outcome == "error" or (captured and not result.wire):
        return f"{HARNESS_ERROR} {summary}"
    if captured and result.wire.canary_in_clear:
        return f"{PLAINTEXT_LEAK} the adversary's request crossed the wire in clear; {summary}"
    problems = []
    if result.outcome != prediction.outcome:
        problems.append("outcome")
    if result.server_refusal is not None and result.server_refusal != prediction.refusal:
        problems.append("refusal")
    if prediction.outcome == "accepted":
        if (result.peer_identity, result.tls_version) != (prediction.peer_identity, prediction.tls_version):
            problems.append("identity/version")
        if captured and stop.get("server_hello") != prediction.tls_version:
            problems.append(f"wire (ServerHello {stop.get('server_hello')})")
    elif captured:
        problems += _wire_refusal_problems(prediction, stop)
    return f"{UNEXPECTED_OUTCOME} {'+'.join(problems)} differ: {summary}" if problems else ""


def _wire_refusal_problems(prediction: HandshakePrediction, stop: dict) -> list[str]:
    """A refusal must be the server's, on the wire: it closed the connection, after a TLS alert (or, for
    "closed", without sending a single byte)."""
    problems = []
    if not stop.get("server_closed"):
        problems.append("the server did not close the connection")
    sent = stop.get("server_bytes", 0)
    if prediction.outcome == "closed" and sent:
        problems.append(f"the server sent {sent} bytes before closing")
    if prediction.outcome == "alert" and not sent:
        problems.append("no TLS alert from the server on the wire")
    return [f"wire ({'; '.join(problems)})"] if problems else []
