"""Mutant: outbound routes without Istio's 2 default retries (num_retries 0). Envoy still reports URX,UF: the
retries ran out, there were none."""

from cluster.local import controlplane

_hcm = controlplane._hcm


def _hcm_without_retries(stat_prefix: str, cluster: str, inbound: bool) -> dict:
    config = _hcm(stat_prefix, cluster, inbound)
    for host in config["typed_config"]["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            if "retry_policy" in route["route"]:
                route["route"]["retry_policy"]["num_retries"] = 0
    return config


controlplane._hcm = _hcm_without_retries
