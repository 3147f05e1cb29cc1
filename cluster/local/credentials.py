"""Credentials for an adversarial TLS client (cluster.backend.TlsAttempt): the certificate and key it presents.

Both backends mint them the same way; only the mesh CA differs (the reference mesh's own, or the one a
cluster's istiod signs with)."""

from __future__ import annotations

import datetime

from cluster.backend import TlsAttempt
from cluster.local.ca import MeshCA, self_signed

EXPIRED = datetime.timedelta(seconds=-30)  # validity ended half a minute ago


def mint(attempt: TlsAttempt, mesh_ca: MeshCA, other_ca: MeshCA) -> tuple[bytes, bytes] | None:
    """(certificate chain PEM, private key PEM) for `attempt`, or None when it sends no certificate."""
    if attempt.certificate is None:
        return None
    if attempt.certificate == "self-signed":
        return self_signed(attempt.spiffe_id)
    issuer = {"mesh": mesh_ca, "other-ca": other_ca}.get(attempt.certificate)
    if issuer is None:
        raise ValueError(f"TlsAttempt.certificate {attempt.certificate!r}: allowed: None, mesh, self-signed, other-ca")
    return issuer.issue(attempt.spiffe_id, EXPIRED) if attempt.expired else issuer.issue(attempt.spiffe_id)
