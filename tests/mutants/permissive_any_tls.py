"""Mutant: PERMISSIVE's TLS chain matches any TLS, not only TLS that offers Istio's ALPN."""

from cluster.local import controlplane

_real_inbound_chains = controlplane.inbound_chains


def _any_tls(pod, port, mode, *protocol):
    chains = _real_inbound_chains(pod, port, mode, *protocol)
    for chain in chains:
        chain["filter_chain_match"].pop("application_protocols", None)
    return chains


controlplane.inbound_chains = _any_tls
