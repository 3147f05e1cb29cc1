"""Run namespaces: a scenario written for `sleep` and `httpbin` runs in `sleep-<run>` and `httpbin-<run>`.

Both mesh backends deploy a scenario through this one mapping, so everything that names a namespace moves
together: the workloads' namespaces (hence their SPIFFE identities and Service DNS names), each manifest's
metadata.namespace, DestinationRule hosts, exportTo entries, sni and subjectAltNames. The suites predict
on the rewritten scenario and compare there; `normalise_identity` maps an observed identity back to the
scenario's names, so results of different runs (and of upgrade-check legs) line up.

The mesh's root namespace is the choice to get right. On a cluster it belongs to the installed mesh
(meshConfig.rootNamespace, usually istio-system): a run cannot create it, renaming its policies would make
them ordinary namespace policies, and deleting "its" namespace would delete Istio. So the mesh's root
namespace is kept as is, everywhere, and a workload placed in it is refused. Only a scenario that names a
root namespace of its own (`root_namespace:` other than the mesh's) owns it, and then it is renamed like its
other namespaces; the kube backend refuses such a scenario (the cluster's root is fixed), the reference mesh
runs it (every pod pair there is a mesh of its own).

Which strings name a namespace: `<name>.<ns>.svc[.cluster.local]` and `*.<ns>.svc...` hosts, Istio's SNI
`outbound_.<port>_.<subset>_.<host>`, SPIFFE ids `spiffe://<trust domain>/ns/<ns>/sa/<sa>`, exportTo names,
and the short `<name>.<ns>` form only when `<ns>` is one of the run's namespaces (any other two-label name
may be an outside host). Short names (`httpbin`) and wildcards without a namespace (`*`, `*.local`) stay.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass

from meshproof.istio_api import ManifestError, parse_resources
from meshproof.scenario import DEFAULT_ROOT_NAMESPACE, Scenario

RUN_ID = re.compile(r"^[a-z0-9]{1,20}$")
_SPIFFE = re.compile(r"^(spiffe://[^/]+/ns/)([^/]+)(/sa/.+)$")
_ISTIO_SNI = re.compile(r"^(outbound_\.\d+_\.[^_]*_\.)(.+)$")
_SERVICE_SUFFIXES = ("svc", "svc.cluster.local")
_EXPORT_KEYWORDS = (".", "*", "~")


@dataclass(frozen=True)
class RunNamespaces:
    """The namespace mapping of one run. `kept`: namespaces that are not the run's (the mesh's root);
    `known`: the scenario namespaces the run creates (they make a `<name>.<ns>` host name a namespace)."""

    run_id: str
    kept: frozenset[str] = frozenset({DEFAULT_ROOT_NAMESPACE})
    known: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not RUN_ID.match(self.run_id):
            raise ValueError(f"run id {self.run_id!r}: allowed: 1-20 lowercase letters and digits")

    @classmethod
    def for_scenario(cls, scenario: Scenario, run_id: str,
                     mesh_root: str = DEFAULT_ROOT_NAMESPACE) -> RunNamespaces:
        """The mapping a run of `scenario` uses on a mesh whose root namespace is `mesh_root`."""
        kept = frozenset({mesh_root})
        names = cls(run_id, kept)
        for role, workload in (("client", scenario.client), ("server", scenario.server)):
            if workload.namespace in kept:
                raise ManifestError(scenario.name or "scenario", "scenario", f"{role}.namespace",
                                    f"{workload.namespace!r} is the mesh's root namespace, which a run does not own "
                                    "(its workloads live in run namespaces <namespace>-<run>); choose another "
                                    "namespace")
        known = {scenario.client.namespace, scenario.server.namespace, scenario.root_namespace}
        known |= {r.namespace for r in scenario.resources}
        for ns in sorted(known - kept):
            if len(names.to_run(ns)) > 63:
                raise ManifestError(scenario.name or "scenario", "scenario", "namespace",
                                    f"run namespace {names.to_run(ns)!r} is longer than 63 characters; "
                                    f"use a shorter name than {ns!r}")
        return cls(run_id, kept, frozenset(known - kept))

    # --- names --------------------------------------------------------------------------------------

    def to_run(self, namespace: str) -> str:
        """sleep -> sleep-<run>; the mesh's root namespace stays."""
        return namespace if namespace in self.kept else f"{namespace}-{self.run_id}"

    def from_run(self, namespace: str) -> str:
        """sleep-<run> -> sleep; any other name (another run's, the root) is returned as is."""
        return namespace.removesuffix(f"-{self.run_id}") if namespace.endswith(f"-{self.run_id}") else namespace

    def run_namespaces(self) -> dict[str, str]:
        """Scenario namespace -> run namespace, for the namespaces the run creates."""
        return {ns: self.to_run(ns) for ns in sorted(self.known)}

    def host(self, host: str) -> str:
        """A service host name in run namespaces (see the module docstring for the forms)."""
        return self._host(host, self.to_run)

    def sni(self, sni: str) -> str:
        match = _ISTIO_SNI.match(sni)
        return match[1] + self.host(match[2]) if match else self.host(sni)

    def identity(self, identity: str | None) -> str | None:
        """spiffe://td/ns/sleep/sa/sleep -> spiffe://td/ns/sleep-<run>/sa/sleep."""
        return self._identity(identity, self.to_run)

    def normalise_identity(self, identity: str | None) -> str | None:
        """The inverse of identity(): a run's identity in the scenario's names, comparable across runs."""
        return self._identity(identity, self.from_run)

    def normalise_host(self, host: str) -> str:
        return self._host(host, self.from_run, any_namespace=True)

    # --- scenarios and manifests --------------------------------------------------------------------

    def rewrite_manifest(self, manifest: dict) -> dict:
        """A copy of one PeerAuthentication or DestinationRule in run namespaces."""
        doc = copy.deepcopy(manifest)
        meta = doc.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("namespace"), str):
            meta["namespace"] = self.to_run(meta["namespace"])
        spec = doc.get("spec")
        if doc.get("kind") != "DestinationRule" or not isinstance(spec, dict):
            return doc
        if isinstance(spec.get("host"), str):
            spec["host"] = self.host(spec["host"])
        if isinstance(spec.get("exportTo"), list):
            spec["exportTo"] = [e if e in _EXPORT_KEYWORDS or not isinstance(e, str) else self.to_run(e)
                                for e in spec["exportTo"]]
        policies = [spec.get("trafficPolicy")] + [s.get("trafficPolicy") for s in spec.get("subsets") or []
                                                 if isinstance(s, dict)]
        for policy in (p for p in policies if isinstance(p, dict)):
            settings = [policy.get("tls")] + [p.get("tls") for p in policy.get("portLevelSettings") or []
                                              if isinstance(p, dict)]
            for tls in (t for t in settings if isinstance(t, dict)):
                self._rewrite_tls(tls)
        return doc

    def rewrite_manifests(self, manifests: list[dict] | tuple[dict, ...]) -> list[dict]:
        return [self.rewrite_manifest(m) for m in manifests]

    def rewrite_scenario(self, scenario: Scenario) -> Scenario:
        """The scenario as the run deploys it; the oracle predicts on this one. The input is not changed."""
        manifests = tuple(self.rewrite_manifests(scenario.manifests))
        resources = tuple(parse_resources(list(manifests), f"{scenario.name or 'scenario'} in run {self.run_id}"))
        return dataclasses.replace(
            scenario, client=dataclasses.replace(scenario.client, namespace=self.to_run(scenario.client.namespace)),
            server=dataclasses.replace(scenario.server, namespace=self.to_run(scenario.server.namespace)),
            root_namespace=self.to_run(scenario.root_namespace), manifests=manifests, resources=resources)

    # --- helpers ------------------------------------------------------------------------------------

    def _rewrite_tls(self, tls: dict) -> None:
        if isinstance(tls.get("sni"), str):
            tls["sni"] = self.sni(tls["sni"])
        if isinstance(tls.get("subjectAltNames"), list):
            tls["subjectAltNames"] = [n if not isinstance(n, str) else self.identity(n) if _SPIFFE.match(n)
                                      else self.host(n) for n in tls["subjectAltNames"]]

    def _host(self, host: str, rename, any_namespace: bool = False) -> str:
        labels = host.split(".")
        if "svc" in labels:
            # The namespace is the label before `svc`, however many labels (or a wildcard) come first.
            at = labels.index("svc")
            if at >= 2 and labels[at - 1] != "*" and ".".join(labels[at:]) in _SERVICE_SUFFIXES:
                labels[at - 1] = rename(labels[at - 1])
            return ".".join(labels)
        if len(labels) == 2 and labels[1] != "*" and (any_namespace or labels[1] in self.known):
            return f"{labels[0]}.{rename(labels[1])}"
        return host

    @staticmethod
    def _identity(identity: str | None, rename) -> str | None:
        match = _SPIFFE.match(identity or "")
        return f"{match[1]}{rename(match[2])}{match[3]}" if match else identity
