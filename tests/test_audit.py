"""`meshproof audit` and `meshproof what-if`: the manifest source, the index against a naive scan, the what-if
exit codes, and bad input. Offline: nothing here contacts a cluster."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from meshproof import cli
from meshproof.audit import injection, synthetic
from meshproof.audit.bench import naive_prediction
from meshproof.audit.index import resolved_host
from meshproof.audit.manifests import inventory_from_docs, read_manifests
from meshproof.audit.pairs import Filters, audit, backends, oracle_port_name, target_port
from meshproof.istio_api import ManifestError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "audit"


def write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


DUMP = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: api-7d9f8-abcde
    namespace: shop
    uid: 1
    labels: {app: api, pod-template-hash: 7d9f8}
    ownerReferences: [{kind: ReplicaSet, name: api-7d9f8}]
  spec:
    serviceAccountName: api
    containers: [{name: api}, {name: istio-proxy}]
  status: {phase: Running}
- apiVersion: v1
  kind: Pod
  metadata:
    name: worker-0
    namespace: shop
    labels: {app: worker}
    ownerReferences: [{kind: StatefulSet, name: worker}]
  spec:
    containers: [{name: worker}]
  status: {phase: Running}
- apiVersion: v1
  kind: Pod
  metadata: {name: mixed-1-aaaaa, namespace: shop, labels: {app: mixed, pod-template-hash: "1"},
             ownerReferences: [{kind: ReplicaSet, name: mixed-1}]}
  spec: {containers: [{name: m}, {name: istio-proxy}]}
  status: {}
- apiVersion: v1
  kind: Pod
  metadata: {name: mixed-1-bbbbb, namespace: shop, labels: {app: mixed, pod-template-hash: "1"},
             ownerReferences: [{kind: ReplicaSet, name: mixed-1}]}
  spec: {containers: [{name: m}]}
  status: {}
"""


def test_manifest_source_reads_dumps_templates_and_nested_folders(tmp_path):
    write(tmp_path, "cluster/pods.yaml", DUMP)
    write(tmp_path, "gitops/shop/ns.yaml", """\
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop, labels: {istio-injection: enabled}}
        """)
    write(tmp_path, "gitops/shop/app.yml", """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api, namespace: shop}
        spec: {template: {metadata: {labels: {app: api}}, spec: {containers: [{name: api}]}}}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: front, namespace: shop}
        spec:
          template:
            metadata: {labels: {app: front}}
            spec:
              serviceAccountName: front
              containers: [{name: front, ports: [{name: web, containerPort: 8081}]}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: front, namespace: shop}
        spec:
          selector: {app: front}
          ports: [{name: http, port: 80, targetPort: web}, {name: dns, port: 53, protocol: UDP}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: db, namespace: shop}
        spec: {clusterIP: None, selector: {app: worker}, ports: [{port: 5432, appProtocol: http}]}
        """)
    inv = read_manifests(tmp_path)
    by_ref = {w.ref: w for w in inv.workloads}
    assert set(by_ref) == {"shop/api", "shop/worker", "shop/mixed", "shop/front"}
    # a running pod is the truth for its Deployment (the template would be predicted the same here)
    assert by_ref["shop/api"].kind == "Pod" and by_ref["shop/api"].sidecar is True
    assert by_ref["shop/api"].labels == {"app": "api"} and by_ref["shop/api"].service_account == "api"
    assert by_ref["shop/worker"].sidecar is False and by_ref["shop/worker"].service_account == "default"
    assert by_ref["shop/mixed"].sidecar is None and "1 of its 2 pods" in by_ref["shop/mixed"].sidecar_why
    assert by_ref["shop/front"].sidecar is True and "istio-injection=enabled" in by_ref["shop/front"].sidecar_why
    ports = {p.ref: p for p in inv.service_ports}
    assert set(ports) == {"shop/front:80", "shop/db:5432"}  # UDP left out
    assert any("UDP" in n for n in inv.notes)
    front = ports["shop/front:80"]
    assert target_port(front, by_ref["shop/front"]) == 8081
    assert [w.ref for w in backends(inv.workloads, front)] == ["shop/front"]
    db = ports["shop/db:5432"]
    assert db.headless and oracle_port_name(db) == "http"  # appProtocol decides


