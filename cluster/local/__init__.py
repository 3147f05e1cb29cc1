"""The local reference mesh: network namespaces as pods, real Envoy sidecars, a small Istio-API control plane.
A reference implementation of Istio's API for testing, not Istio.

KNOWN_DIFFERENCES is the one list of where it knowingly behaves unlike Istio, and why. None of them changes
an outcome of the default matrix or the scope suite (all cells there agree with the oracle); each says which
cells it could change.
"""

KNOWN_DIFFERENCES = {
    "service port protocol": (
        "Service ports are always HTTP, as cluster/manifests/httpbin.yaml declares them (port name `http`). "
        "Istio picks the inbound chains by protocol: for an unnamed (auto-detected) port PERMISSIVE also passes "
        "non-Istio TLS through to the app. Would matter only if the kube Service stopped naming its port."
    ),
    "MUTUAL certificate files": (
        "DestinationRule MUTUAL paths /etc/certs/{cert-chain,key,root-cert}.pem resolve to the workload's own "
        "mesh certificate; other paths must be existing files here. Istio's sidecars only have /etc/certs with "
        "legacy mounts. Both end in 503 against a mesh server: auto SAN validation expects a DNS SAN that the "
        "SPIFFE-only certificate lacks."
    ),
    "credentialName": (
        "No secret is ever fetched. As in Istio, SIMPLE/MUTUAL with credentialName in a rule without "
        "workloadSelector (and not configmap://) gets no TLS context, so the sidecar sends plaintext; otherwise "
        "the cluster's TLS context waits for a secret that never comes. Istio leaves Envoy's 15 s initial fetch "
        "timeout in place (security/model SDSAdsConfig), so its cluster warms for up to 15 s (an older version "
        "may serve meanwhile) and then runs without the secret; here that wait ends at once. After it, both "
        "close every connection before a byte is sent (503, nothing on the wire)."
    ),
    "endpoints and routing": (
        "One endpoint per Service, static (no EDS, health checks, outlier detection, locality); subsets and "
        "VirtualServices are ignored; each pod pair sees only its own Service (a co-deployment, "
        "cluster/local/codeploy.py, is one cluster: every pod sees every Service)."
    ),
    "shared httpbin process": (
        "In a co-deployment (cluster/local/codeploy.py) one httpbin process answers in every server pod: its "
        "listening sockets are made inside each pod's network namespace, so each pod answers on its own address "
        "and port behind its own sidecar and iptables, and only the process is shared (one Python instead of ten). "
        "httpbin's answers do not depend on the pod. A co-deployment also runs 10 Envoys at once, each holding 4 "
        "inotify instances (fs.inotify.max_user_instances: 128 per user by default)."
    ),
    "metadata exchange and ALPN": (
        "Istio mTLS clusters offer ALPN istio-http/1.1,istio, the list Istio's outbound istio.alpn filter puts in "
        "the ClientHello for an HTTP/1.1 service; the upstream Envoy here lacks that filter, so the cluster sets "
        "the list itself (every cluster here is HTTP/1.1). No peer metadata exchange filter runs; nothing in the "
        "suites observes it."
    ),
    "connection reuse": (
        "Outbound clusters open a new upstream connection per request (max_requests_per_connection 1) so every "
        "probe's handshake is on the wire; Istio pools connections, and the kube backend adds an EnvoyFilter "
        "to do the same as here."
    ),
    "push timing": (
        "istiod debounces config events for 100 ms (PILOT_DEBOUNCE_AFTER) up to 10 s; here the quiet period is "
        "--push-delay (0 by default, so changes go out at once), and an apply returns only once both sidecars "
        "report the new version, as the kube backend waits for convergence. Fault injection's own config (the "
        "request delay) is pushed at once. Outcomes do not change; chaos bounds follow the backend's push time."
    ),
    "creation order": (
        "'Oldest wins' follows the order of resources in the scenario; on a cluster it follows "
        "creationTimestamp (1 s resolution), which the kube backend keeps in list order by applying >= 1 s apart."
    ),
}
