"""Validation: a manifest Istio refuses is refused here with an error naming the field, and changes nothing:
the policy in force before (STRICT, so an mTLS 200) is still in force after."""

import allure
import pytest

from meshproof.istio_api import ManifestError
from meshproof.scenario import scenario_from_dict
from suites.invalid import INVALID_MANIFESTS

STRICT = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "default", "namespace": "httpbin"}, "spec": {"mtls": {"mode": "STRICT"}}}
PLAINTEXT_DR = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": "plain", "namespace": "sleep"},
                "spec": {"host": "httpbin.httpbin.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}}


@pytest.fixture
def strict_pair(mesh):
    handle = mesh.deploy(scenario_from_dict({"resources": [STRICT]}, "validation baseline"))
    yield handle
    mesh.teardown(handle)


@allure.epic("Validation")
@allure.feature("refused manifests")
@allure.title("{case_id}: refused, naming {field}, and the mesh unchanged")
@pytest.mark.parametrize("case_id,manifest,field", INVALID_MANIFESTS, ids=[c[0] for c in INVALID_MANIFESTS])
def test_invalid_manifest_is_refused_and_changes_nothing(mesh, strict_pair, case_id, manifest, field):
    before = mesh.probe(strict_pair, capture=False)
    assert before.outcome == "mtls", f"baseline STRICT pair is not serving mTLS: {before}"
    # A valid object ahead of the bad one must not be applied either: all or nothing.
    with pytest.raises(ManifestError) as refused:
        mesh.apply(strict_pair, [PLAINTEXT_DR, manifest])
    assert field in str(refused.value), f"error does not name {field}: {refused.value}"
    if hasattr(mesh, "cluster_refusal"):  # a real cluster: Istio itself must refuse it too (server-side dry run)
        said = mesh.cluster_refusal(strict_pair, manifest)
        assert said, f"meshproof refuses {case_id} but the cluster accepted it"
        allure.attach(said, "cluster refusal", allure.attachment_type.TEXT)
    after = mesh.probe(strict_pair, capture=False)
    assert after.outcome == "mtls", f"a refused apply changed the mesh: {after}"
