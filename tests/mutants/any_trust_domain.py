"""Mutant: the server accepts a mesh-CA client certificate of any SPIFFE trust domain."""

from cluster.local import controlplane

_real_socket = controlplane._inbound_mtls_socket


def _any_trust_domain(pod):
    socket = _real_socket(pod)
    socket["typed_config"]["common_tls_context"]["combined_validation_context"]["default_validation_context"].pop(
        "match_typed_subject_alt_names")
    return socket


controlplane._inbound_mtls_socket = _any_trust_domain
