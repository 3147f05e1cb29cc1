"""The conformance cells as declarative records (suites/cells.py `Cell`).

`matrix_cells()`: client sidecar x server sidecar x PeerAuthentication mode in the server namespace
(none, UNSET, DISABLE, PERMISSIVE, STRICT) x DestinationRule tls mode in the client namespace (none,
DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL) = 100 cells, ids like `client-sidecar/server-sidecar/pa-strict/dr-istio-mutual`.

What the DestinationRule cells test:
- dr-simple: `{mode: SIMPLE}` as a user would first write it (no caCertificates): one-way TLS from the
  client sidecar, no client certificate, no Istio ALPN; the sidecar trusts only the system CA bundle.
- dr-mutual: `{mode: MUTUAL}` with the workload's own mesh-CA files (`MESH_CERT_FILES`: cert-chain.pem,
  key.pem, root-cert.pem under /etc/certs), as Istio's docs show for mounted certificates. It tests that
  user-supplied mutual TLS is *not* Istio mTLS: no Istio ALPN, SNI from the Host header, and istiod's
  auto_san_validation checks that Host name against a certificate that carries only a SPIFFE URI.
- For a client without a sidecar the DestinationRule has no effect (no proxy reads it); those cells prove it.

`scope_cells()`: scope and precedence cells; each one's `why` says what it pins down.

`matrix_scenarios()` / `scope_scenarios()`: the same cells as (id, scenario dict) pairs.
A suite is a `<name>_cells()` function here: the expected tables (reports/expected_tables.py) find it by name.
"""

from __future__ import annotations

from suites.cells import (
    APP,
    CA,
    CLIENT_NS,
    HOST,
    ROOT_NS,
    SERVER_NS,
    SERVER_SAN,
    Cell,
    as_scenarios,
    dr,
    pa,
    scenario,
    tls,
)
from suites.expectations import expect

__all__ = ["HOST", "ROOT_NS", "dr", "interception_cells", "interception_scenarios", "matrix_cells",
           "matrix_scenarios", "pa", "root_client_cells", "root_client_scenarios", "scenario", "scope_cells",
           "scope_scenarios", "tls"]

