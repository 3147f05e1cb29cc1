"""`meshproof probe SCENARIO --mesh kube --dry-run`: what a run would create on a cluster, in order, without one.

For every matrix and scope cell each document validates against the pinned Kubernetes and Istio schemas
(cluster/schemas/), carries the run label, lives in a run namespace (the mesh's root namespace for a
mesh-wide policy), and names no namespace of the scenario in an identity or host."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.kube import apps
from cluster.kube.backend import KubeBackend, KubeHandle
from cluster.kube.render import RUN_LABEL, capture_container, kubelet_literal
from cluster.schemas.validate import SchemaError, errors
from meshproof.scenario import APPS, NotSupportedYet, scenario_from_dict
from suites.cells import as_scenarios
from suites.destinations import destinations_cells
from suites.matrix import matrix_scenarios, scope_scenarios
from suites.ports import ports_cells
from tests.kube_scenarios import PA_STRICT

ROOT = Path(__file__).resolve().parents[1]
CELLS = list(matrix_scenarios()) + list(scope_scenarios())
NEW_CELLS = as_scenarios(ports_cells()) + as_scenarios(destinations_cells())  # issue 14's suites
KINDS_IN_ORDER = ["Namespace", "ServiceAccount", "Deployment", "Service", "EnvoyFilter", "Policy", "Pod"]


def check_plan(calls, scenario) -> None:
    run_id = calls[0][1]["metadata"]["labels"][RUN_LABEL]
    kinds = [doc["kind"] if doc["kind"] not in ("PeerAuthentication", "DestinationRule") else "Policy"
             for _, doc in calls]
    assert kinds == sorted(kinds, key=KINDS_IN_ORDER.index), kinds
    policies = [d for _, d in calls if d["kind"] in ("PeerAuthentication", "DestinationRule")]
    assert [(d["kind"], d["metadata"]["name"]) for d in policies] == \
        [(m["kind"], m["metadata"]["name"]) for m in scenario.manifests]  # the scenario's order: oldest wins
    for request, doc in calls:
        problems = errors(doc, subresource="ephemeralcontainers") if request.startswith("patch") else errors(doc)
        assert problems == [], f"{request}: {problems}"
        meta = doc["metadata"]
        assert meta["labels"][RUN_LABEL] == run_id, request
        namespace = meta["name"] if doc["kind"] == "Namespace" else meta["namespace"]
        assert namespace.endswith(f"-{run_id}") or namespace == scenario.root_namespace, request
        for entry in (doc.get("spec") or {}).get("exportTo", []):
            assert entry in (".", "*") or entry.endswith(f"-{run_id}"), request
    text = json.dumps([doc for _, doc in calls])
    for ns in {scenario.client.namespace, scenario.server.namespace}:
        assert f"/ns/{ns}/" not in text and f".{ns}.svc" not in text, ns


@pytest.mark.parametrize("cell_id,raw", CELLS, ids=[c for c, _ in CELLS])
def test_every_cell_plans_valid_objects_in_run_namespaces(cell_id, raw):
    scenario = scenario_from_dict(copy.deepcopy(raw), cell_id)
    check_plan(KubeBackend(allow_mesh_wide=True).dry_run(scenario), scenario)


@pytest.mark.parametrize("cell_id,raw", NEW_CELLS, ids=[c for c, _ in NEW_CELLS])
def test_every_ports_and_destinations_cell_plans_valid_objects_in_run_namespaces(cell_id, raw):
    scenario = scenario_from_dict(copy.deepcopy(raw), cell_id)
    check_plan(KubeBackend().dry_run(scenario), scenario)


def test_the_checks_can_go_red():
    scenario = scenario_from_dict(copy.deepcopy(dict(CELLS)["scope/dr-istio-mutual-insecure-wrong-san"]), "cell")
    calls = KubeBackend().dry_run(scenario)
    broken = copy.deepcopy(calls)
    broken[-1][1]["spec"]["containers"] = [capture_container("x", KubeBackend().images)]  # not a patchable field
    with pytest.raises(AssertionError, match="spec"):
        check_plan(broken, scenario)
    unlabelled = copy.deepcopy(calls)
    del unlabelled[2][1]["metadata"]["labels"][RUN_LABEL]
    with pytest.raises(KeyError):
        check_plan(unlabelled, scenario)
    scenario_names = copy.deepcopy(calls)
    scenario_names[-2][1]["spec"]["host"] = "httpbin.httpbin.svc.cluster.local"  # not rewritten
    with pytest.raises(AssertionError, match="httpbin"):
        check_plan(scenario_names, scenario)
    with pytest.raises(SchemaError, match="allowed: Pod/ephemeralcontainers"):
        errors(calls[-1][1], subresource="status")


def test_without_capture_there_is_no_ephemeral_container():
    scenario = scenario_from_dict(copy.deepcopy(CELLS[0][1]), "cell")
    assert not [r for r, _ in KubeBackend().dry_run(scenario, capture=False) if r.startswith("patch")]


# The new dimensions' combinations (issue 14): each app on port names Istio reads as HTTP, TCP, TLS, HTTPS or
# leaves to protocol detection, behind a ClusterIP or headless Service, with and without sidecars.
PORT_NAMES = ("http", "tcp", "tls", "https-app", "db")
NEW_SHAPES = [{"app": app, "port_name": name, "headless": headless, "client": client, "server": server}
              for app in APPS for name in PORT_NAMES for headless in (False, True)
              for client, server in ((True, True), (False, True), (True, False))
              if (client, server) == (True, True) or (name, headless) == ("tcp", False)]


def new_shape(app="httpbin", port_name="http", headless=False, client=True, server=True, to="service"):
    return scenario_from_dict({"client": {"namespace": "sleep", "sidecar": client},
                               "server": {"namespace": "httpbin", "sidecar": server, "app": app,
                                          "port_name": port_name, "headless": headless,
                                          "service_port": 8000, "target_port": 9080},
                               "request": {"to": to}, "resources": [copy.deepcopy(PA_STRICT)]}, "cell")


def by_kind(calls, kind: str, name: str) -> dict:
    [doc] = [d for _, d in calls if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("shape", NEW_SHAPES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_every_app_port_name_and_service_kind_plans_valid_objects(shape):
    scenario = new_shape(**shape)
    calls = KubeBackend().dry_run(scenario)
    check_plan(calls, scenario)
    service = by_kind(calls, "Service", "httpbin")
    assert service["spec"]["ports"] == [{"name": shape["port_name"], "port": 8000, "targetPort": 9080}]
    assert service["spec"].get("clusterIP") == ("None" if shape["headless"] else None)
    pod = by_kind(calls, "Deployment", "httpbin")["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == "httpbin"  # policies with selectors still select it
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [app] = pod["spec"]["containers"]
    assert app["ports"] == [{"containerPort": 9080}]
    images = KubeBackend().images
    assert app["image"] == {"httpbin": images.httpbin, "https": images.httpbin, "tcp-echo": images.tcp_echo,
                            "banner": images.python}[shape["app"]]
    sleep = by_kind(calls, "Deployment", "sleep")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in sleep] == ["sleep"] + ["tcp-probe"] * (shape["app"] in ("tcp-echo", "banner"))
    peer_log = [d for _, d in calls if d["metadata"].get("name") == "meshproof-peer-identity-log"]
    assert len(peer_log) == (shape["server"] and (shape["app"], shape["port_name"]) != ("httpbin", "http"))


def test_each_app_runs_what_it_says():
    images = KubeBackend().images
    https = by_kind(KubeBackend().dry_run(new_shape("https", "https")), "Deployment", "httpbin")["spec"]["template"]
    [cert] = https["spec"]["initContainers"]
    assert cert["image"] == images.capture and "openssl req -x509" in cert["command"][-1]
    [app] = https["spec"]["containers"]
    env = {e["name"]: e["value"] for e in app["env"]}
    assert env == {"PORT": "9080", "HTTPS_CERT_FILE": "/tls/cert.pem", "HTTPS_KEY_FILE": "/tls/key.pem"}
    assert app["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    echo = by_kind(KubeBackend().dry_run(new_shape("tcp-echo", "tcp")), "Deployment", "httpbin")
    assert echo["spec"]["template"]["spec"]["containers"][0]["args"] == ["9080", apps.ECHO_PREFIX]
    calls = KubeBackend().dry_run(new_shape("banner", "tcp"))
    [banner] = by_kind(calls, "Deployment", "httpbin")["spec"]["template"]["spec"]["containers"]
    assert banner["command"] + banner["args"] == ["python3", "-u", "-c", kubelet_literal(apps.BANNER_PROGRAM.read_text()),
                                                  "banner", "9080"]
    probe = by_kind(calls, "Deployment", "sleep")["spec"]["template"]["spec"]["containers"][1]
    assert probe["image"] == images.python
    assert probe["env"][0]["value"] == kubelet_literal(apps.TCP_PROBE_PROGRAM.read_text())
    assert kubelet_literal("a $(HOME) $$ b") == "a $$(HOME) $$$$ b"  # the kubelet gives back the text as written


@pytest.mark.parametrize("to,headless,expected", [("service", False, ("httpbin.httpbin-r1.svc.cluster.local", 8000)),
                                                  ("service", True, ("httpbin.httpbin-r1.svc.cluster.local", 8000)),
                                                  ("cluster-ip", False, ("10.96.0.42", 8000)),
                                                  ("pod-ip", False, ("10.244.1.7", 9080)),
                                                  ("pod-ip", True, ("10.244.1.7", 9080))])
def test_the_probe_goes_to_the_service_or_the_pod_and_the_capture_watches_the_port_it_arrives_on(
        to, headless, expected):
    for app in APPS:
        scenario = new_shape(app, "tcp", headless=headless, to=to)
        handle = KubeHandle(scenario, "r1", {"sleep": "sleep-r1", "httpbin": "httpbin-r1"}, ("sleep-r1", "s"),
                            ("httpbin-r1", "h", "10.244.1.7"), cluster_ip="" if headless else "10.96.0.42")
        assert handle.destination == expected
        assert handle.url.startswith("https://" if app == "https" else "http://")
        # a headless name resolves to the pod: the client connects to the pod's IP on the Service port
        assert apps.wire_port(scenario) == (8000 if headless and to == "service" else 9080)


def test_what_the_kube_backend_does_not_handle_is_refused_not_planned_as_the_default(monkeypatch):
    for beyond, handles in (({"app": "banner"}, {"server.app": ("httpbin", "https", "tcp-echo")}),
                            ({"headless": True}, {"server.headless": (False,)}),
                            ({"to": "pod-ip"}, {"request.to": ("service",)})):
        monkeypatch.setattr(apps, "HANDLES", {**apps.HANDLES, **handles})
        [field] = handles
        with pytest.raises(NotSupportedYet, match=f"{field}: .* the kube backend does not handle it yet"):
            KubeBackend().dry_run(new_shape(**beyond))
        with pytest.raises(NotSupportedYet, match=f"{field}: .* the kube backend does not handle it yet"):
            KubeBackend().deploy(new_shape(**beyond))  # refused before it needs a cluster
    assert set(APPS) <= set(apps.APPS)  # every app a scenario may name is deployed as itself


def meshproof(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "no-such-kubeconfig")}
    return subprocess.run([sys.executable, "-m", "meshproof.cli", *args], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=60)


def test_the_command_needs_no_cluster_and_prints_the_plan(tmp_path):
    done = meshproof("probe", "examples/strict-namespace.yaml", "--mesh", "kube", "--dry-run", home=tmp_path)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert [d["kind"] for d in docs] == ["Namespace"] * 2 + ["ServiceAccount"] * 2 + ["Deployment"] * 2 \
        + ["Service"] * 2 + ["EnvoyFilter"] * 2 + ["PeerAuthentication", "Pod"]
    assert docs[-2]["metadata"]["namespace"].startswith("httpbin-")
    refused = meshproof("probe", "examples/root-selector-ignored.yaml", "--mesh", "kube", "--dry-run", home=tmp_path)
    assert refused.returncode == 2 and "--allow-mesh-wide" in refused.stderr, refused.stderr
    local = meshproof("probe", "examples/strict-namespace.yaml", "--dry-run", home=tmp_path)
    assert local.returncode == 2 and "use it with --mesh kube" in local.stderr


def test_a_new_shape_plans_from_the_command_and_bad_input_names_file_field_and_allowed_values(tmp_path):
    scenario = {"client": {"namespace": "sleep"}, "request": {"to": "pod-ip"}, "resources": [PA_STRICT],
                "server": {"namespace": "httpbin", "app": "banner", "port_name": "tcp", "headless": True}}
    good = tmp_path / "banner.yaml"
    good.write_text(yaml.safe_dump(scenario))
    done = meshproof("probe", str(good), "--mesh", "kube", "--dry-run", home=tmp_path)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "httpbin"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["ports"][0]["name"] == "tcp"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**scenario, "server": {**scenario["server"], "app": "smtp"}}))
    refused = meshproof("probe", str(bad), "--mesh", "kube", "--dry-run", home=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""  # nothing planned
    assert str(bad) in refused.stderr and "server.app" in refused.stderr, refused.stderr
    assert "'smtp': allowed: httpbin, tcp-echo, banner, https" in refused.stderr, refused.stderr
