"""The table of dimensions (meshproof/scenario.py): every workload field is in it, each shapes the pod pair
both backends share, and a bad value is refused naming the field."""

from __future__ import annotations

import dataclasses

import pytest

from meshproof.istio_api import ManifestError
from meshproof.scenario import (
    DIMENSIONS,
    Server,
    Workload,
    differs_from_default,
    pod_shape,
    scenario_from_dict,
)

# A valid value other than the default, per dimension.
OTHER = {"namespace": "elsewhere", "sidecar": False, "labels": {"app": "other"}, "service_account": "robot",
         "service_port": 9000, "target_port": 9090}
BAD = {"namespace": "Not_A_Namespace", "sidecar": "yes", "labels": "app=httpbin", "service_account": "-robot",
       "service_port": 0, "target_port": 15006}


def test_every_field_of_the_workloads_is_one_row_of_the_table():
    fields = [("client", f.name) for f in dataclasses.fields(Workload)]
    fields += [("server", f.name) for f in dataclasses.fields(Server)]
    assert sorted(fields) == sorted((d.role, d.name) for d in DIMENSIONS)


def test_the_defaults_are_what_an_empty_scenario_reads():
    scenario = scenario_from_dict({})
    for d in DIMENSIONS:
        assert d.value(scenario) == d.default, d.path
    assert differs_from_default(scenario) == {}


@pytest.mark.parametrize("dimension", DIMENSIONS, ids=lambda d: d.path)
def test_each_dimension_changes_the_pod_shape(dimension):
    changed = scenario_from_dict({dimension.role: {dimension.name: OTHER[dimension.name]}})
    assert pod_shape(changed) != pod_shape(scenario_from_dict({}))
    assert differs_from_default(changed) == {dimension.label: OTHER[dimension.name]}


@pytest.mark.parametrize("dimension", DIMENSIONS, ids=lambda d: d.path)
def test_a_bad_value_names_its_field(dimension):
    with pytest.raises(ManifestError) as err:
        scenario_from_dict({dimension.role: {dimension.name: BAD[dimension.name]}}, "cell.yaml")
    assert err.value.field_path == dimension.path and "cell.yaml" in str(err.value)


def test_the_istio_objects_do_not_change_the_pod_shape():
    strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "httpbin"}, "spec": {"mtls": {"mode": "STRICT"}}}
    assert pod_shape(scenario_from_dict({"resources": [strict]})) == pod_shape(scenario_from_dict({}))
