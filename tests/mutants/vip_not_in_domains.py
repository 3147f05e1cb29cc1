"""Mutant: the Service's outbound virtual host names its FQDN only, not its VIP (generateVirtualHostDomains
without the Service's addresses): a request whose Host is VIP:port falls to the allow_any route."""

from cluster.local import controlplane

_real_service_vhost = controlplane._service_vhost


def _without_the_vip(service):
    vhost = _real_service_vhost(service)
    if service.vip:
        vhost["domains"] = [d for d in vhost["domains"] if d not in (service.vip, f"{service.vip}:{service.port}")]
    return vhost


controlplane._service_vhost = _without_the_vip