@pytest.mark.parametrize(("ns_labels", "pod_labels", "annotations", "expected"), [
    ({"istio-injection": "enabled"}, {}, {}, True),
    ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"}, {}, False),
    ({"istio-injection": "enabled"}, {}, {"sidecar.istio.io/inject": "false"}, False),
    ({"istio-injection": "disabled"}, {"sidecar.istio.io/inject": "true"}, {}, False),
    ({"istio.io/rev": "canary"}, {}, {}, True),
    ({}, {"sidecar.istio.io/inject": "true"}, {}, True),
    ({}, {"istio.io/rev": "canary"}, {}, True),
    ({}, {}, {}, False),
    (None, {}, {}, None),  # namespace not in the input
    (None, {"sidecar.istio.io/inject": "false"}, {}, False),
])
def test_injection_follows_the_webhook_selectors(ns_labels, pod_labels, annotations, expected):
    sidecar, why = injection.predicted({"containers": [{"name": "app"}]}, pod_labels, annotations, ns_labels)
    assert sidecar is expected, why


def test_ambient_workloads_are_listed_not_guessed(tmp_path):
    """An ambient pod has no sidecar yet its traffic is mTLS (ztunnel): calling it sidecar-less would be wrong."""
    write(tmp_path, "a.yaml", """\
        apiVersion: v1
        kind: Namespace
        metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: app, namespace: amb}
        spec: {template: {metadata: {labels: {app: a}}, spec: {containers: [{name: a}]}}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: running, namespace: amb, uid: x}
        spec: {containers: [{name: r}]}
        status: {}
        """)
    inv = read_manifests(tmp_path)
    assert {w.ref: w.sidecar for w in inv.workloads} == {"amb/app": None, "amb/running": None}
    assert all("ambient" in w.sidecar_why for w in inv.workloads)


def test_host_network_pods_are_never_injected():
    assert injection.predicted({"hostNetwork": True}, {}, {}, {"istio-injection": "enabled"})[0] is False


