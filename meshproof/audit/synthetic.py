"""A generated mesh, as manifests: namespaces mid-migration, workloads with and without sidecars, Services, and
PeerAuthentications and DestinationRules of every shape the oracle reads (namespace, workload and port level;
exact, short and wildcard hosts, exportTo, workloadSelector, port settings). The index self-test and the
prediction benchmark read it through the manifest source like any user's folder."""

from __future__ import annotations

import random

TLS_MODES = ("DISABLE", "ISTIO_MUTUAL", "SIMPLE", None)
PA_MODES = ("STRICT", "PERMISSIVE", "DISABLE", "UNSET")


def generate(namespaces: int, workloads_per_ns: int, services_per_ns: int, policies: int,
             seed: int = 17) -> list[tuple[str, dict]]:
    rnd = random.Random(seed)
    names = [f"ns{i}" for i in range(namespaces)]
    docs: list[dict] = [{"kind": "Namespace", "metadata": {"name": "istio-system"}}]
    for ns in names:
        labels = rnd.choice(({"istio-injection": "enabled"}, {"istio.io/rev": "1-30"}, {},
                             {"istio-injection": "disabled"}))
        docs.append({"kind": "Namespace", "metadata": {"name": ns, "labels": labels}})
        for w in range(workloads_per_ns):
            pod_labels = {"app": f"app{w}", "tier": rnd.choice(("web", "db", "batch")),
                          "team": rnd.choice(("a", "b"))}
            if rnd.random() < 0.15:
                pod_labels["sidecar.istio.io/inject"] = rnd.choice(("true", "false"))
            docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"app{w}", "namespace": ns},
                         "spec": {"template": {"metadata": {"labels": pod_labels}, "spec": {
                             "serviceAccountName": f"sa{w % 3}",
                             "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]}}}})
        for s in range(services_per_ns):
            target = rnd.choice((8080, "http", 9090))
            docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc{s}", "namespace": ns},
                         "spec": {"selector": {"app": f"app{s % workloads_per_ns}"},
                                  "ports": [{"name": rnd.choice(("http", "http-web")), "port": 80 + s,
                                             "targetPort": target}]}})
    for i in range(policies):
        ns = rnd.choice([*names, "istio-system"]) if rnd.random() < 0.9 else "istio-system"
        docs.append(_peer_authentication(rnd, i, ns) if rnd.random() < 0.5 else
                    _destination_rule(rnd, i, ns, names, services_per_ns))
    return [("<generated>", d) for d in docs]


def _peer_authentication(rnd: random.Random, i: int, ns: str) -> dict:
    spec: dict = {"mtls": {"mode": rnd.choice(PA_MODES)}}
    if rnd.random() < 0.6:
        spec["selector"] = {"matchLabels": rnd.choice(({"tier": rnd.choice(("web", "db"))},
                                                       {"app": f"app{rnd.randrange(8)}"}))}
        if rnd.random() < 0.4:
            spec["portLevelMtls"] = {rnd.choice((8080, 9090)): {"mode": rnd.choice(PA_MODES)}}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": f"pa{i}", "namespace": ns}, "spec": spec}


def _destination_rule(rnd: random.Random, i: int, ns: str, names: list[str], services: int) -> dict:
    target_ns = rnd.choice(names)
    host = rnd.choice((f"svc{rnd.randrange(services)}.{target_ns}.svc.cluster.local", f"svc{rnd.randrange(services)}",
                       f"*.{target_ns}.svc.cluster.local", "*.svc.cluster.local"))
    spec: dict = {"host": host}
    mode = rnd.choice(TLS_MODES)
    if mode is not None:
        spec["trafficPolicy"] = {"tls": {"mode": mode}}
        if mode == "SIMPLE":
            spec["trafficPolicy"]["tls"]["insecureSkipVerify"] = True
        if rnd.random() < 0.3:
            spec["trafficPolicy"]["portLevelSettings"] = [
                {"port": {"number": 80 + rnd.randrange(services)}, "tls": {"mode": rnd.choice(TLS_MODES[:2])}}]
    if rnd.random() < 0.2:
        spec["exportTo"] = [rnd.choice((".", "*", rnd.choice(names)))]
    elif rnd.random() < 0.2:
        spec["workloadSelector"] = {"matchLabels": {"team": rnd.choice(("a", "b"))}}
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": f"dr{i}", "namespace": ns}, "spec": spec}
