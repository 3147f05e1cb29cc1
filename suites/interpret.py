"""Compare what the oracle predicted with what a probe observed, and say what differed in one line.

The first word of a failure message is a category the report groups by (reports/categories.py):
PLAINTEXT LEAK beats UNEXPECTED OUTCOME (outcome, wire or identity differ) beats WEAK TLS (the right outcome over
a handshake weaker than the oracle's TLS facts).
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.categories import HARNESS_ERROR, PLAINTEXT_LEAK, UNEXPECTED_OUTCOME, WEAK_TLS

ENCRYPTED = ("mtls", "app-tls")
# For a 200 the wire is the proof. A reset must show the request reached the server and was closed there (a
# refused or black-holed connection would otherwise pass as enforcement). A 503's wire class is recorded, not
# judged: what a client sidecar sends before giving up is not what the cell is about; how many connections it
# opened is (which_503).
# A timeout must show what the waiting looked like on the wire (nothing sent: "none", which the local capture's
# heartbeat can prove), and an app-tls completion the TLS that was not Istio's.
WIRE_JUDGED = ("mtls", "plaintext", "reset", "app-tls", "timeout")


@dataclass(frozen=True)
class Verdict:
    passed: bool
    category: str  # "" when passed
    message: str  # one line a person reads

    def __bool__(self) -> bool:
        return self.passed


def compare(prediction, result, captured: bool) -> Verdict:
    """prediction: suites.expectations.Prediction; result: cluster.backend.ProbeResult."""
    wire = result.wire
    observed_wire = wire.verdict if captured and wire else None
    summary = (f"expected {prediction.outcome} (wire {prediction.wire}, peer {prediction.peer_identity}) by rule "
               f"{prediction.rule}; observed {result.outcome} (http {result.http_status}, curl {result.curl_exit}, "
               f"wire {observed_wire}, peer {result.peer_identity})")
    detail = f"; envoy: {result.failure_detail}" if result.failure_detail else ""

    if result.outcome == "error" or (captured and not wire):
        return Verdict(False, HARNESS_ERROR, f"{HARNESS_ERROR} {summary}{detail}")
    if captured and wire is not None and wire.canary_in_clear and prediction.wire in ENCRYPTED:
        return Verdict(False, PLAINTEXT_LEAK,
                       f"{PLAINTEXT_LEAK} canary seen in cleartext where policy says {prediction.wire}; {summary}{detail}")
    problems = []
    if result.outcome != prediction.outcome:
        problems.append("outcome")
    if captured and prediction.outcome in WIRE_JUDGED and observed_wire != prediction.wire:
        problems.append("wire")
    if result.peer_identity != prediction.peer_identity:
        problems.append("identity")
    if not problems and prediction.outcome == "503":
        which = which_503(prediction.envoy, result.proxy_report, connections_opened(wire) if captured else None)
        if which:
            return Verdict(False, UNEXPECTED_OUTCOME, f"{UNEXPECTED_OUTCOME} 503 for another reason: {which}; "
                                                      f"{summary}{detail}")
    if problems:
        return Verdict(False, UNEXPECTED_OUTCOME,
                       f"{UNEXPECTED_OUTCOME} {'+'.join(problems)} differ: {summary}{detail}")
    expected_tls = getattr(prediction, "tls", None) if captured and wire is not None else None
    if expected_tls:
        from probes.verdict import tls_shortfalls  # imports scapy: only runs that capture pay for it

        if weak := tls_shortfalls(wire, expected_tls):
            return Verdict(False, WEAK_TLS, f"{WEAK_TLS} {'; '.join(weak)}; {summary}{detail}")
    return Verdict(True, "", f"as expected: {summary}")


def which_503(expected: dict | None, report: dict | None, connections: int | None = None) -> str | None:
    """What differs between the client sidecar's account of a 503 and the one the rule names (None: it
    matches). Response flags must be the same set, the transport failure reason must hold the rule's phrase
    (Envoy writes spaces as underscores) or be absent when the rule names none, a server counter the rule
    names must have moved wherever the mesh target reports server counters, and where the probe was captured
    (`connections`: the TCP connections it saw the client open to the server) their number must be the rule's
    attempts: URX says retries ran out, not how many there were."""
    if expected is None:
        return "the oracle names no proxy report for this 503 rule"
    if report is None:
        return "the mesh target reported no proxy account (response flags) for this 503"
    wanted = f"expected {expected['flags']}" + (f" with {expected['failure']!r}" if expected["failure"] else "")
    flags = report.get("response_flags") or "-"
    reason = report.get("transport_failure") or ""
    got = f"the client sidecar reported {flags}" + (f" with {reason!r}" if reason else "")
    if set(flags.split(",")) != set(expected["flags"].split(",")):
        return f"{wanted}, {got}"
    if expected["failure"] is None and reason:
        return f"{wanted} and no transport failure, {got}"
    if expected["failure"] and expected["failure"].replace(" ", "_").lower() not in reason.replace(" ", "_").lower():
        return f"{wanted}, {got}"
    counter = expected.get("server_counter")
    moved = report.get("server_counters")
    if counter and moved is not None and not any(name.endswith(counter) for name in moved):
        return f"expected the server sidecar's {counter} to move, it counted {moved or 'nothing'}"
    if connections is not None and connections != expected["attempts"]:
        return (f"expected the client sidecar to open {expected['attempts']} connection(s) to the server, the "
                f"capture shows {connections}")
    return None


def connections_opened(wire) -> int:
    """TCP connections to the probe's server that the capture saw open (their SYN): one per attempt."""
    return sum(1 for flow in wire.flows if flow.get("probe_flow", True) and flow["syn_seen"])