def test_bad_input_is_named_counted_and_listed(tmp_path):
    write(tmp_path, "a.yaml", """\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: typo, namespace: shop}
        spec: {mtls: {mode: STRICT_ONLY}}
        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: i, namespace: shop}
        ---
        apiVersion: autoscaling/v2
        kind: HorizontalPodAutoscaler
        metadata: {name: h, namespace: shop}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: orphan, namespace: elsewhere}
        spec: {template: {metadata: {labels: {app: o}}, spec: {containers: [{name: o}]}}}
        """)
    inv = read_manifests(tmp_path)
    assert inv.skipped_kinds == {"HorizontalPodAutoscaler": 1, "Ingress": 1}
    assert len(inv.rejected) == 1 and "shop/typo" in inv.rejected[0] and "STRICT_ONLY" in inv.rejected[0]
    assert inv.resources == []
    assert [w.ref for w in inv.unknown_sidecars] == ["elsewhere/orphan"]


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    write(tmp_path, "bad.yaml", "kind: Service\nmetadata: {name: [\n")
    with pytest.raises(ManifestError, match=r"bad\.yaml.*line"):
        read_manifests(tmp_path)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert cli.main(["audit", "--from-manifests", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert cli.main(["audit", "--from-manifests", str(EXAMPLE / "mesh"), "--istio-version", "1.2"]) == 2
    assert cli.main(["what-if", "--from-manifests", str(EXAMPLE / "mesh")]) == 2  # no change given
    write(tmp_path, "change.yaml", """\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: default, namespace: payments}
        spec: {mtls: {mode: STRICTER}}
        """)
    assert cli.main(["what-if", "--from-manifests", str(EXAMPLE / "mesh"), "--apply", str(tmp_path / "change.yaml")]) == 2
    assert "STRICTER" in capsys.readouterr().err
    assert cli.main(["what-if", "--from-manifests", str(EXAMPLE / "mesh"), "--strict", "paymnts"]) == 2
    assert "no such namespace in the input; known: batch, frontend" in capsys.readouterr().err
    write(tmp_path, "deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, namespace: y}\n")
    assert cli.main(["what-if", "--from-manifests", str(EXAMPLE / "mesh"), "--apply", str(tmp_path / "deploy.yaml")]) == 2


def _pairs_by(pairs):
    return {(p.client.ref, p.port.ref): p for p in pairs}


def test_example_audit_finds_the_migration_state(tmp_path, capsys):
    out = tmp_path / "audit.json"
    assert cli.main(["audit", "--from-manifests", str(EXAMPLE / "mesh"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    pairs = {(p["client"], p["service"]): p for p in data["pairs"]}
    # the ledger is STRICT on 8080 but its 9090 exception lets Prometheus (no sidecar) in, in cleartext
    assert pairs[("monitoring/prometheus", "payments/ledger:8080")]["outcome"] == "reset"
    assert pairs[("monitoring/prometheus", "payments/ledger:9090")]["outcome"] == "plaintext"
    # the legacy DestinationRule keeps frontend -> payments/api in cleartext, with the real host named
    legacy = pairs[("frontend/web", "payments/api:8080")]
    assert legacy["outcome"] == "plaintext" and legacy["client_tls"] == "plaintext"
    assert any("api.payments.svc.cluster.local" in d for d in legacy["details"])
    mtls = pairs[("payments/api", "payments/ledger:8080")]
    assert mtls["outcome"] == "mtls" and mtls["peer_identity"] == "spiffe://cluster.local/ns/payments/sa/payments-api"
    assert data["unknown_sidecars"] == ["reporting/dashboard"]
    assert pairs[("reporting/dashboard", "payments/api:8080")]["status"] == "unknown"
    assert data["skipped_kinds"] == {"Ingress": 1, "ServiceMonitor": 1}
    assert "monitoring/strict" in data["rejected"][0]
    printed = capsys.readouterr().out
    assert data["summary"] in printed.replace("\n", "")


def test_large_audit_table_shows_what_needs_action(tmp_path, monkeypatch, capsys):
    from meshproof.audit import render
    monkeypatch.setattr(render, "TABLE_ROWS", 10)
    monkeypatch.setenv("COLUMNS", "200")  # rule names unfolded
    assert cli.main(["audit", "--from-manifests", str(EXAMPLE / "mesh")]) == 0
    printed = capsys.readouterr().out
    assert "23 mTLS pairs not shown" in printed and "istio-mutual-accepted" not in printed
    assert cli.main(["audit", "--from-manifests", str(EXAMPLE / "mesh"), "--all"]) == 0
    assert "istio-mutual-accepted" in capsys.readouterr().out


def test_filters_choose_clients_and_services():
    inv = read_manifests(EXAMPLE / "mesh")
    pairs, _ = audit(inv, filters=Filters.parse(["payments/app=api", "batch"], ["payments/ledger"]))
    assert {(p.client.ref, p.port.ref) for p in pairs} == {
        (c, f"payments/ledger:{port}") for c in ("payments/api", "batch/cron-reporter") for port in (8080, 9090)}


def test_what_if_exit_codes(tmp_path, capsys):
    mesh = str(EXAMPLE / "mesh")
    out = tmp_path / "what-if.json"
    assert cli.main(["what-if", "--from-manifests", mesh, "--strict", "payments", "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "switching namespace payments to STRICT" in printed and "breaks 4 pairs" in printed
    assert "batch/cron-reporter has no sidecar -> reset" in printed
    breaks = {(c["client"], c["service"]) for c in json.loads(out.read_text())["changes"] if c["change"] == "breaks"}
    assert breaks == {(c, "payments/api:8080") for c in
                      ("batch/cron-reporter", "legacy/billing", "monitoring/prometheus", "frontend/web")}
    # the same change as a file gives the same answer
    assert cli.main(["what-if", "--from-manifests", mesh, "--apply", str(EXAMPLE / "strict-payments.yaml")]) == 1
    # a change that breaks nothing: exit 0
    assert cli.main(["what-if", "--from-manifests", mesh, "--strict", "payments", "--from", "payments"]) == 0


def test_strict_edits_the_existing_namespace_policy():
    """A second namespace-wide policy would lose to the older one (the oldest wins): --strict sets the one
    in force instead of adding one."""
    from meshproof.audit import whatif
    inv = read_manifests(EXAMPLE / "mesh")
    changed, said = whatif.strict(inv, "istio-system")
    assert "istio-system/default" in said
    assert [r.mode for r in changed.resources if r.namespace == "istio-system"] == ["STRICT"]


FIELDS = ("outcome", "wire", "rule", "server_mode", "client_tls", "peer_identity")


def _generated():
    inv = inventory_from_docs(synthetic.generate(namespaces=6, workloads_per_ns=6, services_per_ns=3, policies=120))
    assert not inv.rejected
    return inv


def _mismatches(inv, pairs):
    return [p.key for p in pairs if p.prediction is not None and
            {f: getattr(p.prediction, f) for f in FIELDS} != {f: getattr(naive_prediction(inv, p), f) for f in FIELDS}]


def test_index_gives_the_naive_scan_predictions():
    inv = _generated()
    pairs, predictor = audit(inv)
    predicted = [p for p in pairs if p.prediction is not None]
    assert len(predicted) > 500 and predictor.oracle_calls < len(predicted) / 2
    assert len({p.prediction.rule for p in predicted}) >= 6  # the generated mesh reaches many rules, not one
    assert _mismatches(inv, pairs) == []


@pytest.mark.parametrize("mutant", ["namespace-policies-lost", "wildcard-rules-lost", "client-labels-dropped"])
def test_index_self_test_can_fail(monkeypatch, mutant):
    """The naive comparison goes red on a broken index."""
    from meshproof.audit import index
    from meshproof.audit import pairs as pairs_module
    if mutant == "namespace-policies-lost":
        original = index.PolicyIndex.peer_authentications
        monkeypatch.setattr(index.PolicyIndex, "peer_authentications",
                            lambda self, ns, labels: tuple(p for p in original(self, ns, labels)
                                                           if p.selector or p.namespace == self.root))
    elif mutant == "wildcard-rules-lost":
        monkeypatch.setattr(index, "_covers", lambda wildcard, host: False)
    else:
        monkeypatch.setattr(pairs_module.Predictor, "_client_part", _client_part_without_labels)
    inv = _generated()
    assert _mismatches(inv, audit(inv)[0])


def _client_part_without_labels(self, client, port):
    drs = self.index.destination_rules(client.namespace, port.namespace, port.host) if client.sidecar else ()
    exact = tuple(resolved_host(d) == port.host for d in drs)
    return self._number((client.namespace, client.sidecar, (), self._number((exact,), drs)), ())


@pytest.mark.parametrize("command", [
    "audit --from-manifests examples/audit/mesh --from batch --from frontend",
    "what-if --from-manifests examples/audit/mesh --strict payments --to payments",
])
def test_readme_shows_the_real_output(command, monkeypatch, capsys):
    """The README's walk-through is what the commands print today (regenerate it with COLUMNS=130)."""
    monkeypatch.chdir(EXAMPLE.parent.parent)
    monkeypatch.setenv("COLUMNS", "130")
    cli.main(command.split())
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    assert f"$ meshproof {command}\n{capsys.readouterr().out}" in readme, \
        f"README.md's example is stale: paste the output of `COLUMNS=130 .venv/bin/meshproof {command}`"


def test_picture_fills_each_cell_with_its_predicted_class(tmp_path):
    import re as regex

    from reports.audit_matrix import PNG_LIMIT, to_png, write_picture
    pairs, _ = audit(read_manifests(EXAMPLE / "mesh"))
    written = write_picture(pairs, "summary", "counts", tmp_path)
    assert [p.name for p in written] == ["audit-matrix.html", "audit-matrix.png"]
    assert written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = written[0].read_text()
    rows = regex.findall(r'<tr><th class="client">([^<]+)</th>(.*?)</tr>', page)
    classes = {client: regex.findall(r'data-class="([^"]+)"', cells) for client, cells in rows}
    # columns sorted: frontend/web:80, inventory/db:3306, :5432, legacy/billing:80, payments/api:8080,
    # payments/ledger:8080, :9090; db:3306 is MySQL, which greets first: a client without a sidecar times out
    assert classes["batch/cron-reporter"] == ["cleartext", "refused", "cleartext", "cleartext", "cleartext",
                                              "refused", "cleartext"]
    assert classes["payments/api"] == ["mtls", "mtls", "mtls", "cleartext", "mtls", "mtls", "mtls"]
    assert set(classes["reporting/dashboard"]) == {"not-run"}
    many = [replace(pairs[0], client=replace(pairs[0].client, name=f"c{i}")) for i in range(PNG_LIMIT + 1)]
    assert to_png(many, tmp_path / "big.png", "x") is False and not (tmp_path / "big.png").exists()


def test_app_tls_and_timeout_have_their_own_place_in_the_summary():
    """A pair that completes over the app's own TLS is encrypted but carries no mesh identity: neither mTLS nor
    cleartext nor broken. A timeout (a server-first protocol behind protocol sniffing) is broken."""
    from meshproof.audit.render import summary
    from meshproof.vocabulary import Outcome, Wire

    pairs, _ = audit(read_manifests(EXAMPLE / "mesh"))
    mtls = [p for p in pairs if p.status == "mtls"]
    as_app_tls = replace(mtls[0], prediction=replace(mtls[0].prediction, outcome=Outcome.APP_TLS, wire=Wire.APP_TLS))
    as_timeout = replace(mtls[1], prediction=replace(mtls[1].prediction, outcome=Outcome.TIMEOUT))
    assert (as_app_tls.status, as_timeout.status) == ("app-tls", "broken")
    line = summary([as_app_tls, as_timeout])
    assert line.startswith("2 pairs: 0 mTLS, 1 app TLS without mesh mTLS (") and "0 cleartext, 1 broken (" in line
    assert "app TLS" not in summary(mtls)  # named only when a pair has it


@pytest.mark.parametrize(("name", "app_protocol", "number", "app"), [
    ("http", None, 8080, "httpbin"), ("grpc-api", None, 9000, "httpbin"), ("metrics", None, 9090, "httpbin"),
    ("tcp-db", None, 5432, "tcp-echo"), ("redis", None, 6379, "tcp-echo"), ("https", None, 443, "https"),
    ("web", "tls", 8443, "https"), ("mysql", None, 3306, "banner"), ("tcp", None, 25, "banner"),
    ("db", None, 3306, "banner"), ("web", "kubernetes.io/ws", 8080, "httpbin"),
    ("web", "kubernetes.io/wss", 8443, "https")])
def test_each_port_gets_a_stand_in_app_of_its_kind(name, app_protocol, number, app):
    from meshproof.audit.inventory import ServicePort
    from meshproof.audit.pairs import stand_in_app

    assert stand_in_app(ServicePort("ns", "svc", number, number, name, app_protocol, False, {})) == app


@pytest.mark.parametrize(("name", "app_protocol", "port_name"), [
    ("web", "kubernetes.io/ws", "http"), ("web", "kubernetes.io/wss", "https"), ("web", "kubernetes.io/h2c", "http2"),
    ("http-web", "tcp", "tcp"), ("tcp-db", "HTTP", "http"), ("db", None, "db")])
def test_the_scenario_port_name_reads_as_istio_reads_the_port(name, app_protocol, port_name):
    """Kubernetes' standard appProtocol names are no port name's prefix: the scenario names their protocol."""
    from meshproof.audit.inventory import ServicePort

    assert oracle_port_name(ServicePort("ns", "svc", 8080, 8080, name, app_protocol, False, {})) == port_name
