"""The words the oracle, the probes, both backends and the reports share. String enums: a member equals its
value ("mtls" == Outcome.MTLS), so JSON, cell records and reports read exactly as the strings did."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """What one request sleep -> httpbin did, as the oracle predicts it and a probe observes it."""

    MTLS = "mtls"  # a 200 over mutual TLS: the app saw the client's identity
    PLAINTEXT = "plaintext"  # a 200 whose request crossed the network in cleartext
    UNAVAILABLE = "503"  # the client sidecar answered 503
    RESET = "reset"  # the connection was closed without an HTTP answer
    APP_TLS = "app-tls"  # completed, but the hop is TLS that is not Istio mTLS (the app's own TLS passed through)
    TIMEOUT = "timeout"  # nothing happened until the probe client's deadline (e.g. server-first behind sniffing)


class Wire(StrEnum):
    """What the client's side put on the pod-to-pod link, as the capture proves it (probes/verdict.py)."""

    MTLS = "mtls"  # TLS with Istio's ALPN and an outbound_ SNI
    APP_TLS = "app-tls"  # TLS without those marks: user-configured or the app's own
    PLAINTEXT = "plaintext"  # bytes that are not TLS
    NONE = "none"  # no payload at all
