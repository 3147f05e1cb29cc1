"""The table of dimensions (meshproof/scenario.py): every workload and request field is in it, each workload
field shapes the pod pair both backends share, a bad value is refused naming the field, and a valid value
nobody handles yet is refused too, never run as the default."""

from __future__ import annotations

import dataclasses

import pytest

from meshproof.istio_api import ManifestError
from meshproof.scenario import (
    DIMENSIONS,
    NotSupportedYet,
    Request,
    Server,
    Workload,
    differs_from_default,
    pod_shape,
    require_supported,
    scenario_from_dict,
)

# A valid value other than the default, per dimension.
OTHER = {"namespace": "elsewhere", "sidecar": False, "labels": {"app": "other"}, "service_account": "robot",
         "service_port": 9000, "target_port": 9090, "app": "tcp-echo", "port_name": "tcp-echo", "headless": True,
         "app_protocol": "tcp", "to": "pod-ip"}
BAD = {"namespace": "Not_A_Namespace", "sidecar": "yes", "labels": "app=httpbin", "service_account": "-robot",
       "service_port": 0, "target_port": 15006, "app": "mysql", "port_name": "HTTP_web", "headless": "no",
       "app_protocol": "/tcp", "to": "node-ip"}
SHAPING = [d for d in DIMENSIONS if d.shapes_pods]


def test_every_field_of_the_workloads_is_one_row_of_the_table():
    fields = [("client", f.name) for f in dataclasses.fields(Workload)]
    fields += [("server", f.name) for f in dataclasses.fields(Server)]
    fields += [("request", f.name) for f in dataclasses.fields(Request)]
    assert sorted(fields) == sorted((d.role, d.name) for d in DIMENSIONS)


def test_the_defaults_are_what_an_empty_scenario_reads():
    scenario = scenario_from_dict({})
    for d in DIMENSIONS:
        assert d.value(scenario) == d.default, d.path
    assert differs_from_default(scenario) == {}


@pytest.mark.parametrize("dimension", SHAPING, ids=lambda d: d.path)
def test_each_dimension_changes_the_pod_shape(dimension):
    changed = scenario_from_dict({dimension.role: {dimension.name: OTHER[dimension.name]}})
    assert pod_shape(changed) != pod_shape(scenario_from_dict({}))
    assert differs_from_default(changed) == {dimension.label: OTHER[dimension.name]}


@pytest.mark.parametrize("dimension", DIMENSIONS, ids=lambda d: d.path)
def test_a_bad_value_names_its_field(dimension):
    with pytest.raises(ManifestError) as err:
        scenario_from_dict({dimension.role: {dimension.name: BAD[dimension.name]}}, "cell.yaml")
    assert err.value.field_path == dimension.path and "cell.yaml" in str(err.value)


@pytest.mark.parametrize("to", ["pod-ip", "cluster-ip"])
def test_where_the_request_goes_does_not_change_the_pod_shape(to):
    elsewhere = scenario_from_dict({"request": {"to": to}})
    assert pod_shape(elsewhere) == pod_shape(scenario_from_dict({}))
    assert differs_from_default(elsewhere) == {"request to": to}


def test_a_headless_service_has_no_cluster_ip_to_request():
    with pytest.raises(ManifestError) as err:
        scenario_from_dict({"server": {"headless": True}, "request": {"to": "cluster-ip"}}, "cell.yaml")
    assert err.value.field_path == "request.to" and "cell.yaml" in str(err.value)
    assert "allowed for a headless Service: service, pod-ip" in str(err.value)


@pytest.mark.parametrize("data", [{"server": {"app": "https", "port_name": "http"}},
                                  {"server": {"headless": True}, "request": {"to": "service"}},
                                  {"server": {"headless": True}, "request": {"to": "pod-ip"}},
                                  {"request": {"to": "cluster-ip"}}])
def test_combinations_istio_allows_are_valid(data):
    scenario_from_dict(data, "cell.yaml")


@pytest.mark.parametrize("dimension", [d for d in DIMENSIONS if d.supported is not None], ids=lambda d: d.path)
def test_a_valid_value_nobody_handles_yet_is_refused_naming_the_field(dimension):
    require_supported(scenario_from_dict({}), "the oracle")
    beyond = scenario_from_dict({dimension.role: {dimension.name: OTHER[dimension.name]}})
    with pytest.raises(NotSupportedYet) as err:
        require_supported(beyond, "the oracle")
    assert err.value.field_path == dimension.path and "does not handle it yet" in str(err.value)


def test_the_istio_objects_do_not_change_the_pod_shape():
    strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "httpbin"}, "spec": {"mtls": {"mode": "STRICT"}}}
    assert pod_shape(scenario_from_dict({"resources": [strict]})) == pod_shape(scenario_from_dict({}))
