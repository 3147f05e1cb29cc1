"""The local reference mesh: network namespaces as pods, real Envoy sidecars, a small Istio-API control plane.
A reference implementation of Istio's API for testing, not Istio.

KNOWN_DIFFERENCES is the one list of where it knowingly behaves unlike Istio, and why. None of them changes
an outcome of the default matrix or the scope suite (all cells there agree with the oracle); each says which
cells it could change.
"""

KNOWN_DIFFERENCES = {
    "inbound listener filters": (
        "The tls_inspector also runs on HTTP ports and on the passthrough in DISABLE, so TLS sent there matches no "
        "filter chain and is closed (no_filter_chain_match), as the oracle's DISABLE rules say. Istio's "
        "populateListenerFilters (listener_inbound.go) runs it only where a chain matches TLS, none under "
        "DISABLE: the ClientHello would reach the plaintext HTTP connection manager (a cleartext 400) or the "
        "app. Outcomes are the same (503 / reset); the wire and the server counters differ. TCP and auto ports "
        "follow Istio."
    ),
    "inbound passthrough chains": (
        "Traffic to a port no Service names gets the HTTP port's matches with a tcp_proxy to the original "
        "destination; Istio's passthrough chains are the auto ones (HTTP and TCP, with the http_inspector on "
        "ports it does not serve). Matters only for a request to a port the Service does not name (a headless "
        "Service whose port differs from its target port)."
    ),
    "outbound routes": (
        "An HTTP Service's virtual host names its FQDN and VIP (with and without the port); Istio adds the short "
        "names (httpbin, httpbin.<ns>, ...). Other Hosts go to the PassthroughCluster in both."
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
        "Istio mTLS clusters for HTTP offer ALPN istio-http/1.1,istio, the list Istio's outbound istio.alpn filter "
        "puts in the ClientHello for an HTTP/1.1 service; the upstream Envoy here lacks that filter, so the "
        "cluster sets the list itself, and an auto (sniffed) port's HTTP chain has a cluster of its own "
        "(`outbound|<port>||<host>~http`) beside the TCP one. TCP clusters offer istio-peer-exchange,istio as "
        "Istio's; no peer metadata exchange filter runs, so the server's mTLS contexts offer h2,http/1.1 (as "
        "Istio's with PILOT_DISABLE_MX_ALPN) and never select istio-peer-exchange. Nothing in the suites observes "
        "the exchange."
    ),
    "connection reuse": (
        "Outbound clusters (and the PassthroughCluster, which an HTTP listener's other Hosts reach) open a new "
        "upstream connection per request (max_requests_per_connection 1) so every "
        "probe's handshake is on the wire; Istio pools connections, and the kube backend adds an EnvoyFilter "
        "to do the same as here."
    ),
    "push timing": (
        "istiod debounces config events for 100 ms (PILOT_DEBOUNCE_AFTER) up to 10 s; here the quiet period is "
        "--push-delay (0 by default, so changes go out at once), and an apply returns only once both sidecars "
        "report the new version, as the kube backend waits for convergence. Fault injection's own config (the "
        "request delay) is pushed at once. Outcomes do not change; chaos bounds follow the backend's push time."
    ),
    "server apps": (
        "The https app is PyPI httpbin under gunicorn with its own self-signed certificate: it selects no ALPN and "
        "speaks HTTP/1.1, where the kube backend's go-httpbin negotiates h2 with curl -k. The ClientHello (what the "
        "wire verdict reads) is curl's on both; only the ServerHello's ALPN and the HTTP version inside differ. "
        "tcp-echo and banner are cluster/local/tcp_servers.py, one process per pod; tcp-echo answers "
        "'meshproof-echo <line>' as Istio's samples/tcp-echo (the kube backend's) does with that prefix."
    ),
    "server sidecar's peer log": (
        "Inbound tcp_proxy filters carry an access log (the client identity the sidecar verified, JSON on its "
        "stdout) that Istio does not configure; the kube backend adds the same with an EnvoyFilter. It changes no "
        "traffic."
    ),
    "creation order": (
        "'Oldest wins' follows the order of resources in the scenario; on a cluster it follows "
        "creationTimestamp (1 s resolution), which the kube backend keeps in list order by applying >= 1 s apart."
    ),
}
