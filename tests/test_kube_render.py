"""The kube backend's objects, rendered without a cluster and validated against the pinned schemas
(Kubernetes v1.34 definitions, Istio v1.30.3 CRDs in cluster/schemas/)."""

from __future__ import annotations

import copy
import json
import re

import pytest

from cluster.backend import RESPONSE_FLAGS_HEADER
from cluster.kube.render import (
    INJECT_LABEL,
    REV_LABEL,
    RUN_LABEL,
    Images,
    Revisions,
    capture_container,
    leftover_selector,
    namespace_docs,
    namespace_map,
    policy_docs,
    render_template,
    run_labels,
    run_selector,
    workload_docs,
)
from cluster.local.controlplane import _hcm
from cluster.schemas.validate import SchemaError, errors, validate
from meshproof.istio_api import ManifestError
from meshproof.scenario import scenario_from_dict
from suites.matrix import matrix_scenarios, scope_scenarios
from tests.kube_scenarios import MESH_WIDE, PA_STRICT, RUN, dr_istio_mutual, scenario

DR_MUTUAL = dr_istio_mutual(exportTo=["sleep"])




def all_docs(scn, revisions=None, allow_mesh_wide=False):
    revisions = revisions or Revisions()
    labels = run_labels("sess1", "kab12c", RUN)
    return (namespace_docs(scn, RUN, "sess1", "kab12c", revisions) + workload_docs(scn, RUN, Images(), revisions)
            + policy_docs(scn, RUN, allow_mesh_wide, labels))


@pytest.mark.parametrize("client_sidecar", [True, False])
@pytest.mark.parametrize("server_sidecar", [True, False])
@pytest.mark.parametrize("revisions", [Revisions(), Revisions.both("1-30-3"), Revisions("1-29-6", "1-30-3")])
def test_every_rendered_object_is_valid(client_sidecar, server_sidecar, revisions):
    scn = scenario([PA_STRICT, DR_MUTUAL], {"namespace": "sleep", "sidecar": client_sidecar},
                   {"namespace": "httpbin", "sidecar": server_sidecar, "service_port": 8000, "target_port": 9080})
    docs = all_docs(scn, revisions)
    assert sorted(d["kind"] for d in docs) == sorted(["Namespace"] * 2 + ["ServiceAccount", "Service", "Deployment"] * 2
                                                    + ["PeerAuthentication", "DestinationRule"]
                                                    + ["EnvoyFilter"] * 2 * client_sidecar)
    for doc in docs:
        assert errors(doc) == [], doc


def test_capture_container_is_a_valid_ephemeral_container():
    container = capture_container("meshproof-capture", Images())
    assert errors(container, as_kind="EphemeralContainer") == []
    assert set(container["securityContext"]["capabilities"]["add"]) >= {"NET_RAW"}
    container["securityContext"]["capabilities"]["add"] = "NET_RAW"  # a string, not a list: must go red
    assert errors(container, as_kind="EphemeralContainer")


def test_httpbin_matches_istio_sample_shape_and_scenario_ports():
    scn = scenario(server={"namespace": "httpbin", "sidecar": True, "service_port": 8000, "target_port": 9080})
    docs = {(d["kind"], d["metadata"]["name"]): d for d in workload_docs(scn, RUN, Images(), Revisions())}
    service = docs[("Service", "httpbin")]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": 9080}]
    pod = docs[("Deployment", "httpbin")]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "httpbin"
    container = pod["spec"]["containers"][0]
    assert container["ports"] == [{"containerPort": 9080}]
    assert {"name": "PORT", "value": "9080"} in container["env"]
    assert pod["metadata"]["labels"]["app"] == "httpbin"  # scenario labels reach the pod (PA selectors match them)
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_an_app_protocol_reaches_the_service_port_and_the_peer_identity_log():
    scn = scenario(server={"namespace": "httpbin", "sidecar": True, "app_protocol": "tcp"})
    docs = {(d["kind"], d["metadata"]["name"]): d for d in workload_docs(scn, RUN, Images(), Revisions())}
    service = docs[("Service", "httpbin")]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": 8080, "appProtocol": "tcp"}]
    assert errors(service) == []
    # httpbin behind tcp_proxy sees no X-Forwarded-Client-Cert: the server sidecar's access log names the peer
    assert any(d["kind"] == "EnvoyFilter" for d in docs.values())


