"""The conformance cells as declarative scenarios (dicts for `meshproof.scenario.scenario_from_dict`).

`matrix_scenarios()`: client sidecar x server sidecar x PeerAuthentication mode in the server namespace
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

`scope_scenarios()`: scope and precedence cells, same (id, dict) shape; the comment above each says what
it pins down. Namespaces are fixed (sleep, httpbin, istio-system); a runner that shares one mesh between
cells renames them.
"""

from __future__ import annotations

from suites.expectations import MESH_CERT_FILES, expect

CLIENT_NS, SERVER_NS, ROOT_NS = "sleep", "httpbin", "istio-system"
HOST = f"httpbin.{SERVER_NS}.svc.cluster.local"
PA_MODES = (None, "UNSET", "DISABLE", "PERMISSIVE", "STRICT")
DR_MODES = (None, "DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")


def pa(mode: str | None, namespace: str = SERVER_NS, name: str = "default", selector: dict | None = None,
       ports: dict[int, str | None] | None = None) -> dict:
    """A PeerAuthentication; mode None leaves out spec.mtls, a port mode None leaves out its mode (UNSET)."""
    spec: dict = {}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if ports:
        spec["portLevelMtls"] = {port: ({"mode": m} if m else {}) for port, m in ports.items()}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def tls(mode: str, **extra) -> dict:
    settings = {"mode": mode}
    if mode == "MUTUAL":
        settings.update(MESH_CERT_FILES)
    settings.update(extra)
    return settings


def dr(mode: str | None, namespace: str = CLIENT_NS, name: str = "httpbin", host: str = HOST,
       export_to: list[str] | None = None, selector: dict | None = None,
       ports: dict[int, dict | None] | None = None, traffic_policy: dict | None = None) -> dict:
    """A DestinationRule; `ports` maps a port number to its tls settings (None: a port entry without tls)."""
    policy = dict(traffic_policy or {})
    if mode is not None:
        policy["tls"] = tls(mode)
    if ports:
        policy["portLevelSettings"] = [
            {"port": {"number": port}, **({"tls": t} if t else {"connectionPool": {"tcp": {"maxConnections": 100}}})}
            for port, t in ports.items()]
    spec: dict = {"host": host}
    if policy:
        spec["trafficPolicy"] = policy
    if export_to is not None:
        spec["exportTo"] = export_to
    if selector:
        spec["workloadSelector"] = {"matchLabels": selector}
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def scenario(resources: list[dict], client_sidecar: bool = True, server_sidecar: bool = True,
             description: str = "", tags: list[str] | None = None, **server) -> dict:
    return {"client": {"namespace": CLIENT_NS, "sidecar": client_sidecar},
            "server": {"namespace": SERVER_NS, "sidecar": server_sidecar, **server},
            "resources": resources, "description": description, "tags": tags or []}


def _slug(mode: str | None) -> str:
    return "none" if mode is None else mode.lower().replace("_", "-")


def matrix_scenarios() -> list[tuple[str, dict]]:
    cells = []
    for client_sidecar in (True, False):
        for server_sidecar in (True, False):
            for pa_mode in PA_MODES:
                for dr_mode in DR_MODES:
                    ids = ["client-sidecar" if client_sidecar else "client-no-sidecar",
                           "server-sidecar" if server_sidecar else "server-no-sidecar",
                           f"pa-{_slug(pa_mode)}", f"dr-{_slug(dr_mode)}"]
                    resources = []
                    if pa_mode is not None:
                        resources.append(pa(pa_mode))
                    if dr_mode is not None:
                        resources.append(dr(dr_mode))
                    text = (f"PeerAuthentication {pa_mode or 'absent'} in {SERVER_NS}, DestinationRule tls "
                            f"{dr_mode or 'absent'} in {CLIENT_NS}")
                    cells.append(("/".join(ids), scenario(resources, client_sidecar, server_sidecar, text, ids)))
    return cells


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


S = SERVER_NS
APP = {"app": "httpbin"}
# The server's identity, as a client that verifies it names it in subjectAltNames.
SERVER_SAN = "spiffe://cluster.local/ns/httpbin/sa/httpbin"
CA = MESH_CERT_FILES["caCertificates"]


