"""How an observation maps to the oracle's outcome vocabulary (cluster/backend.py outcome_of)."""

import pytest

from cluster.backend import outcome_of

PEER = "spiffe://cluster.local/ns/sleep/sa/sleep"


@pytest.mark.parametrize("status,curl_exit,wire,peer,outcome", [
    (200, 0, "mtls", PEER, "mtls"),
    (200, 0, "plaintext", None, "plaintext"),
    (200, 0, "plaintext", PEER, "plaintext"),  # an identity header over cleartext is no proof of mTLS
    (200, 0, "app-tls", PEER, "mtls"),  # MUTUAL: TLS without Istio ALPN, client authenticated by the sidecar
    (200, 0, "app-tls", None, "app-tls"),
    (200, 0, "none", None, "200-none"),
    (503, 0, "mtls", None, "503"),
    (None, 56, None, None, "reset"),
    (0, 7, "none", None, "reset"),
    (200, 0, None, PEER, "mtls"),  # without capture the identity the app saw decides
    (200, 0, None, None, "plaintext"),
])
def test_outcome_of(status, curl_exit, wire, peer, outcome):
    assert outcome_of(status, curl_exit, wire, peer) == outcome


@pytest.mark.parametrize("status,curl_exit,wire,peer,outcome", [
    (200, 0, "app-tls", None, "app-tls"),
    (200, 0, None, None, "app-tls"),  # no capture: the app's own TLS is there anyway
    (200, 0, "mtls", None, "mtls"),  # the app's TLS inside Istio mTLS is mTLS on the wire
    (None, 28, None, None, "timeout"),  # curl's --max-time ran out: the probe's deadline
    (None, 35, "app-tls", None, "reset"),
])
def test_outcome_of_the_https_app(status, curl_exit, wire, peer, outcome):
    assert outcome_of(status, curl_exit, wire, peer, app_tls=True) == outcome


def test_httpbin_probes_keep_their_words_at_curls_deadline():
    assert outcome_of(None, 28, None, None) == "reset"