def test_client_sidecar_gets_one_upstream_connection_per_request_and_nothing_else():
    scn = scenario(server={"namespace": "httpbin", "sidecar": True, "service_port": 8000, "target_port": 9080})
    [ef] = [d for d in workload_docs(scn, RUN, Images(), Revisions())
            if d["metadata"]["name"] == "meshproof-no-connection-reuse"]
    assert ef["metadata"]["namespace"] == f"sleep-{RUN}"
    assert ef["spec"]["workloadSelector"]["labels"] == {"meshproof.io/role": "sleep"}
    patch, passthrough = ef["spec"]["configPatches"]
    assert patch["match"] == {"context": "SIDECAR_OUTBOUND",
                              "cluster": {"service": f"httpbin.httpbin-{RUN}.svc.cluster.local", "portNumber": 8000}}
    # a pod-IP request's PassthroughCluster pools no connection from one cell to the next either
    assert passthrough["match"] == {"context": "SIDECAR_OUTBOUND", "cluster": {"name": "PassthroughCluster"}}
    assert passthrough["patch"]["value"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["common_http_protocol_options"] == {
        "max_requests_per_connection": 1}
    assert "transport_socket" not in json.dumps(passthrough)
    options = patch["patch"]["value"]["typed_extension_protocol_options"]
    [(name, value)] = options.items()
    assert name == "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" == value["@type"].rsplit("/", 1)[1]
    assert value["common_http_protocol_options"] == {"max_requests_per_connection": 1}
    assert "transport_socket" not in json.dumps(patch)  # TLS stays the policies' business
    no_sidecar = scenario(client={"namespace": "sleep", "sidecar": False})
    assert not [d for d in workload_docs(no_sidecar, RUN, Images(), Revisions()) if d["kind"] == "EnvoyFilter"]


def test_client_sidecar_reports_its_response_flags_on_the_service_ports_routes():
    scn = scenario(server={"namespace": "httpbin", "sidecar": True, "service_port": 8000, "target_port": 9080})
    [ef] = [d for d in workload_docs(scn, RUN, Images(), Revisions()) if d["metadata"]["name"] == "meshproof-response-flags"]
    assert ef["metadata"]["namespace"] == f"sleep-{RUN}" and errors(ef) == []
    assert ef["spec"]["workloadSelector"]["labels"] == {"meshproof.io/role": "sleep"}
    [patch] = ef["spec"]["configPatches"]
    assert patch["match"] == {"context": "SIDECAR_OUTBOUND", "routeConfiguration": {"portNumber": 8000}}
    headers = {h["header"]["key"]: h["header"]["value"] for h in patch["patch"]["value"]["response_headers_to_add"]}
    # The same headers, with the same values, as the reference mesh's client sidecar adds.
    assert headers == {RESPONSE_FLAGS_HEADER: "%RESPONSE_FLAGS%",
                       RESPONSE_FLAGS_HEADER + "-reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%"}
    local = _hcm("outbound_x", "c", inbound=False)["typed_config"]["route_config"]["response_headers_to_add"]
    assert {h["header"]["key"]: h["header"]["value"] for h in local} == headers


def test_images_are_pinned_and_overridable_for_a_mirror():
    pinned = Images()
    assert all(re.search(r":v?\d+\.\d+", image) for image in (pinned.sleep, pinned.httpbin, pinned.capture))
    mirrored = Images.from_env({"MESHPROOF_CAPTURE_IMAGE": "mirror.local/netshoot:v0.14"})
    assert mirrored == Images(capture="mirror.local/netshoot:v0.14")
    assert capture_container("c", mirrored)["image"] == "mirror.local/netshoot:v0.14"


def test_sidecar_and_revision_labels():
    scn = scenario(client={"namespace": "shared", "sidecar": False}, server={"namespace": "shared", "sidecar": True})
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in workload_docs(scn, RUN, Images(), Revisions.both("canary")) if d["kind"] == "Deployment"}
    assert pods["sleep"][INJECT_LABEL] == "false" and REV_LABEL not in pods["sleep"]
    assert pods["httpbin"][INJECT_LABEL] == "true" and pods["httpbin"][REV_LABEL] == "canary"
    [ns] = namespace_docs(scn, RUN, "s", "o", Revisions.both("canary"))
    assert ns["metadata"]["labels"][REV_LABEL] == "canary" and "istio-injection" not in ns["metadata"]["labels"]
    [ns] = namespace_docs(scn, RUN, "s", "o", Revisions())
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"


