"""Mutant: STRICT's TLS chain no longer requires a client certificate (one-way TLS gets in).

`require_client_certificate: False` alone changes nothing on Envoy: any SAN matcher in the validation context
(here the trust-domain prefix) makes the certificate mandatory anyway (default_validator.cc
initializeSslContexts: SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT). Istio always sets that matcher
(TrustDomainsForValidation), so the break that lets one-way TLS in drops both.
"""

from cluster.local import controlplane

_real_socket = controlplane._inbound_mtls_socket


def _no_client_cert_required(pod):
    socket = _real_socket(pod)
    socket["typed_config"]["require_client_certificate"] = False
    validation = socket["typed_config"]["common_tls_context"]["combined_validation_context"]
    validation["default_validation_context"].pop("match_typed_subject_alt_names")
    return socket


controlplane._inbound_mtls_socket = _no_client_cert_required
