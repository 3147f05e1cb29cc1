"""What happened on the wire, in four classes a mesh owner asks about: Istio mTLS, other TLS, cleartext, refused.

The matrix picture, the terminal summary and the conformance report all speak these classes, so one table
here says how a cell's (outcome, wire verdict) maps to a class, how it is drawn and which glyph stands for it.
The palette is Okabe-Ito (safe for the common colour-vision deficiencies); the glyph carries the class on
its own in print and grey-scale: filled (mTLS), half (other TLS), empty (cleartext), barred (refused).
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.cells import CellRecord


@dataclass(frozen=True)
class WireClass:
    key: str
    label: str
    glyph: str
    colour: str  # cell fill
    ink: str  # text on the fill
    meaning: str


MTLS = WireClass("mtls", "Istio mTLS", "●", "#0072B2", "#ffffff",
                 "encrypted and mutually authenticated by the mesh (Istio ALPN, outbound_ SNI)")
OTHER_TLS = WireClass("tls", "other TLS", "◐", "#56B4E9", "#000000",
                      "encrypted, but not the mesh's own mTLS (a DestinationRule's or the app's TLS)")
CLEARTEXT = WireClass("cleartext", "cleartext", "○", "#D55E00", "#ffffff",
                      "the request crossed the network readable")
REFUSED = WireClass("refused", "refused", "⊘", "#F0E442", "#000000",
                    "no answer from the app: a 503 from a sidecar, a reset or a timeout")
CLASSES = (MTLS, OTHER_TLS, CLEARTEXT, REFUSED)
NOT_RUN = WireClass("not-run", "not run", "·", "#eeeeee", "#555555", "not run, or the harness could not tell")
BY_KEY = {c.key: c for c in (*CLASSES, NOT_RUN)}
MISMATCH_GLYPH = "✗"
ENCRYPTED = (MTLS, OTHER_TLS)

_REFUSALS = ("503", "reset", "timeout")


def classify(outcome: str | None, wire: str | None) -> WireClass:
    """The class of an (outcome, wire verdict) pair, expected or observed. A 200 is judged by its wire; without
    a capture an outcome of "mtls" stands for Istio mTLS (the identity the app saw)."""
    outcome = str(outcome) if outcome is not None else None
    if outcome in _REFUSALS or (outcome is not None and outcome.isdigit() and outcome != "200"):
        return REFUSED
    if outcome == "plaintext" or wire == "plaintext":
        return CLEARTEXT
    if wire == "app-tls" or outcome == "200-app-tls":
        return OTHER_TLS
    if wire == "mtls" or outcome == "mtls":
        return MTLS
    return NOT_RUN  # "error", "200-none", nothing recorded


def expected_class(record: CellRecord) -> WireClass:
    return classify(record.expected.get("outcome"), record.expected.get("wire"))


def observed_class(record: CellRecord | None) -> WireClass:
    if record is None:
        return NOT_RUN
    return classify(record.observed.get("outcome"), record.observed.get("wire"))


def leaked(record: CellRecord) -> bool:
    """Cleartext on the wire where the oracle said the request would be encrypted: the worst failure."""
    return expected_class(record) in ENCRYPTED and observed_class(record) is CLEARTEXT


def counts(records: list[CellRecord]) -> dict[str, int]:
    """encrypted / cleartext / refused (observed) and mismatched cells, with the two encrypted kinds apart."""
    observed = [observed_class(r) for r in records]
    return {"cells": len(records), "encrypted": sum(c in ENCRYPTED for c in observed),
            "mtls": observed.count(MTLS), "other_tls": observed.count(OTHER_TLS),
            "cleartext": observed.count(CLEARTEXT), "refused": observed.count(REFUSED),
            "unclassified": observed.count(NOT_RUN), "mismatched": sum(not r.passed for r in records)}


def counts_line(c: dict[str, int]) -> str:
    return (f"{c['encrypted']} encrypted ({c['mtls']} Istio mTLS, {c['other_tls']} other TLS) · "
            f"{c['cleartext']} cleartext · {c['refused']} refused · {c['mismatched']} mismatched")


def outcome_text(outcome: str | None) -> str:
    """A short word for an outcome inside a class: 503 and reset are both refused, but not the same."""
    return {"mtls": "", "plaintext": "", "200-app-tls": ""}.get(str(outcome), str(outcome or ""))
