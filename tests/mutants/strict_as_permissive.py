"""Mutant: the control plane compiles STRICT inbound chains as PERMISSIVE (plaintext accepted)."""

from cluster.local import controlplane

_real_inbound_chains = controlplane.inbound_chains


def _permissive_instead_of_strict(pod, port, mode, *protocol):
    return _real_inbound_chains(pod, port, "PERMISSIVE" if mode == "STRICT" else mode, *protocol)


controlplane.inbound_chains = _permissive_instead_of_strict
