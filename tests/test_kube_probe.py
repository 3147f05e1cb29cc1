"""Reading one kube probe: the curl output in the sleep pod and go-httpbin's /headers echo (Istio's sample
httpbin lists every header's values, unlike python httpbin)."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading

import pytest

from cluster.backend import RESPONSE_FLAGS_HEADER, outcome_of
from cluster.kube.backend import CURL_WRITE_OUT, parse_curl_output, read_probe, split_proxy_report
from suites.expectations import RULES
from suites.interpret import which_503

SLEEP = "spiffe://cluster.local/ns/sleep-k1/sa/sleep"
XFCC_SLEEP = [f'By=spiffe://cluster.local/ns/httpbin-k1/sa/httpbin;Hash=ab;Subject="";URI={SLEEP}']


def go_httpbin_headers(xfcc: list[str] | None, canary: str | None = "mp-canary-1") -> str:
    headers = {"Host": ["httpbin.httpbin-k1.svc.cluster.local:8000"]}
    if canary is not None:
        headers["X-Meshproof-Canary"] = [canary]
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


def test_a_200_that_echoes_this_probes_canary_is_its_answer():
    outcome, status, identity, detail = read_probe(go_httpbin_headers(XFCC_SLEEP) + "\n200", "", 0, "mp-canary-1")
    assert (outcome, status, identity, detail) == ("mtls", 200, SLEEP, None)


@pytest.mark.parametrize("echoed", ["mp-canary-2", None], ids=["another-probe", "no-canary"])
def test_a_200_for_another_request_is_a_harness_error(echoed):
    """A 200 that does not carry this probe's canary (a reused or mixed-up answer) proves nothing about it."""
    outcome, status, identity, detail = read_probe(go_httpbin_headers(XFCC_SLEEP, echoed) + "\n200", "", 0,
                                                   "mp-canary-1")
    assert (outcome, status, identity) == ("error", 200, SLEEP)
    assert "did not echo this probe's canary mp-canary-1" in detail


def test_the_canary_check_leaves_refusals_alone():
    body = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    assert read_probe(body + "\n503", "", 0, "mp-canary-1")[0] == "503"
    assert read_probe("\n000", "curl: (56) Recv failure", 56, "mp-canary-1")[0] == "reset"


def test_the_identity_a_cluster_gives_the_rendered_client_is_the_oracles_for_the_run():
    """Istio names a workload spiffe://<trust domain>/ns/<pod namespace>/sa/<pod service account>. Built from
    the Deployment the backend renders, echoed by go-httpbin as the server sidecar forwards it (XFCC URI), read
    by the probe: it must be exactly what the oracle predicts for the scenario in the run's namespaces."""
    from cluster.kube.render import Images, Revisions, run_names, workload_docs
    from suites.expectations import expect
    from tests.kube_scenarios import PA_STRICT, RUN, scenario

    scn = scenario([PA_STRICT])
    [sleep] = [d for d in workload_docs(scn, RUN, Images(), Revisions())
               if d["kind"] == "Deployment" and d["metadata"]["name"] == "sleep"]
    given = (f"spiffe://cluster.local/ns/{sleep['metadata']['namespace']}"
             f"/sa/{sleep['spec']['template']['spec']['serviceAccountName']}")
    xfcc = [f'By=spiffe://cluster.local/ns/httpbin-{RUN}/sa/httpbin;Hash=ab;Subject="";URI={given}']
    outcome, _, identity, _ = read_probe(go_httpbin_headers(xfcc) + "\n200", "", 0, "mp-canary-1")
    predicted = expect(run_names(scn, RUN).rewrite_scenario(scn))
    assert (outcome, identity) == (predicted.outcome, predicted.peer_identity) == ("mtls", given)
    assert expect(scn).peer_identity != identity  # the scenario's own names are not what a run presents


class _EnvoyLike503(http.server.BaseHTTPRequestHandler):
    """Answers as a client sidecar with the response-flags EnvoyFilter does after a failed TLS handshake."""

    def do_GET(self):
        body = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
        self.send_response(503)
        self.send_header(RESPONSE_FLAGS_HEADER, "URX,UF")
        self.send_header(RESPONSE_FLAGS_HEADER + "-reason",
                         "TLS_error:|268435703:SSL_routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_probes_curl_command_carries_the_client_sidecars_report_to_the_cell():
    """Real curl with the probe's own -w format against a loopback server answering as a sidecar would: the
    report comes back apart from the body, and the 503 cell of that rule accepts it. Proves the curl side only;
    that Istio's sidecar adds the headers (cluster/manifests/response-flags.yaml) needs a cluster."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _EnvoyLike503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "-", "-w", CURL_WRITE_OUT,
                               f"http://127.0.0.1:{server.server_port}/headers"],
                              check=False, capture_output=True, text=True)
    finally:
        server.shutdown()
    stdout, report = split_proxy_report(done.stdout)
    assert report == {"response_flags": "URX,UF", "transport_failure":
                      "TLS_error:|268435703:SSL_routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end"}
    outcome, status, _, detail = read_probe(stdout, done.stderr, done.returncode, "mp-canary-1")
    assert (outcome, status) == ("503", 503) and detail.startswith("upstream connect error")
    assert which_503(RULES["tls-to-naked-server-503"].envoy.to_json(), report) is None
    assert which_503(RULES["app-tls-to-permissive-503"].envoy.to_json(), report)


def test_an_answer_without_the_report_line_has_no_report():
    assert split_proxy_report(go_httpbin_headers(None) + "\n200") == (go_httpbin_headers(None) + "\n200", None)
    assert split_proxy_report("\nmeshproof-proxy-report\t-\t-\n200")[1] == {"response_flags": None,
                                                                          "transport_failure": None}