def test_mixed_revisions_in_one_namespace_leave_injection_to_the_pods():
    scn = scenario(client={"namespace": "shared", "sidecar": True}, server={"namespace": "shared", "sidecar": True})
    [ns] = namespace_docs(scn, RUN, "s", "o", Revisions("old", "new"))
    # Istio's object-selector webhook fires only when the namespace has neither injection label.
    assert REV_LABEL not in ns["metadata"]["labels"] and "istio-injection" not in ns["metadata"]["labels"]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in workload_docs(scn, RUN, Images(), Revisions("old", "new")) if d["kind"] == "Deployment"}
    assert (pods["sleep"][REV_LABEL], pods["httpbin"][REV_LABEL]) == ("old", "new")


def test_policies_move_into_run_namespaces_and_keep_order():
    scn = scenario([PA_STRICT, DR_MUTUAL])
    docs = policy_docs(scn, RUN, False, run_labels("s", "o", RUN))
    assert [d["kind"] for d in docs] == ["PeerAuthentication", "DestinationRule"]
    assert docs[0]["metadata"]["namespace"] == f"httpbin-{RUN}"
    assert docs[1]["metadata"]["namespace"] == f"sleep-{RUN}"
    assert docs[1]["spec"]["host"] == f"httpbin.httpbin-{RUN}.svc.cluster.local"
    assert docs[1]["spec"]["exportTo"] == [f"sleep-{RUN}"]
    assert all(d["metadata"]["labels"][RUN_LABEL] == RUN for d in docs)
    assert scn.manifests[0]["metadata"]["namespace"] == "httpbin"  # the scenario itself is untouched


def test_policies_name_the_run_identities_and_hosts_wherever_they_name_a_namespace():
    """sni and subjectAltNames name the server's namespace: left as written, a DestinationRule pinning the
    server's identity would refuse the run's server (spiffe://.../ns/httpbin-<run>/...)."""
    pinned = dr_istio_mutual(exportTo=["sleep"])
    pinned["spec"]["trafficPolicy"]["tls"].update(
        sni="outbound_.8000_._.httpbin.httpbin.svc.cluster.local",
        subjectAltNames=["spiffe://cluster.local/ns/httpbin/sa/httpbin"])
    [doc] = policy_docs(scenario([pinned]), RUN, False)
    tls = doc["spec"]["trafficPolicy"]["tls"]
    assert tls["sni"] == f"outbound_.8000_._.httpbin.httpbin-{RUN}.svc.cluster.local"
    assert tls["subjectAltNames"] == [f"spiffe://cluster.local/ns/httpbin-{RUN}/sa/httpbin"]
    assert doc["spec"]["exportTo"] == [f"sleep-{RUN}"]


def test_extra_manifest_namespaces_get_run_namespaces_but_the_root_does_not():
    third = copy.deepcopy(DR_MUTUAL)
    third["metadata"]["namespace"] = "other"
    assert namespace_map(scenario([third, MESH_WIDE]), RUN) == {
        "httpbin": f"httpbin-{RUN}", "other": f"other-{RUN}", "sleep": f"sleep-{RUN}"}


