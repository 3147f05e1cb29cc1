"""Mutant: the control plane reads a Service port's protocol from its name alone, as if it had no appProtocol
(ConvertProtocol without its first branch)."""

from cluster.local import controlplane

_real_port_protocol = controlplane.port_protocol


def _by_name_only(port, port_name, app_protocol=None):
    return _real_port_protocol(port, port_name)


controlplane.port_protocol = _by_name_only