PA_MODES = (None, "UNSET", "DISABLE", "PERMISSIVE", "STRICT")
DR_MODES = (None, "DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
S = SERVER_NS
# What each mode asks of the mesh, for the matrix cells' `why`.
PA_WHY = {
    None: "no PeerAuthentication applies, so Istio's default PERMISSIVE holds",
    "UNSET": "the server's namespace PeerAuthentication is UNSET and inherits the mesh default, PERMISSIVE",
    "DISABLE": "the server's namespace accepts only plaintext (PeerAuthentication DISABLE)",
    "PERMISSIVE": "the server's namespace accepts Istio mTLS and plaintext (PeerAuthentication PERMISSIVE)",
    "STRICT": "the server's namespace accepts only Istio mTLS (PeerAuthentication STRICT)",
}
DR_WHY = {
    None: "no DestinationRule, so auto mTLS decides what the client sidecar sends",
    "DISABLE": "a DestinationRule in the client's namespace asks for plaintext (tls DISABLE)",
    "SIMPLE": "a DestinationRule in the client's namespace asks for one-way TLS without a client certificate "
              "(tls SIMPLE)",
    "MUTUAL": "a DestinationRule in the client's namespace asks for user mutual TLS with the mesh's certificate "
              "files (tls MUTUAL), which is not Istio mTLS",
    "ISTIO_MUTUAL": "a DestinationRule in the client's namespace asks for Istio mTLS (tls ISTIO_MUTUAL)",
}


def _slug(mode: str | None) -> str:
    return "none" if mode is None else mode.lower().replace("_", "-")


def _with(present: bool) -> str:
    return "with" if present else "without"


def matrix_cells() -> list[Cell]:
    cells = []
    for client_sidecar in (True, False):
        for server_sidecar in (True, False):
            for pa_mode in PA_MODES:
                for dr_mode in DR_MODES:
                    ids = ("client-sidecar" if client_sidecar else "client-no-sidecar",
                           "server-sidecar" if server_sidecar else "server-no-sidecar",
                           f"pa-{_slug(pa_mode)}", f"dr-{_slug(dr_mode)}")
                    resources = []
                    if pa_mode is not None:
                        resources.append(pa(pa_mode))
                    if dr_mode is not None:
                        resources.append(dr(dr_mode))
                    why = (f"A client {_with(client_sidecar)} a sidecar calls a server {_with(server_sidecar)} one: "
                           f"{PA_WHY[pa_mode]}, and {DR_WHY[dr_mode]}"
                           + ("; no proxy reads it without a client sidecar." if dr_mode and not client_sidecar
                              else "."))
                    text = (f"PeerAuthentication {pa_mode or 'absent'} in {SERVER_NS}, DestinationRule tls "
                            f"{dr_mode or 'absent'} in {CLIENT_NS}")
                    cells.append(Cell("/".join(ids), why, tuple(resources), {"sidecar": client_sidecar},
                                      {"sidecar": server_sidecar}, text, ids))
    return cells


def matrix_scenarios() -> list[tuple[str, dict]]:
    return as_scenarios(matrix_cells())


def matrix_predictions(istio_version: str | None = None) -> list[dict]:
    """The default matrix with the oracle's prediction per cell, for `meshproof expect --matrix`."""
    from meshproof.scenario import check_istio_version, scenario_from_dict

    if istio_version is not None:
        check_istio_version(istio_version, "--istio-version", "istio_version", resource="matrix")
    out = []
    for cell, data in matrix_scenarios():
        if istio_version is not None:
            data = {**data, "istio_version": istio_version}
        prediction = expect(scenario_from_dict(data, source=f"matrix cell {cell}")).to_json()
        out.append({"cell": cell, "scenario": data, **prediction})
    return out


NAKED_CLIENT = {"sidecar": False}


def _scope(cell_id: str, why: str, description: str, resources: list[dict], client: dict | None = None,
           server: dict | None = None) -> Cell:
    return Cell(f"scope/{cell_id}", why, tuple(resources), client or {}, server or {}, description,
                ("scope", cell_id.split("-")[0]))


def scope_cells() -> list[Cell]:
    return [
        # --- PeerAuthentication scope -----------------------------------------------------------------
        _scope("pa-mesh-strict", "A mesh-wide (root namespace) policy applies when the namespace has none.",
               "mesh STRICT reaches the server", [pa("STRICT", ROOT_NS)], NAKED_CLIENT),
        _scope("pa-namespace-overrides-mesh", "A namespace policy overrides the mesh one.",
               "namespace PERMISSIVE beats mesh STRICT", [pa("STRICT", ROOT_NS), pa("PERMISSIVE")], NAKED_CLIENT),
        _scope("pa-workload-overrides-namespace", "A workload policy overrides the namespace one.",
               "workload STRICT beats namespace PERMISSIVE",
               [pa("PERMISSIVE"), pa("STRICT", name="httpbin", selector=APP)], NAKED_CLIENT),
        _scope("pa-port-level-target-port", "A port-level mode on the target port overrides the workload mode.",
               "portLevelMtls on the target port 8080 beats workload STRICT",
               [pa("STRICT", name="httpbin", selector=APP, ports={8080: "PERMISSIVE"})], NAKED_CLIENT),
        _scope("pa-port-level-service-port-ignored",
               "portLevelMtls keyed by the Service port does nothing: Istio keys it by the target (container) port.",
               "portLevelMtls on the Service port 8000 does not apply",
               [pa("STRICT", name="httpbin", selector=APP, ports={8000: "PERMISSIVE"})], NAKED_CLIENT),
        _scope("pa-port-level-moved-target-port", "With the target port moved, the port-level key follows it.",
               "target port 9090 with portLevelMtls[9090] DISABLE",
               [pa("STRICT", name="httpbin", selector=APP, ports={9090: "DISABLE"})], NAKED_CLIENT,
               {"target_port": 9090}),
        _scope("pa-unset-namespace-inherits-mesh", "UNSET at namespace level inherits the mesh mode.",
               "namespace UNSET inherits mesh STRICT", [pa("STRICT", ROOT_NS), pa("UNSET")], NAKED_CLIENT),
        _scope("pa-unset-mesh-is-permissive", "UNSET at mesh level means PERMISSIVE.",
               "mesh UNSET is PERMISSIVE", [pa("UNSET", ROOT_NS)], NAKED_CLIENT),
        _scope("pa-workload-without-mtls-inherits", "A workload policy without spec.mtls inherits the namespace mode.",
               "workload without mtls inherits namespace STRICT",
               [pa("STRICT"), pa(None, name="httpbin", selector=APP)], NAKED_CLIENT),
        _scope("pa-unset-port-inherits-workload",
               "An UNSET port inherits the workload mode, which itself inherited from the namespace.",
               "portLevelMtls[8080] UNSET inherits namespace STRICT",
               [pa("STRICT"), pa("UNSET", name="httpbin", selector=APP, ports={8080: None})], NAKED_CLIENT),
        _scope("pa-conflict-namespace-oldest-wins",
               "Of two namespace-level policies the oldest wins, whatever the newer one says.",
               "two namespace policies, STRICT is older",
               [pa("STRICT", name="first"), pa("PERMISSIVE", name="second")], NAKED_CLIENT),
        _scope("pa-conflict-namespace-oldest-wins-permissive",
               "Of two namespace-level policies the oldest wins, also when it is the weaker one.",
               "two namespace policies, PERMISSIVE is older",
               [pa("PERMISSIVE", name="first"), pa("STRICT", name="second")], NAKED_CLIENT),
        _scope("pa-conflict-workload-oldest-wins", "Of two workload-level policies the oldest wins.",
               "two workload policies, DISABLE is older",
               [pa("DISABLE", name="first", selector=APP), pa("STRICT", name="second", selector=APP)], NAKED_CLIENT),
        _scope("pa-conflict-mesh-oldest-unset-wins", "Of two mesh-level policies the oldest wins even when it is UNSET.",
               "two mesh policies, UNSET is older",
               [pa("UNSET", ROOT_NS, name="first"), pa("STRICT", ROOT_NS, name="second")], NAKED_CLIENT),
        _scope("pa-root-selector-ignored",
               "A selector policy in the root namespace is ignored, even when it selects the server.",
               "root-namespace STRICT with a selector matching httpbin",
               [pa("STRICT", ROOT_NS, name="httpbin", selector=APP)], NAKED_CLIENT),
        _scope("pa-selector-no-match", "A selector that does not match the server is ignored.",
               "workload STRICT selecting app=other", [pa("STRICT", name="other", selector={"app": "other"})],
               NAKED_CLIENT),
        _scope("pa-other-namespace-ignored", "A policy in another namespace (the client's) does not guard the server.",
               "STRICT in the client's namespace", [pa("STRICT", CLIENT_NS)], NAKED_CLIENT),
        _scope("auto-mtls-namespace-disable-workload-strict",
               "Auto mTLS reads only namespace and mesh policies: namespace DISABLE with workload STRICT breaks "
               "the call.",
               "auto mTLS sees DISABLE, the workload is STRICT",
               [pa("DISABLE"), pa("STRICT", name="httpbin", selector=APP)]),
        _scope("auto-mtls-endpoint-workload-disable",
               "The endpoint check sees the workload's DISABLE: auto mTLS falls back to plaintext.",
               "namespace STRICT, workload DISABLE, no DestinationRule",
               [pa("STRICT"), pa("DISABLE", name="httpbin", selector=APP)]),
        _scope("auto-mtls-endpoint-port-disable",
               "The endpoint check also sees a port-level DISABLE on the target port: auto mTLS sends plaintext.",
               "namespace STRICT, portLevelMtls[8080] DISABLE, no DestinationRule",
               [pa("STRICT"), pa(None, name="httpbin", selector=APP, ports={8080: "DISABLE"})]),
        _scope("auto-mtls-other-namespace-disable-ignored",
               "The client's own namespace DISABLE does not reach the server's: auto mTLS still sends Istio mTLS.",
               "DISABLE in the client's namespace, no DestinationRule", [pa("DISABLE", CLIENT_NS)]),
        _scope("auto-mtls-workload-disable-port-strict",
               "Without a namespace policy auto mTLS assumes PERMISSIVE, whatever the workload policy says; its "
               "STRICT target port then gets Istio mTLS.",
               "workload DISABLE, portLevelMtls[8080] STRICT, no DestinationRule",
               [pa("DISABLE", name="httpbin", selector=APP, ports={8080: "STRICT"})]),
        _scope("auto-mtls-mesh-disable", "Mesh DISABLE makes auto mTLS send plaintext.",
               "mesh DISABLE, no DestinationRule", [pa("DISABLE", ROOT_NS)]),
        # --- DestinationRule selection ----------------------------------------------------------------
        _scope("dr-client-ns-beats-server-ns", "The client's namespace rule wins over the service's namespace rule.",
               "client ns DISABLE vs server ns ISTIO_MUTUAL under STRICT",
               [pa("STRICT"), dr("ISTIO_MUTUAL", S, name="server-side"), dr("DISABLE")]),
        _scope("dr-server-ns-applies", "The service namespace's rule applies when the client's namespace has none.",
               "server ns DISABLE under STRICT", [pa("STRICT"), dr("DISABLE", S)]),
        _scope("dr-server-ns-export-dot-hidden",
               "The service namespace's rule does not apply when it is exported only to its own namespace.",
               "server ns DISABLE exportTo '.' under STRICT", [pa("STRICT"), dr("DISABLE", S, export_to=["."])]),
        _scope("dr-server-ns-export-client-ns",
               "The service namespace's rule applies when it is exported to the client's namespace by name.",
               "server ns DISABLE exportTo [sleep] under STRICT",
               [pa("STRICT"), dr("DISABLE", S, export_to=[CLIENT_NS])]),
        _scope("dr-root-ns-applies", "The root namespace's rule applies last, when no other namespace has one.",
               "root ns DISABLE under STRICT", [pa("STRICT"), dr("DISABLE", ROOT_NS)]),
        _scope("dr-server-ns-beats-root-ns", "The service namespace's rule wins over the root namespace's.",
               "server ns ISTIO_MUTUAL vs root ns DISABLE under STRICT",
               [pa("STRICT"), dr("DISABLE", ROOT_NS, name="root"), dr("ISTIO_MUTUAL", S)]),
        _scope("dr-root-ns-after-hidden-server-ns",
               "A service-namespace rule hidden from the client does not end the search: the root one applies.",
               "server ns ISTIO_MUTUAL exportTo [other], root ns DISABLE, under STRICT",
               [pa("STRICT"), dr("ISTIO_MUTUAL", S, export_to=["other"]), dr("DISABLE", ROOT_NS, name="root")]),
        _scope("dr-root-ns-export-dot-hidden",
               "A root namespace rule exported only to its own namespace is not the mesh's default.",
               "root ns DISABLE exportTo '.' under STRICT", [pa("STRICT"), dr("DISABLE", ROOT_NS, export_to=["."])]),
        _scope("dr-client-ns-exported-elsewhere",
               "A client-namespace rule exported only elsewhere is not even visible in its own namespace.",
               "client ns DISABLE exportTo [httpbin] under STRICT", [pa("STRICT"), dr("DISABLE", export_to=[S])]),
        _scope("dr-short-host-in-server-ns", "A short host name resolves in the rule's own namespace: the service's.",
               "host 'httpbin' in the server ns (resolves to the service)",
               [pa("STRICT"), dr("DISABLE", S, host="httpbin")]),
        _scope("dr-short-host-in-client-ns",
               "A short host name resolves in the rule's own namespace: in the client's it names another host.",
               "host 'httpbin' in the client ns (resolves to httpbin.sleep)", [pa("STRICT"), dr("DISABLE", host="httpbin")]),
        _scope("dr-wildcard-client-ns-beats-exact-server-ns",
               "A wildcard host in the client's namespace still beats an exact host in the server's namespace.",
               "'*.local' DISABLE in client ns vs exact in server ns",
               [pa("STRICT"), dr("ISTIO_MUTUAL", S), dr("DISABLE", host="*.local", name="wild")]),
        _scope("dr-merge-oldest-traffic-policy", "Two rules with the same exportTo merge; the oldest trafficPolicy is kept.",
               "two client ns rules: DISABLE (older) and ISTIO_MUTUAL",
               [pa("STRICT"), dr("DISABLE", name="first"), dr("ISTIO_MUTUAL", name="second")]),
        _scope("dr-merge-older-policy-without-tls",
               "An older rule with a trafficPolicy but no tls hides a newer rule's tls.",
               "older rule has only connectionPool, newer sets DISABLE",
               [pa("STRICT"), dr(None, name="first", traffic_policy={"connectionPool": {"tcp": {"maxConnections": 10}}}),
                dr("DISABLE", name="second")]),
        _scope("dr-different-export-newest-applies",
               "Rules with different exportTo stay apart and the newest one applies.",
               "ISTIO_MUTUAL (all) older, DISABLE (exportTo '.') newer",
               [pa("STRICT"), dr("ISTIO_MUTUAL", name="first"), dr("DISABLE", name="second", export_to=["."])]),
        _scope("dr-workload-selector-match",
               "A workloadSelector rule that selects the client beats the namespace-wide one.",
               "selector DISABLE for app=sleep vs namespace-wide ISTIO_MUTUAL",
               [pa("STRICT"), dr("ISTIO_MUTUAL", name="all"), dr("DISABLE", name="sleep", selector={"app": "sleep"},
                                                                export_to=["."])]),
        _scope("dr-workload-selector-no-match", "A workloadSelector rule that does not select the client is ignored.",
               "selector DISABLE for app=other only",
               [pa("STRICT"), dr("DISABLE", name="other", selector={"app": "other"})]),
        _scope("dr-merge-into-selector-rule-and-stand-alone",
               "A rule without selector whose exportTo is a superset of a selector rule's merges into it and also "
               "stands alone: for a client the selector does not pick, the standalone rule applies.",
               "selector ISTIO_MUTUAL app=other + DISABLE exportTo [., httpbin]",
               [pa("STRICT"), dr("ISTIO_MUTUAL", name="other", selector={"app": "other"}),
                dr("DISABLE", name="all", export_to=[".", S])]),
        _scope("dr-superset-export-merges-without-standing-alone",
               "Two rules without selector merge even when the newer one's exportTo is a superset: it does not "
               "stand alone, so the older rule's trafficPolicy is the one applied.",
               "DISABLE exportTo [.] older, ISTIO_MUTUAL [., httpbin]",
               [pa("STRICT"), dr("DISABLE", name="first", export_to=["."]),
                dr("ISTIO_MUTUAL", name="second", export_to=[".", S])]),
        _scope("dr-merge-first-traffic-policy-to-arrive",
               "Merging fills a missing trafficPolicy once: the first rule that brings one wins over later ones.",
               "rule without policy, then DISABLE, then ISTIO_MUTUAL, STRICT",
               [pa("STRICT"), dr(None, name="a"), dr("DISABLE", name="b"), dr("ISTIO_MUTUAL", name="c")]),
        _scope("dr-merge-with-a-later-entry",
               "A rule that cannot merge with one entry still merges with a later one (exportTo '.' with '.').",
               "DISABLE exportTo *, ISTIO_MUTUAL exportTo ., DISABLE exportTo .",
               [pa("STRICT"), dr("DISABLE", name="all", export_to=["*"]), dr("ISTIO_MUTUAL", name="own", export_to=["."]),
                dr("DISABLE", name="own2", export_to=["."])]),
        _scope("dr-wildcard-matches-whole-labels",
               "A wildcard host matches whole labels: *.bin.httpbin.svc.cluster.local is not httpbin.httpbin....",
               "DISABLE for *.bin.httpbin.svc.cluster.local under STRICT",
               [pa("STRICT"), dr("DISABLE", host="*.bin.httpbin.svc.cluster.local", name="wild")]),
        _scope("dr-unrelated-namespace-ignored",
               "A rule in a namespace that is neither the client's, the service's nor the root's never applies.",
               "DISABLE in namespace other under STRICT", [pa("STRICT"), dr("DISABLE", "other")]),
        _scope("dr-same-selector-rules-merge",
               "Rules with the same workloadSelector merge: the second fills the first one's missing trafficPolicy.",
               "selector app=other ISTIO_MUTUAL; app=sleep no policy, then DISABLE",
               [pa("STRICT"), dr("ISTIO_MUTUAL", name="a-other", selector={"app": "other"}),
                dr(None, name="b-sleep", selector={"app": "sleep"}), dr("DISABLE", name="c-sleep", selector={"app": "sleep"})]),
        _scope("dr-plain-rule-absorbed-by-selector-rule",
               "A rule without selector and the same exportTo as a selector rule only merges into it: for a client "
               "the selector does not pick, no rule applies (auto mTLS).",
               "DISABLE exportTo [.] + selector ISTIO_MUTUAL app=other",
               [pa("STRICT"), dr("DISABLE", name="all", export_to=["."]),
                dr("ISTIO_MUTUAL", name="other", selector={"app": "other"})]),
        _scope("dr-selector-rules-stay-apart",
               "Rules with different workloadSelectors never merge: the one that selects the client applies.",
               "selector ISTIO_MUTUAL app=other, selector DISABLE app=sleep, STRICT",
               [pa("STRICT"), dr("ISTIO_MUTUAL", name="other", selector={"app": "other"}),
                dr("DISABLE", name="sleep", selector={"app": "sleep"})]),
        # --- DestinationRule port-level settings ------------------------------------------------------
        _scope("dr-port-level-service-port",
               "portLevelSettings keyed by the Service port override the top-level tls for it.",
               "top ISTIO_MUTUAL, portLevelSettings[8000] DISABLE, under STRICT",
               [pa("STRICT"), dr("ISTIO_MUTUAL", ports={8000: {"mode": "DISABLE"}})]),
        _scope("dr-port-level-target-port-ignored",
               "portLevelSettings keyed by the target port do nothing: Istio keys them by the Service port.",
               "top ISTIO_MUTUAL, portLevelSettings[8080] DISABLE, under STRICT",
               [pa("STRICT"), dr("ISTIO_MUTUAL", ports={8080: {"mode": "DISABLE"}})]),
        _scope("dr-port-level-without-tls-top-disable",
               "A port entry without tls resets tls for the cluster (no inheritance), so auto mTLS decides, while "
               "the endpoint label still follows the top-level DISABLE: plaintext.",
               "top DISABLE, portLevelSettings[8000] without tls, STRICT",
               [pa("STRICT"), dr("DISABLE", ports={8000: None})]),
        _scope("dr-port-level-without-tls-naked-server",
               "A port entry without tls takes a top-level ISTIO_MUTUAL away from a sidecar-less server: auto mTLS "
               "sends plaintext.",
               "top ISTIO_MUTUAL, port 8000 without tls, no server sidecar",
               [dr("ISTIO_MUTUAL", ports={8000: None})], server={"sidecar": False}),
        # --- TLS origination details -----------------------------------------------------------------
        _scope("dr-credential-name-without-selector",
               "credentialName without workloadSelector: istiod builds no TLS context for a sidecar, which sends "
               "plaintext.",
               "SIMPLE credentialName, no workloadSelector, PERMISSIVE",
               [dr(None, traffic_policy={"tls": {"mode": "SIMPLE", "credentialName": "httpbin-ca"}})]),
        _scope("dr-credential-name-with-selector",
               "A credentialName rule with a workloadSelector keeps its TLS context, whose secret never arrives: 503.",
               "SIMPLE credentialName, workloadSelector app=sleep, PERMISSIVE",
               [dr(None, selector={"app": "sleep"}, export_to=["."],
                   traffic_policy={"tls": {"mode": "SIMPLE", "credentialName": "httpbin-ca"}})]),
        _scope("dr-credential-name-configmap",
               "A configmap:// credential, which a sidecar may read, keeps its TLS context even without a selector.",
               "SIMPLE credentialName configmap://, no workloadSelector, PERMISSIVE",
               [dr(None, traffic_policy={"tls": {"mode": "SIMPLE", "credentialName": "configmap://httpbin-ca"}})]),
        _scope("dr-istio-mutual-naked-server",
               "ISTIO_MUTUAL from a DestinationRule goes to a sidecar-less server too (no auto fallback).",
               "ISTIO_MUTUAL to a server without sidecar", [dr("ISTIO_MUTUAL")], server={"sidecar": False}),
        _scope("dr-istio-mutual-custom-sni",
               "ISTIO_MUTUAL with its own sni: the server's chains match ALPN, never SNI, so the call succeeds with "
               "the client's identity, but Istio's ALPN goes out with the user's SNI (the wire reads app TLS).",
               "ISTIO_MUTUAL with sni set to the service host, under STRICT",
               [pa("STRICT"), dr(None, traffic_policy={"tls": tls("ISTIO_MUTUAL", sni=HOST)})]),
        _scope("dr-istio-mutual-insecure-wrong-san",
               "insecureSkipVerify does not switch off ISTIO_MUTUAL's subjectAltNames check.",
               "ISTIO_MUTUAL, insecureSkipVerify, subjectAltNames of another SA",
               [dr(None, traffic_policy={"tls": tls("ISTIO_MUTUAL", insecureSkipVerify=True,
                                                    subjectAltNames=["spiffe://cluster.local/ns/other/sa/other"])})]),
        _scope("auto-mtls-naked-server",
               "Auto mTLS falls back to plaintext for a sidecar-less server even under mesh STRICT "
               "(reachability_test.go 'global automtls strict': notFromNaked succeed).",
               "mesh STRICT, no DestinationRule, server without sidecar", [pa("STRICT", ROOT_NS)],
               server={"sidecar": False}),
        _scope("dr-root-wildcard-istio-mutual-naked-server",
               "reachability_test.go 'global mtls strict': mesh STRICT plus a root-namespace DestinationRule for "
               "host '*' with ISTIO_MUTUAL; calls to a sidecar-less server fail.",
               "mesh STRICT + root DR '*' ISTIO_MUTUAL, no server sidecar",
               [pa("STRICT", ROOT_NS), dr("ISTIO_MUTUAL", ROOT_NS, name="default", host="*")], server={"sidecar": False}),
        _scope("dr-root-wildcard-istio-mutual",
               "reachability_test.go 'global mtls strict': with a root-namespace DestinationRule for host '*' with "
               "ISTIO_MUTUAL, calls between sidecars are Istio mTLS.",
               "mesh STRICT + root DR '*' ISTIO_MUTUAL",
               [pa("STRICT", ROOT_NS), dr("ISTIO_MUTUAL", ROOT_NS, name="default", host="*")]),
        # --- Cells where only the server can refuse -------------------------------------------------
        # The client sidecar accepts the server's certificate here (mesh CA and the server's SAN, or no check
        # at all), so its own verification cannot end the call first.
        _scope("server-refuses-simple-mesh-ca-strict",
               "STRICT's client certificate requirement, not the client's verification, refuses SIMPLE TLS that "
               "trusts the mesh CA and the server's SAN.",
               "SIMPLE, mesh CA, the server's SAN, no client cert, under STRICT",
               [pa("STRICT"), dr(None, traffic_policy={"tls": tls("SIMPLE", caCertificates=CA,
                                                                  subjectAltNames=[SERVER_SAN])})]),
        _scope("server-refuses-simple-insecure-strict",
               "STRICT's client certificate requirement refuses SIMPLE TLS that verifies nothing.",
               "SIMPLE with insecureSkipVerify, no client cert, under STRICT",
               [pa("STRICT"), dr(None, traffic_policy={"tls": tls("SIMPLE", insecureSkipVerify=True)})]),
        _scope("server-refuses-mutual-mesh-certs-permissive",
               "PERMISSIVE matches TLS on Istio's ALPN only, so user MUTUAL TLS with mesh certificates is refused "
               "by the server.",
               "MUTUAL, mesh certs, the server's SAN, under PERMISSIVE",
               [pa("PERMISSIVE"), dr(None, traffic_policy={"tls": tls("MUTUAL", subjectAltNames=[SERVER_SAN])})]),
        _scope("server-refuses-mutual-mesh-certs-disable",
               "DISABLE has only plaintext chains, so user MUTUAL TLS with mesh certificates is refused by the server.",
               "MUTUAL, mesh certs, the server's SAN, under DISABLE",
               [pa("DISABLE"), dr(None, traffic_policy={"tls": tls("MUTUAL", subjectAltNames=[SERVER_SAN])})]),
        _scope("server-accepts-mutual-mesh-certs-strict",
               "The control: the same MUTUAL client is accepted by STRICT, with its identity (but not Istio's wire).",
               "MUTUAL, mesh certs, the server's SAN, under STRICT",
               [pa("STRICT"), dr(None, traffic_policy={"tls": tls("MUTUAL", subjectAltNames=[SERVER_SAN])})]),
    ]


def scope_scenarios() -> list[tuple[str, dict]]:
    return as_scenarios(scope_cells())


def _root_client(cell_id: str, why: str, description: str, resources: list[dict]) -> Cell:
    return Cell(f"root-client/{cell_id}", why, tuple(resources), description=description,
                tags=("root-client", "dr"), root_namespace=CLIENT_NS)


def root_client_cells() -> list[Cell]:
    """Cells whose client lives in the root namespace (the scenario's root is the client's namespace, sleep):
    push_context.go destinationRule looks there first at the root namespace's private rules (exportTo '.'),
    not at every rule the namespace can see. A run owns such a root only on the reference mesh: a cluster's
    root namespace belongs to the installed mesh (meshproof/namespaces.py)."""
    return [
        _root_client("private-rule-applies",
                     "A client in the root namespace uses the root namespace's private (exportTo '.') rule, which "
                     "is no mesh-wide default for the other namespaces.",
                     "root ns DISABLE exportTo '.' under STRICT", [pa("STRICT"), dr("DISABLE", export_to=["."])]),
        _root_client("private-rule-beats-server-ns",
                     "A client in the root namespace takes the root namespace's private rule before the service "
                     "namespace's rule.",
                     "root ns DISABLE exportTo '.' vs server ns ISTIO_MUTUAL under STRICT",
                     [pa("STRICT"), dr("ISTIO_MUTUAL", S, name="server-side"), dr("DISABLE", export_to=["."])]),
        _root_client("own-rule-exported-elsewhere-hidden",
                     "A root namespace rule exported to '.' and another namespace is neither private nor exported "
                     "to the root namespace by name, so a client there does not use it: auto mTLS decides.",
                     "root ns DISABLE exportTo ['.', httpbin] under STRICT",
                     [pa("STRICT"), dr("DISABLE", export_to=[".", S])]),
        _root_client("exported-rule-applies",
                     "A root namespace rule exported to every namespace applies to a client in the root namespace "
                     "too, found last, among the exported rules.",
                     "root ns DISABLE (exported) under STRICT", [pa("STRICT"), dr("DISABLE")]),
        _root_client("server-ns-private-hidden",
                     "The service namespace's private rule stays hidden from a client in the root namespace.",
                     "server ns DISABLE exportTo '.' under STRICT", [pa("STRICT"), dr("DISABLE", S, export_to=["."])]),
    ]


def root_client_scenarios() -> list[tuple[str, dict]]:
    return as_scenarios(root_client_cells())


# Application target ports next to the ports a sidecar keeps for itself (meshproof.scenario.RESERVED_PORTS).
NEXT_TO_RESERVED = {14999: 15000, 15019: 15020, 15022: 15021, 15089: 15090, 15091: 15090}


def interception_cells() -> list[Cell]:
    """STRICT guards every application port: istio-iptables leaves out of inbound capture exactly the sidecar's
    own ports (the injection template's excludeInboundPorts 15090,15021 and the status port 15020), never a
    range, so a port next to one of them is captured like any other (a mesh that let it pass would leak)."""
    return [Cell(f"interception/target-port-{port}",
                 f"A client without a sidecar calls httpbin on target port {port}, next to the sidecar's own {own}: "
                 "the port is captured like any other, so STRICT closes the plaintext connection.",
                 (pa("STRICT"),), NAKED_CLIENT, {"target_port": port}, f"target port {port} under STRICT",
                 ("interception", "pa-strict")) for port, own in NEXT_TO_RESERVED.items()]


def interception_scenarios() -> list[tuple[str, dict]]:
    return as_scenarios(interception_cells())
