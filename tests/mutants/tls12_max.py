"""Mutant: sidecars negotiate TLS 1.2 at most, so certificates cross the wire in clear."""

from cluster.local import controlplane


def _tls12_at_most():
    return {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_2"}


controlplane._tls_params = _tls12_at_most
