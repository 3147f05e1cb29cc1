"""The interpreter that turns prediction vs observation into a pass or a one-line, categorised failure."""

from dataclasses import replace
from types import SimpleNamespace

import pytest

from cluster.backend import ProbeResult
from suites.expectations import RULES
from suites.interpret import HARNESS_ERROR, PLAINTEXT_LEAK, UNEXPECTED_OUTCOME, WEAK_TLS, compare
from testsupport.wire import wire_verdict

PEER = "spiffe://cluster.local/ns/sleep/sa/sleep"


def prediction(outcome="mtls", wire="mtls", peer=PEER, rule="r"):
    envoy = RULES[rule].envoy.to_json() if rule in RULES and RULES[rule].envoy else None
    return SimpleNamespace(outcome=outcome, wire=wire, peer_identity=peer, rule=rule, reason="why", source="src",
                           envoy=envoy)


def observed(outcome="mtls", wire="mtls", peer=PEER, canary_in_clear=False, status=200, report=None, connections=1):
    # each connection as the capture shows it: its SYN seen, to the probe's server
    flows = [{"probe_flow": True, "syn_seen": True}] * connections + [{"probe_flow": False, "syn_seen": True}]
    return ProbeResult(outcome=outcome, http_status=status, curl_exit=0, peer_identity=peer,
                       wire=wire_verdict(wire, canary_in_clear=canary_in_clear, flows=flows), proxy_report=report)


RESET_AT_CHAIN_MATCH = {"response_flags": "URX,UF", "server_counters": ["listener.0.0.0.0_15006.no_filter_chain_match"],
                        "transport_failure": "TLS_error:|33554536:system_library:OPENSSL_internal:"
                                             "Connection_reset_by_peer:TLS_error_end"}


def test_match_passes():
    assert compare(prediction(), observed(), captured=True).passed


def test_canary_in_clear_under_mtls_policy_is_a_leak_even_when_status_matches():
    verdict = compare(prediction(), observed(canary_in_clear=True), captured=True)
    assert not verdict.passed and verdict.message.startswith(PLAINTEXT_LEAK)


def test_plaintext_200_where_mtls_expected_is_unexpected_outcome():
    verdict = compare(prediction(), observed(outcome="plaintext", wire="plaintext", peer=None), captured=True)
    assert not verdict.passed and verdict.category == UNEXPECTED_OUTCOME
    assert "outcome+wire+identity" in verdict.message and "rule r" in verdict.message


def test_a_reset_must_show_the_request_reaching_the_server():
    reset_expected = prediction(outcome="reset", wire="plaintext", peer=None)
    closed_by_server = observed(outcome="reset", wire="plaintext", peer=None, status=None)
    assert compare(reset_expected, closed_by_server, captured=True).passed
    refused_or_black_holed = observed(outcome="reset", wire="none", peer=None, status=None)
    verdict = compare(reset_expected, refused_or_black_holed, captured=True)
    assert not verdict.passed and "wire" in verdict.message


def test_a_503s_wire_is_recorded_not_judged():
    expected = prediction(outcome="503", wire="mtls", peer=None, rule="istio-mutual-to-disable-503")
    seen = observed(outcome="503", wire="plaintext", peer=None, status=503, report=RESET_AT_CHAIN_MATCH, connections=3)
    assert compare(expected, seen, captured=True).passed


@pytest.mark.parametrize("report, says", [
    ({"response_flags": "UH", "transport_failure": None}, "the client sidecar reported UH"),
    ({**RESET_AT_CHAIN_MATCH, "response_flags": "UF"}, "reported UF with"),
    ({**RESET_AT_CHAIN_MATCH, "transport_failure": "TLS_error:|268435581:SSL_routines:OPENSSL_internal:"
                                                   "CERTIFICATE_VERIFY_FAILED:TLS_error_end"}, "CERTIFICATE_VERIFY"),
    ({**RESET_AT_CHAIN_MATCH, "server_counters": []}, "server sidecar's no_filter_chain_match to move"),
    (None, "reported no proxy account"),
])
def test_a_503_for_another_reason_fails_and_says_which(report, says):
    expected = prediction(outcome="503", wire="app-tls", peer=None, rule="app-tls-to-permissive-503")
    verdict = compare(expected, observed(outcome="503", wire="app-tls", peer=None, status=503, report=report,
                                         connections=3), captured=True)
    assert not verdict.passed and verdict.category == UNEXPECTED_OUTCOME
    assert "503 for another reason" in verdict.message and says in verdict.message, verdict.message


def test_a_target_without_server_counters_is_judged_on_flags_and_reason():
    expected = prediction(outcome="503", wire="app-tls", peer=None, rule="app-tls-to-permissive-503")
    kube_like = {k: v for k, v in RESET_AT_CHAIN_MATCH.items() if k != "server_counters"}
    assert compare(expected, observed(outcome="503", wire="app-tls", peer=None, status=503, report=kube_like,
                                      connections=3), captured=True).passed


