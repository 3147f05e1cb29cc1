"""Reading one kube probe: the curl output in the sleep pod and go-httpbin's /headers echo (Istio's sample
httpbin lists every header's values, unlike python httpbin)."""

from __future__ import annotations

import json

from cluster.backend import outcome_of
from cluster.kube.backend import parse_curl_output

SLEEP = "spiffe://cluster.local/ns/sleep-k1/sa/sleep"


def go_httpbin_headers(xfcc: list[str] | None) -> str:
    headers = {"Host": ["httpbin.httpbin-k1.svc.cluster.local:8000"], "X-Meshproof-Canary": ["mp-canary-1"]}
    if xfcc is not None:
        headers["X-Forwarded-Client-Cert"] = xfcc
    return json.dumps({"headers": headers})


def test_mtls_answer_gives_the_client_identity():
    xfcc = [f'By=spiffe://cluster.local/ns/httpbin-k1/sa/httpbin;Hash=ab;Subject="";URI={SLEEP}']
    status, identity, detail = parse_curl_output(go_httpbin_headers(xfcc) + "\n200", "")
    assert (status, identity, detail) == (200, SLEEP, None)
    assert outcome_of(status, 0, None, identity) == "mtls"


def test_last_xfcc_element_is_the_hop_next_to_the_app():
    xfcc = ["URI=spiffe://cluster.local/ns/x/sa/earlier", f"URI={SLEEP}"]
    assert parse_curl_output(go_httpbin_headers(xfcc) + "\n200", "")[1] == SLEEP


def test_plaintext_answer_has_no_identity():
    status, identity, _ = parse_curl_output(go_httpbin_headers(None) + "\n200", "")
    assert (status, identity) == (200, None)
    assert outcome_of(status, 0, None, identity) == "plaintext"


def test_sidecar_503_keeps_envoys_reason():
    body = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    status, identity, detail = parse_curl_output(body + "\n503", "")
    assert (status, identity, detail) == (503, None, body)
    assert outcome_of(status, 0, None, identity) == "503"


def test_reset_has_no_status_and_keeps_curls_error():
    status, identity, detail = parse_curl_output("\n000", "curl: (56) Recv failure: Connection reset by peer")
    assert (status, identity) == (None, None)
    assert "Connection reset" in detail
    assert outcome_of(status, 56, None, identity) == "reset"


def test_garbage_is_not_an_identity():
    assert parse_curl_output("<html>oops</html>\n200", "")[1] is None
    assert parse_curl_output('{"headers": ["not", "a", "map"]}\n200', "")[1] is None