def test_mesh_wide_policy_is_refused_by_default():
    with pytest.raises(ManifestError) as err:
        policy_docs(scenario([PA_STRICT, MESH_WIDE]), RUN, allow_mesh_wide=False)
    assert err.value.field_path == "metadata.namespace"
    assert "root namespace" in str(err.value) and "--allow-mesh-wide" in str(err.value)
    assert "resources[1] PeerAuthentication istio-system/default" in str(err.value)


def test_mesh_wide_policy_when_allowed_stays_in_root_and_is_labelled_for_cleanup():
    docs = policy_docs(scenario([MESH_WIDE]), RUN, True, run_labels("s", "o", RUN))
    assert docs[0]["metadata"]["namespace"] == "istio-system"
    assert docs[0]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "meshproof"
    assert docs[0]["metadata"]["labels"][RUN_LABEL] == RUN


def test_root_namespace_selector_is_narrowed_to_the_runs_pods():
    selected = copy.deepcopy(MESH_WIDE)
    selected["spec"]["selector"] = {"matchLabels": {"app": "httpbin"}}
    [doc] = policy_docs(scenario([selected]), RUN, True, run_labels("s", "o", RUN))
    assert doc["spec"]["selector"]["matchLabels"] == {"app": "httpbin", RUN_LABEL: RUN}
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in workload_docs(scenario(), RUN, Images(), Revisions())
            if d["kind"] == "Deployment"]
    assert all(p[RUN_LABEL] == RUN for p in pods)  # the narrowed selector still matches the scenario's pods
    [unselected] = policy_docs(scenario([MESH_WIDE]), RUN, True, run_labels("s", "o", RUN))
    assert "selector" not in unselected["spec"]  # a mesh-wide policy stays mesh-wide: that is what it tests


def test_namespace_names_and_run_ids_are_checked():
    assert namespace_map(scenario(), RUN)["httpbin"] == f"httpbin-{RUN}"
    with pytest.raises(ValueError, match="run id"):
        namespace_map(scenario(), "Bad_Id")
    with pytest.raises(ManifestError, match="longer than 63"):
        namespace_map(scenario(server={"namespace": "n" * 60, "sidecar": True}), RUN)


def test_template_placeholder_without_value_is_an_error():
    with pytest.raises(ValueError, match=r"namespace.yaml: placeholder \$\{owner\} has no value"):
        render_template("namespace.yaml", namespace="x", session="s", run_id="r", scenario_namespace="x")


def test_cleanup_selectors():
    assert leftover_selector() == "app.kubernetes.io/managed-by=meshproof"
    assert leftover_selector("abc") == "app.kubernetes.io/managed-by=meshproof,meshproof.io/session!=abc"
    assert run_selector(RUN) == f"meshproof.io/run={RUN}"
    # Every object kind the backend creates carries the labels the selectors use.
    for doc in all_docs(scenario([PA_STRICT])):
        labels = doc["metadata"].get("labels", {})
        assert labels.get(RUN_LABEL) == RUN, doc["kind"]
        if doc["kind"] in ("Namespace", "PeerAuthentication"):
            assert labels["app.kubernetes.io/managed-by"] == "meshproof"


# --- the schemas can go red ----------------------------------------------------------------------

@pytest.mark.parametrize("break_it,expected", [
    (lambda d: d["spec"].update(replicas="one"), "replicas"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort="8080"),
     "containerPort"),
    (lambda d: d["spec"]["template"]["spec"].update(serviceAcountName="typo"), "serviceAcountName"),
    (lambda d: d["spec"].pop("selector"), "selector"),
])
def test_kubernetes_schema_rejects_broken_deployments(break_it, expected):
    [deployment] = [d for d in workload_docs(scenario(), RUN, Images(), Revisions())
                    if d["kind"] == "Deployment" and d["metadata"]["name"] == "httpbin"]
    break_it(deployment)
    with pytest.raises(SchemaError, match=expected):
        validate(deployment, "broken")