@pytest.mark.parametrize("rule, report, attempts", [
    ("app-tls-to-permissive-503", RESET_AT_CHAIN_MATCH, 3),
    ("sidecar-plaintext-to-strict-503",
     {"response_flags": "UC", "server_counters": ["listener.0.0.0.0_15006.no_filter_chain_match"]}, 1),
])
def test_a_503_after_another_number_of_connections_fails(rule, report, attempts):
    # URX says the retries ran out, not how many ran: without Istio's 2 default retries the flags are the same.
    expected = prediction(outcome="503", wire="app-tls", peer=None, rule=rule)
    assert RULES[rule].envoy.attempts == attempts
    for connections in range(5):
        seen = observed(outcome="503", wire="app-tls", peer=None, status=503, report=report, connections=connections)
        verdict = compare(expected, seen, captured=True)
        assert verdict.passed == (connections == attempts), verdict.message
        if connections != attempts:
            assert f"open {attempts} connection(s) to the server, the capture shows {connections}" in verdict.message
        # without a capture there is nothing to count
        assert compare(expected, seen, captured=False).passed


def test_every_503_rule_names_what_envoy_must_report():
    assert all(rule.envoy for rule in RULES.values() if rule.outcome == "503")
    assert not any(rule.envoy for rule in RULES.values() if rule.outcome != "503")


def test_missing_capture_is_a_harness_error_not_a_pass():
    result = observed()
    result.wire = None
    verdict = compare(prediction(), result, captured=True)
    assert not verdict.passed and verdict.category == HARNESS_ERROR


def test_without_capture_identity_still_checked():
    verdict = compare(prediction(), observed(peer="spiffe://cluster.local/ns/evil/sa/x"), captured=False)
    assert not verdict.passed and "identity" in verdict.message


TLS13 = {"version": "TLSv1.3", "certificates_visible": False, "alpn": "istio",
         "sni": "outbound_.8000_._.httpbin.httpbin.svc.cluster.local"}


def test_a_downgraded_handshake_is_weak_tls_not_a_pass():
    expected = prediction()
    expected.tls = TLS13
    seen = observed()
    seen.wire = replace(seen.wire, tls_version="TLSv1.2", certificates_visible=True, certificate_uris=[PEER], alpn=["istio"],
                     sni=TLS13["sni"])
    verdict = compare(expected, seen, captured=True)
    assert not verdict.passed and verdict.category == WEAK_TLS and verdict.message.startswith(WEAK_TLS)
    assert "negotiated TLSv1.2, not TLSv1.3" in verdict.message and PEER in verdict.message
    seen.wire = replace(seen.wire, tls_version="TLSv1.3", certificates_visible=False, certificate_uris=[])
    assert compare(expected, seen, captured=True).passed


def test_missing_istio_alpn_or_sni_is_weak_tls():
    expected = prediction()
    expected.tls = TLS13
    seen = observed()
    seen.wire = replace(seen.wire, tls_version="TLSv1.3", certificates_visible=False, alpn=["http/1.1"], sni="httpbin")
    verdict = compare(expected, seen, captured=True)
    assert verdict.category == WEAK_TLS and "lacks istio" in verdict.message and "SNI 'httpbin'" in verdict.message


def test_a_wrong_outcome_stays_unexpected_outcome_even_over_weak_tls():
    expected = prediction()
    expected.tls = TLS13
    seen = observed(outcome="plaintext", wire="plaintext", peer=None)
    assert compare(expected, seen, captured=True).category == UNEXPECTED_OUTCOME


def test_a_timeout_and_an_app_tls_completion_are_judged_on_the_wire():
    """TCP ports: a server-first client waiting behind a listener filter sent nothing (wire none); a client that
    did send bytes and then timed out is another cell. An app-tls completion must be the app's TLS on the wire."""
    waiting = prediction(outcome="timeout", wire="none", peer=None)
    assert compare(waiting, observed(outcome="timeout", wire="none", peer=None, status=None), captured=True).passed
    sent_bytes = compare(waiting, observed(outcome="timeout", wire="plaintext", peer=None, status=None), captured=True)
    assert not sent_bytes.passed and "wire" in sent_bytes.message
    own_tls = prediction(outcome="app-tls", wire="app-tls", peer=None)
    assert compare(own_tls, observed(outcome="app-tls", wire="app-tls", peer=None), captured=True).passed
    assert not compare(own_tls, observed(outcome="app-tls", wire="mtls", peer=None), captured=True).passed


def test_plaintext_tcp_where_mtls_is_expected_is_a_leak():
    """The TCP canary travels in the payload: a cleartext echo where the oracle says mTLS is a leak."""
    expected = prediction(outcome="mtls", wire="mtls")
    seen = observed(outcome="plaintext", wire="plaintext", peer=None, canary_in_clear=True, status=None)
    verdict = compare(expected, seen, captured=True)
    assert not verdict.passed and verdict.category == PLAINTEXT_LEAK