def scope_scenarios() -> list[tuple[str, dict]]:
    cells: list[tuple[str, str, list[dict], dict]] = [
        # --- PeerAuthentication scope -----------------------------------------------------------------
        # A mesh-wide (root namespace) policy applies when the namespace has none.
        ("pa-mesh-strict", "mesh STRICT reaches the server", [pa("STRICT", ROOT_NS)], {"client_sidecar": False}),
        # A namespace policy overrides the mesh one.
        ("pa-namespace-overrides-mesh", "namespace PERMISSIVE beats mesh STRICT",
         [pa("STRICT", ROOT_NS), pa("PERMISSIVE")], {"client_sidecar": False}),
        # A workload policy overrides the namespace one.
        ("pa-workload-overrides-namespace", "workload STRICT beats namespace PERMISSIVE",
         [pa("PERMISSIVE"), pa("STRICT", name="httpbin", selector=APP)], {"client_sidecar": False}),
        # A port-level mode on the target port overrides the workload mode.
        ("pa-port-level-target-port", "portLevelMtls on the target port 8080 beats workload STRICT",
         [pa("STRICT", name="httpbin", selector=APP, ports={8080: "PERMISSIVE"})], {"client_sidecar": False}),
        # portLevelMtls keyed by the Service port does nothing: Istio keys it by the target (container) port.
        ("pa-port-level-service-port-ignored", "portLevelMtls on the Service port 8000 does not apply",
         [pa("STRICT", name="httpbin", selector=APP, ports={8000: "PERMISSIVE"})], {"client_sidecar": False}),
        # Target port moved: the port-level key follows the target port.
        ("pa-port-level-moved-target-port", "target port 9090 with portLevelMtls[9090] DISABLE",
         [pa("STRICT", name="httpbin", selector=APP, ports={9090: "DISABLE"})],
         {"client_sidecar": False, "target_port": 9090}),
        # UNSET at namespace level inherits the mesh mode.
        ("pa-unset-namespace-inherits-mesh", "namespace UNSET inherits mesh STRICT",
         [pa("STRICT", ROOT_NS), pa("UNSET")], {"client_sidecar": False}),
        # UNSET at mesh level means PERMISSIVE.
        ("pa-unset-mesh-is-permissive", "mesh UNSET is PERMISSIVE", [pa("UNSET", ROOT_NS)],
         {"client_sidecar": False}),
        # A workload policy without spec.mtls inherits the namespace mode.
        ("pa-workload-without-mtls-inherits", "workload without mtls inherits namespace STRICT",
         [pa("STRICT"), pa(None, name="httpbin", selector=APP)], {"client_sidecar": False}),
        # An UNSET port inherits the workload mode (which itself inherited from the namespace).
        ("pa-unset-port-inherits-workload", "portLevelMtls[8080] UNSET inherits namespace STRICT",
         [pa("STRICT"), pa("UNSET", name="httpbin", selector=APP, ports={8080: None})], {"client_sidecar": False}),
        # Two namespace-level policies: the oldest wins, whatever the newer one says.
        ("pa-conflict-namespace-oldest-wins", "two namespace policies, STRICT is older",
         [pa("STRICT", name="first"), pa("PERMISSIVE", name="second")], {"client_sidecar": False}),
        ("pa-conflict-namespace-oldest-wins-permissive", "two namespace policies, PERMISSIVE is older",
         [pa("PERMISSIVE", name="first"), pa("STRICT", name="second")], {"client_sidecar": False}),
        # Two workload-level policies: the oldest wins.
        ("pa-conflict-workload-oldest-wins", "two workload policies, DISABLE is older",
         [pa("DISABLE", name="first", selector=APP), pa("STRICT", name="second", selector=APP)],
         {"client_sidecar": False}),
        # Two mesh-level policies: the oldest wins even when it is UNSET.
        ("pa-conflict-mesh-oldest-unset-wins", "two mesh policies, UNSET is older",
         [pa("UNSET", ROOT_NS, name="first"), pa("STRICT", ROOT_NS, name="second")], {"client_sidecar": False}),
        # A selector policy in the root namespace is ignored, even when it selects the server.
        ("pa-root-selector-ignored", "root-namespace STRICT with a selector matching httpbin",
         [pa("STRICT", ROOT_NS, name="httpbin", selector=APP)], {"client_sidecar": False}),
        # A selector that does not match the server is ignored.
        ("pa-selector-no-match", "workload STRICT selecting app=other", [pa("STRICT", name="other",
                                                                           selector={"app": "other"})],
         {"client_sidecar": False}),
        # A policy in another namespace (the client's) does not guard the server.
        ("pa-other-namespace-ignored", "STRICT in the client's namespace", [pa("STRICT", CLIENT_NS)],
         {"client_sidecar": False}),
        # Auto mTLS reads only namespace/mesh policies: namespace DISABLE + workload STRICT breaks the call.
        ("auto-mtls-namespace-disable-workload-strict", "auto mTLS sees DISABLE, the workload is STRICT",
         [pa("DISABLE"), pa("STRICT", name="httpbin", selector=APP)], {}),
        # The endpoint check sees the workload's DISABLE: auto mTLS falls back to plaintext.
        ("auto-mtls-endpoint-workload-disable", "namespace STRICT, workload DISABLE, no DestinationRule",
         [pa("STRICT"), pa("DISABLE", name="httpbin", selector=APP)], {}),
        # ... and also a port-level DISABLE on the target port.
        ("auto-mtls-endpoint-port-disable", "namespace STRICT, portLevelMtls[8080] DISABLE, no DestinationRule",
         [pa("STRICT"), pa(None, name="httpbin", selector=APP, ports={8080: "DISABLE"})], {}),
        # ... and no policy of another namespace either: the client's own DISABLE does not reach the server's.
        ("auto-mtls-other-namespace-disable-ignored", "DISABLE in the client's namespace, no DestinationRule",
         [pa("DISABLE", CLIENT_NS)], {}),
        # Without a namespace policy auto mTLS assumes PERMISSIVE, whatever the workload policy says; its STRICT
        # target port then gets Istio mTLS.
        ("auto-mtls-workload-disable-port-strict", "workload DISABLE, portLevelMtls[8080] STRICT, no DestinationRule",
         [pa("DISABLE", name="httpbin", selector=APP, ports={8080: "STRICT"})], {}),
        # Mesh DISABLE makes auto mTLS send plaintext.
        ("auto-mtls-mesh-disable", "mesh DISABLE, no DestinationRule", [pa("DISABLE", ROOT_NS)], {}),
        # --- DestinationRule selection ----------------------------------------------------------------
        # The client's namespace wins over the service's namespace.
        ("dr-client-ns-beats-server-ns", "client ns DISABLE vs server ns ISTIO_MUTUAL under STRICT",
         [pa("STRICT"), dr("ISTIO_MUTUAL", S, name="server-side"), dr("DISABLE")], {}),
        # The service namespace's rule applies when the client's namespace has none.
        ("dr-server-ns-applies", "server ns DISABLE under STRICT", [pa("STRICT"), dr("DISABLE", S)], {}),
        # ... unless it is exported only to its own namespace.
        ("dr-server-ns-export-dot-hidden", "server ns DISABLE exportTo '.' under STRICT",
         [pa("STRICT"), dr("DISABLE", S, export_to=["."])], {}),
        # ... or exported to the client's namespace by name.
        ("dr-server-ns-export-client-ns", "server ns DISABLE exportTo [sleep] under STRICT",
         [pa("STRICT"), dr("DISABLE", S, export_to=[CLIENT_NS])], {}),
        # The root namespace's rule applies last.
        ("dr-root-ns-applies", "root ns DISABLE under STRICT", [pa("STRICT"), dr("DISABLE", ROOT_NS)], {}),
        ("dr-server-ns-beats-root-ns", "server ns ISTIO_MUTUAL vs root ns DISABLE under STRICT",
         [pa("STRICT"), dr("DISABLE", ROOT_NS, name="root"), dr("ISTIO_MUTUAL", S)], {}),
        ("dr-root-ns-export-dot-hidden", "root ns DISABLE exportTo '.' under STRICT",
         [pa("STRICT"), dr("DISABLE", ROOT_NS, export_to=["."])], {}),
        # A client-namespace rule exported only elsewhere is not even visible in its own namespace.
        ("dr-client-ns-exported-elsewhere", "client ns DISABLE exportTo [httpbin] under STRICT",
         [pa("STRICT"), dr("DISABLE", export_to=[S])], {}),
        # A short host name resolves in the rule's own namespace.
        ("dr-short-host-in-server-ns", "host 'httpbin' in the server ns (resolves to the service)",
         [pa("STRICT"), dr("DISABLE", S, host="httpbin")], {}),
        ("dr-short-host-in-client-ns", "host 'httpbin' in the client ns (resolves to httpbin.sleep)",
         [pa("STRICT"), dr("DISABLE", host="httpbin")], {}),
        # A wildcard host in the client's namespace still beats an exact host in the server's namespace.
        ("dr-wildcard-client-ns-beats-exact-server-ns", "'*.local' DISABLE in client ns vs exact in server ns",
         [pa("STRICT"), dr("ISTIO_MUTUAL", S), dr("DISABLE", host="*.local", name="wild")], {}),
        # Two rules with the same exportTo merge; the oldest trafficPolicy is kept.
        ("dr-merge-oldest-traffic-policy", "two client ns rules: DISABLE (older) and ISTIO_MUTUAL",
         [pa("STRICT"), dr("DISABLE", name="first"), dr("ISTIO_MUTUAL", name="second")], {}),
        # An older rule with a trafficPolicy but no tls hides a newer rule's tls.
        ("dr-merge-older-policy-without-tls", "older rule has only connectionPool, newer sets DISABLE",
         [pa("STRICT"), dr(None, name="first", traffic_policy={"connectionPool": {"tcp": {"maxConnections": 10}}}),
          dr("DISABLE", name="second")], {}),
        # Different exportTo: the rules stay apart and the last one (newest) applies.
        ("dr-different-export-newest-applies", "ISTIO_MUTUAL (all) older, DISABLE (exportTo '.') newer",
         [pa("STRICT"), dr("ISTIO_MUTUAL", name="first"), dr("DISABLE", name="second", export_to=["."])], {}),
        # A workloadSelector rule that selects the client beats the namespace-wide one.
        ("dr-workload-selector-match", "selector DISABLE for app=sleep vs namespace-wide ISTIO_MUTUAL",
         [pa("STRICT"), dr("ISTIO_MUTUAL", name="all"), dr("DISABLE", name="sleep", selector={"app": "sleep"},
                                                          export_to=["."])], {}),
        ("dr-workload-selector-no-match", "selector DISABLE for app=other only", [
            pa("STRICT"), dr("DISABLE", name="other", selector={"app": "other"})], {}),
        # A rule without selector whose exportTo is a superset of a selector rule's merges into it and also stands
        # alone: for a client the selector does not pick, the standalone rule applies.
        ("dr-merge-into-selector-rule-and-stand-alone", "selector ISTIO_MUTUAL app=other + DISABLE exportTo [., httpbin]",
         [pa("STRICT"), dr("ISTIO_MUTUAL", name="other", selector={"app": "other"}),
          dr("DISABLE", name="all", export_to=[".", S])], {}),
        # Two rules without selector merge even when the newer one's exportTo is a superset: it does not stand
        # alone, so the older rule's trafficPolicy is the one applied.
        ("dr-superset-export-merges-without-standing-alone", "DISABLE exportTo [.] older, ISTIO_MUTUAL [., httpbin]",
         [pa("STRICT"), dr("DISABLE", name="first", export_to=["."]),
          dr("ISTIO_MUTUAL", name="second", export_to=[".", S])], {}),
        # Merging fills a missing trafficPolicy once: the first rule that brings one wins over later ones.
        ("dr-merge-first-traffic-policy-to-arrive", "rule without policy, then DISABLE, then ISTIO_MUTUAL, STRICT",
         [pa("STRICT"), dr(None, name="a"), dr("DISABLE", name="b"), dr("ISTIO_MUTUAL", name="c")], {}),
        # A rule that cannot merge with one entry still merges with a later one (exportTo "." with ".").
        ("dr-merge-with-a-later-entry", "DISABLE exportTo *, ISTIO_MUTUAL exportTo ., DISABLE exportTo .",
         [pa("STRICT"), dr("DISABLE", name="all", export_to=["*"]), dr("ISTIO_MUTUAL", name="own", export_to=["."]),
          dr("DISABLE", name="own2", export_to=["."])], {}),
        # A wildcard host matches whole labels: *.bin.httpbin.svc.cluster.local is not httpbin.httpbin...
        ("dr-wildcard-matches-whole-labels", "DISABLE for *.bin.httpbin.svc.cluster.local under STRICT",
         [pa("STRICT"), dr("DISABLE", host="*.bin.httpbin.svc.cluster.local", name="wild")], {}),
        # A rule in a namespace that is neither the client's, the service's nor the root's never applies.
        ("dr-unrelated-namespace-ignored", "DISABLE in namespace other under STRICT",
         [pa("STRICT"), dr("DISABLE", "other")], {}),
        # Rules with the same workloadSelector merge: the second fills the first one's missing trafficPolicy.
        ("dr-same-selector-rules-merge", "selector app=other ISTIO_MUTUAL; app=sleep no policy, then DISABLE",
         [pa("STRICT"), dr("ISTIO_MUTUAL", name="a-other", selector={"app": "other"}),
          dr(None, name="b-sleep", selector={"app": "sleep"}), dr("DISABLE", name="c-sleep", selector={"app": "sleep"})],
         {}),
        # A rule without selector and the same exportTo as a selector rule only merges into it: for a client the
        # selector does not pick, no rule applies (auto mTLS).
        ("dr-plain-rule-absorbed-by-selector-rule", "DISABLE exportTo [.] + selector ISTIO_MUTUAL app=other",
         [pa("STRICT"), dr("DISABLE", name="all", export_to=["."]),
          dr("ISTIO_MUTUAL", name="other", selector={"app": "other"})], {}),
        # Rules with different workloadSelectors never merge: the one that selects the client applies.
        ("dr-selector-rules-stay-apart", "selector ISTIO_MUTUAL app=other, selector DISABLE app=sleep, STRICT",
         [pa("STRICT"), dr("ISTIO_MUTUAL", name="other", selector={"app": "other"}),
          dr("DISABLE", name="sleep", selector={"app": "sleep"})], {}),
        # --- DestinationRule port-level settings ------------------------------------------------------
        ("dr-port-level-service-port", "top ISTIO_MUTUAL, portLevelSettings[8000] DISABLE, under STRICT",
         [pa("STRICT"), dr("ISTIO_MUTUAL", ports={8000: {"mode": "DISABLE"}})], {}),
        ("dr-port-level-target-port-ignored", "top ISTIO_MUTUAL, portLevelSettings[8080] DISABLE, under STRICT",
         [pa("STRICT"), dr("ISTIO_MUTUAL", ports={8080: {"mode": "DISABLE"}})], {}),
        # A port entry without tls resets tls for the cluster (no inheritance) -> auto mTLS, while the
        # endpoint label still follows the top-level mode: DISABLE stays plaintext ...
        ("dr-port-level-without-tls-top-disable", "top DISABLE, portLevelSettings[8000] without tls, STRICT",
         [pa("STRICT"), dr("DISABLE", ports={8000: None})], {}),
        # ... and a top-level ISTIO_MUTUAL no longer reaches a sidecar-less server: auto mTLS sends plaintext.
        ("dr-port-level-without-tls-naked-server", "top ISTIO_MUTUAL, port 8000 without tls, no server sidecar",
         [dr("ISTIO_MUTUAL", ports={8000: None})], {"server_sidecar": False}),
        # --- TLS origination details -----------------------------------------------------------------
        # credentialName without workloadSelector: istiod builds no TLS context for a sidecar -> plaintext.
        ("dr-credential-name-without-selector", "SIMPLE credentialName, no workloadSelector, PERMISSIVE",
         [dr(None, traffic_policy={"tls": {"mode": "SIMPLE", "credentialName": "httpbin-ca"}})], {}),
        # ... but a rule with a workloadSelector keeps its TLS context, whose secret never arrives: 503.
        ("dr-credential-name-with-selector", "SIMPLE credentialName, workloadSelector app=sleep, PERMISSIVE",
         [dr(None, selector={"app": "sleep"}, export_to=["."],
             traffic_policy={"tls": {"mode": "SIMPLE", "credentialName": "httpbin-ca"}})], {}),
        # ... and so does a configmap:// credential, which a sidecar may read, even without a selector.
        ("dr-credential-name-configmap", "SIMPLE credentialName configmap://, no workloadSelector, PERMISSIVE",
         [dr(None, traffic_policy={"tls": {"mode": "SIMPLE", "credentialName": "configmap://httpbin-ca"}})], {}),
        # ISTIO_MUTUAL from a DestinationRule goes to a sidecar-less server too (no auto fallback).
        ("dr-istio-mutual-naked-server", "ISTIO_MUTUAL to a server without sidecar", [dr("ISTIO_MUTUAL")],
         {"server_sidecar": False}),
        # ISTIO_MUTUAL with its own sni: the server's chains match ALPN, never SNI, so the call succeeds with
        # the client's identity, but Istio's ALPN goes out with the user's SNI (the wire reads app TLS).
        ("dr-istio-mutual-custom-sni", "ISTIO_MUTUAL with sni set to the service host, under STRICT",
         [pa("STRICT"), dr(None, traffic_policy={"tls": tls("ISTIO_MUTUAL", sni=HOST)})], {}),
        # insecureSkipVerify does not switch off ISTIO_MUTUAL's subjectAltNames check.
        ("dr-istio-mutual-insecure-wrong-san", "ISTIO_MUTUAL, insecureSkipVerify, subjectAltNames of another SA",
         [dr(None, traffic_policy={"tls": tls("ISTIO_MUTUAL", insecureSkipVerify=True,
                                              subjectAltNames=["spiffe://cluster.local/ns/other/sa/other"])})], {}),
        # Auto mTLS falls back to plaintext for a sidecar-less server even under mesh STRICT
        # (reachability_test.go 'global automtls strict': notFromNaked succeed).
        ("auto-mtls-naked-server", "mesh STRICT, no DestinationRule, server without sidecar",
         [pa("STRICT", ROOT_NS)], {"server_sidecar": False}),
        # reachability_test.go 'global mtls strict': mesh STRICT plus a root-namespace DestinationRule for
        # host "*" with ISTIO_MUTUAL; calls to a sidecar-less server fail, calls between sidecars are mTLS.
        ("dr-root-wildcard-istio-mutual-naked-server", "mesh STRICT + root DR '*' ISTIO_MUTUAL, no server sidecar",
         [pa("STRICT", ROOT_NS), dr("ISTIO_MUTUAL", ROOT_NS, name="default", host="*")], {"server_sidecar": False}),
        ("dr-root-wildcard-istio-mutual", "mesh STRICT + root DR '*' ISTIO_MUTUAL",
         [pa("STRICT", ROOT_NS), dr("ISTIO_MUTUAL", ROOT_NS, name="default", host="*")], {}),
        # --- Cells where only the server can refuse -------------------------------------------------
        # The client sidecar accepts the server's certificate here (mesh CA and the server's SAN, or no check
        # at all), so its own verification cannot end the call first: STRICT's client certificate
        # requirement, and PERMISSIVE's match on Istio's ALPN, are what the outcome shows.
        ("server-refuses-simple-mesh-ca-strict", "SIMPLE, mesh CA, the server's SAN, no client cert, under STRICT",
         [pa("STRICT"), dr(None, traffic_policy={"tls": tls("SIMPLE", caCertificates=CA,
                                                            subjectAltNames=[SERVER_SAN])})], {}),
        ("server-refuses-simple-insecure-strict", "SIMPLE with insecureSkipVerify, no client cert, under STRICT",
         [pa("STRICT"), dr(None, traffic_policy={"tls": tls("SIMPLE", insecureSkipVerify=True)})], {}),
        ("server-refuses-mutual-mesh-certs-permissive", "MUTUAL, mesh certs, the server's SAN, under PERMISSIVE",
         [pa("PERMISSIVE"), dr(None, traffic_policy={"tls": tls("MUTUAL", subjectAltNames=[SERVER_SAN])})], {}),
        ("server-refuses-mutual-mesh-certs-disable", "MUTUAL, mesh certs, the server's SAN, under DISABLE",
         [pa("DISABLE"), dr(None, traffic_policy={"tls": tls("MUTUAL", subjectAltNames=[SERVER_SAN])})], {}),
        # The control: the same MUTUAL client is accepted by STRICT, with its identity (but not Istio's wire).
        ("server-accepts-mutual-mesh-certs-strict", "MUTUAL, mesh certs, the server's SAN, under STRICT",
         [pa("STRICT"), dr(None, traffic_policy={"tls": tls("MUTUAL", subjectAltNames=[SERVER_SAN])})], {}),
    ]
    out = []
    for cell_id, text, resources, options in cells:
        tags = ["scope", cell_id.split("-")[0]]
        out.append((f"scope/{cell_id}", scenario(resources, description=text, tags=tags, **options)))
    return out
