"""The policies indexed by what they can apply to, so each client x Service port pair looks only at the few
PeerAuthentications and DestinationRules Istio would consider for it (never a scan of every object).

- PeerAuthentication: only the server's namespace and the root namespace count (getConfigsForWorkload), and of
  the selector policies only those that select the server.
- DestinationRule: only those whose host covers the Service's name, in the client's namespace, the Service's
  namespace or the root namespace (PushContext.destinationRule). Rules with a workloadSelector in the client's
  namespace stay even when they do not select the client: istiod's merge reads them.
"""

from __future__ import annotations

from collections import defaultdict

from meshproof.istio_api import DestinationRule, PeerAuthentication, Resource


def resolved_host(dr: DestinationRule) -> str:
    """ResolveShortnameToFQDN: a short name is a Service of the rule's own namespace."""
    if dr.host == "*" or "." in dr.host:
        return dr.host
    return f"{dr.host}.{dr.namespace}.svc.cluster.local"


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


class PolicyIndex:
    def __init__(self, resources: list[Resource], root_namespace: str):
        self.root = root_namespace
        self._pa_wide: dict[str, list[PeerAuthentication]] = defaultdict(list)  # namespace -> no selector
        self._pa_selector: dict[str, list[PeerAuthentication]] = defaultdict(list)
        self._dr_exact: dict[str, list[DestinationRule]] = defaultdict(list)  # resolved host -> rules
        self._dr_wildcard: list[DestinationRule] = []
        for r in resources:
            if isinstance(r, PeerAuthentication):
                (self._pa_selector if r.selector else self._pa_wide)[r.namespace].append(r)
            elif resolved_host(r).startswith("*"):
                self._dr_wildcard.append(r)
            else:
                self._dr_exact[resolved_host(r)].append(r)
        self._dr_cache: dict[tuple[str, str, str], tuple[DestinationRule, ...]] = {}

    def peer_authentications(self, namespace: str, labels: dict[str, str]) -> tuple[PeerAuthentication, ...]:
        """Mesh-level, namespace-level and the workload-level policies that select these labels, oldest first.
        Selector policies of the root namespace never apply to a workload (ComposePeerAuthentication)."""
        found = list(self._pa_wide.get(self.root, ()))
        if namespace != self.root:
            found += self._pa_wide.get(namespace, ())
            found += [p for p in self._pa_selector.get(namespace, ()) if selects(p.selector, labels)]
        return tuple(sorted(found, key=lambda p: p.order))

    def destination_rules(self, client_ns: str, service_ns: str, host: str) -> tuple[DestinationRule, ...]:
        key = (client_ns, service_ns, host)
        if key not in self._dr_cache:
            where = {client_ns, service_ns, self.root}
            found = [d for d in self._dr_exact.get(host, ()) if d.namespace in where]
            found += [d for d in self._dr_wildcard if d.namespace in where and _covers(resolved_host(d), host)]
            self._dr_cache[key] = tuple(sorted(found, key=lambda d: d.order))
        return self._dr_cache[key]


def _covers(wildcard: str, host: str) -> bool:
    return wildcard == "*" or host.endswith(wildcard[1:])