@pytest.mark.parametrize("case_id", ["pa-unknown-mode", "pa-typo-field", "dr-unknown-tls-mode"])
def test_istio_crd_schema_rejects_what_the_suites_call_invalid(case_id):
    from suites.invalid import INVALID_MANIFESTS

    manifest = next(m for c, m, _ in INVALID_MANIFESTS if c == case_id)
    assert errors(manifest), f"{case_id} passed the pinned CRD schema"


def test_unknown_kind_and_api_version_are_named():
    with pytest.raises(SchemaError, match="allowed: .*PeerAuthentication"):
        errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    with pytest.raises(SchemaError, match="allowed: security.istio.io/v1"):
        errors({**PA_STRICT, "apiVersion": "security.istio.io/v2"})


# --- the suites' manifests ------------------------------------------------------------------------

def test_every_suite_cell_renders_to_valid_objects():
    cells = list(matrix_scenarios()) + list(scope_scenarios())
    assert len(cells) >= 100
    for cell_id, raw in cells:
        scn = scenario_from_dict(copy.deepcopy(raw), cell_id)
        for doc in all_docs(scn, allow_mesh_wide=True):
            assert errors(doc) == [], f"{cell_id}: {doc['kind']} {doc['metadata']['name']}: {errors(doc)}"


# --- pod placement and the mesh certificate files -------------------------------------------------------

def deployments(scn, spread="preferred") -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in workload_docs(scn, RUN, Images(), Revisions(), spread)
            if d["kind"] == "Deployment"}


@pytest.mark.parametrize("spread", ["required", "preferred"])
def test_client_and_server_keep_apart_by_node(spread):
    """Each pod's anti-affinity selects exactly the other pod of this run, in its namespace, per node."""
    found = deployments(scenario(), spread)
    for me, other in (("sleep", "httpbin"), ("httpbin", "sleep")):
        terms = found[me]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        [term] = terms[f"{spread}DuringSchedulingIgnoredDuringExecution"]
        term = term.get("podAffinityTerm", term)
        target = found[other]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["namespaces"] == [target["metadata"]["namespace"]]
        labels = target["spec"]["template"]["metadata"]["labels"]
        assert term["labelSelector"]["matchLabels"].items() <= labels.items()
        assert not term["labelSelector"]["matchLabels"].items() <= found[me]["spec"]["template"]["metadata"][
            "labels"].items()  # it does not select itself
        assert errors(found[me]) == []
    with pytest.raises(ValueError, match="allowed: required, preferred"):
        deployments(scenario(), "anywhere")


def test_a_client_sidecar_keeps_its_mesh_certificate_where_mutual_cells_name_it():
    """The oracle's MUTUAL cells name /etc/certs/{cert-chain,key,root-cert}.pem: pilot-agent writes exactly
    these names (OutputKeyCertToDir) to OUTPUT_CERTS, which must be that directory, mounted in the sidecar."""
    from suites.expectations import MESH_CERT_FILES

    notes = deployments(scenario())["sleep"]["spec"]["template"]["metadata"]["annotations"]
    directory = json.loads(notes["proxy.istio.io/config"])["proxyMetadata"]["OUTPUT_CERTS"]
    assert {path.rsplit("/", 1)[0] for path in MESH_CERT_FILES.values()} == {directory}
    assert {path.rsplit("/", 1)[1] for path in MESH_CERT_FILES.values()} == {"cert-chain.pem", "key.pem",
                                                                            "root-cert.pem"}
    mounts, volumes = json.loads(notes["sidecar.istio.io/userVolumeMount"]), json.loads(notes["sidecar.istio.io/userVolume"])
    assert [m["mountPath"] for m in mounts.values()] == [directory] and mounts.keys() == volumes.keys()
    no_sidecar = scenario(client={"namespace": "sleep", "sidecar": False})
    assert "annotations" not in deployments(no_sidecar)["sleep"]["spec"]["template"]["metadata"]
