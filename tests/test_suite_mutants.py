"""The conformance suites run against deliberately broken reference meshes go red in exactly the cells the
break affects, each under the category that names it (a plaintext leak, a weak handshake, an unexpected outcome).

Which cells must go red is derived from the oracle, not listed by hand. The breaks of issue 13 (STRICT without
a client certificate, PERMISSIVE accepting any TLS, sidecars capped at TLS 1.2) passed every cell before the
scope suite gained cells where only the server can refuse and the oracle predicted Istio's TLS facts."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from meshproof.scenario import scenario_from_dict
from reports.categories import PLAINTEXT_LEAK, UNEXPECTED_OUTCOME, WEAK_TLS
from suites.adversary import adversary_cells
from suites.expectations import expect, expect_handshake
from suites.matrix import matrix_scenarios, pa, scope_scenarios

pytestmark = [pytest.mark.root, pytest.mark.mesh, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]
ROOT = Path(__file__).resolve().parent.parent


def run_matrix_with(mutant: str, tmp_path: Path, suites: tuple[str, ...] = ("suites/test_matrix.py",),
                    only: str | None = None) -> dict[str, str]:
    """Run the suites with a mutant plugin (`only`: the cells pytest -k selects); returns {cell id: failure
    message} of the red cells."""
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "MESHPROOF_CELLS_DIR": str(tmp_path / "cells")}
    proc = subprocess.run([sys.executable, "-m", "pytest", *suites, *(["-k", only] if only else []),
                           "-p", f"tests.mutants.{mutant}",
                           "-n", "2", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert junit.exists(), f"the suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    red, ran = {}, 0
    for case in ET.parse(junit).iter("testcase"):
        ran += 1
        failure = case.find("failure")
        if failure is not None:
            cell = case.get("name").partition("[")[2].removesuffix("]")
            red[cell] = failure.get("message", "")
    assert ran, f"no cell ran:\n{proc.stdout[-3000:]}"
    return red


MATRIX_AND_SCOPE = ("suites/test_matrix.py", "suites/test_scope.py")


def predictions(cells=None):
    return {cell: expect(scenario_from_dict(scn, cell)) for cell, scn in (cells or matrix_scenarios())}


def all_cells():
    return matrix_scenarios() + scope_scenarios()


def test_strict_compiled_as_permissive_turns_exactly_the_strict_only_cells_red(tmp_path):
    expected_red = set()
    for cell, scn in matrix_scenarios():
        permissive = [_strict_to_permissive(m) for m in scn.get("resources", [])]
        as_permissive = expect(scenario_from_dict({**scn, "resources": permissive}, cell))
        predicted = expect(scenario_from_dict(scn, cell))
        # A 503 for another reason is red too (which 503: the client sidecar's report).
        if (predicted.outcome, predicted.envoy) != (as_permissive.outcome, as_permissive.envoy):
            expected_red.add(cell)
    assert expected_red, "the mutant changes no prediction: this test could not go red"
    assert set(run_matrix_with("strict_as_permissive", tmp_path)) == expected_red


def test_a_sidecar_forwarding_cleartext_is_caught_in_every_istio_mutual_cell(tmp_path):
    predicted = predictions()
    expected_red = {cell for cell, p in predicted.items() if p.client_tls == "istio-mutual"}
    red = run_matrix_with("cleartext_sidecar", tmp_path)
    assert set(red) == expected_red
    accepted_in_clear = [cell for cell in red if predicted[cell].wire == "mtls" and predicted[cell].outcome == "mtls"]
    assert accepted_in_clear
    for cell in accepted_in_clear:
        assert PLAINTEXT_LEAK in red[cell], f"{cell} is not reported as a leak: {red[cell]}"


def _strict_to_permissive(manifest: dict) -> dict:
    if manifest.get("kind") != "PeerAuthentication":
        return manifest
    spec = manifest.get("spec") or {}
    mtls = spec.get("mtls") or {}
    if mtls.get("mode") != "STRICT":
        return manifest
    return {**manifest, "spec": {**spec, "mtls": {**mtls, "mode": "PERMISSIVE"}}}


def test_strict_without_a_client_certificate_requirement_is_caught_where_only_the_server_refuses(tmp_path):
    # The rule that STRICT's client certificate requirement decides; the client accepts the server's certificate.
    expected_red = {cell for cell, p in predictions(all_cells()).items() if p.rule == "simple-to-strict-503"}
    assert any(cell.startswith("scope/") for cell in expected_red), "no cell lets only the server refuse"
    red = run_matrix_with("strict_without_client_cert", tmp_path, MATRIX_AND_SCOPE)
    assert set(red) == expected_red
    assert all(UNEXPECTED_OUTCOME in message for message in red.values()), red


def test_permissive_accepting_any_tls_is_caught_in_every_app_tls_cell(tmp_path):
    # Such a PERMISSIVE server treats TLS without Istio's ALPN as STRICT would. Where STRICT accepts the client
    # the outcome differs; where it refuses, a 503 still comes, but from a certificate check instead of a reset
    # at filter chain match: a check that any 503 satisfies left those cells green.
    outcome_differs, reason_differs = set(), set()
    for cell, scn in all_cells():
        if expect(scenario_from_dict(scn, cell)).rule != "app-tls-to-permissive-503":
            continue
        as_strict = [m for m in scn["resources"] if m["kind"] != "PeerAuthentication"] + [pa("STRICT")]
        accepted = expect(scenario_from_dict({**scn, "resources": as_strict}, cell)).outcome != "503"
        (outcome_differs if accepted else reason_differs).add(cell)
    assert outcome_differs and reason_differs, "the mutant changes no prediction: this test could not go red"
    red = run_matrix_with("permissive_any_tls", tmp_path, MATRIX_AND_SCOPE)
    assert set(red) == outcome_differs | reason_differs
    assert all(UNEXPECTED_OUTCOME in message for message in red.values()), red
    for cell in reason_differs:
        assert "503 for another reason" in red[cell] and "Connection reset by peer" in red[cell], red[cell]


def test_sidecars_capped_at_tls12_are_weak_tls_in_every_cell_with_a_sidecar_handshake(tmp_path):
    predicted = predictions(all_cells())
    weak = {cell for cell, p in predicted.items() if p.tls}
    # A missing client certificate ends a TLS 1.3 connection after the handshake (UC); at TLS 1.2 the handshake
    # itself fails (URX,UF): the same 503 for another reason.
    after_handshake = {cell for cell, p in predicted.items() if p.rule == "simple-to-strict-503"}
    assert weak and after_handshake, "the oracle predicts no TLS facts: this test could not go red"
    red = run_matrix_with("tls12_max", tmp_path, MATRIX_AND_SCOPE)
    assert set(red) == weak | after_handshake
    for cell in weak:
        assert WEAK_TLS in red[cell] and "negotiated TLSv1.2" in red[cell], (cell, red[cell])
    for cell in after_handshake:
        assert "503 for another reason" in red[cell] and "reported URX,UF" in red[cell], (cell, red[cell])
    # A full TLS 1.2 handshake shows the certificates; one resumed from a session ticket shows none.
    assert any("certificates readable" in red[cell] for cell in weak)


def test_a_server_accepting_any_trust_domain_is_caught_by_the_adversary_with_a_foreign_mesh_certificate(tmp_path):
    # The matrix and scope cells' clients all hold identities of the mesh's own trust domain: only an adversary
    # presenting a mesh-CA certificate of another trust domain can tell.
    expected_red = {cell for cell, scn, attempt in adversary_cells()
                    if expect_handshake(scenario_from_dict(scn, cell), attempt).rule == "foreign-trust-domain"}
    assert expected_red, "no adversary cell presents a foreign trust domain: this test could not go red"
    red = run_matrix_with("any_trust_domain", tmp_path, ("suites/test_adversary.py",))
    assert set(red) == expected_red
    assert all(UNEXPECTED_OUTCOME in message and "observed accepted" in message for message in red.values()), red


def test_outbound_routes_without_istios_default_retries_are_caught_by_the_connections_each_503_opened(tmp_path):
    # Without retries Envoy still reports URX,UF (retries exhausted): only the capture's count of connections
    # (1 + Istio's 2 retries) tells. A connection the server closed once open (UC) was never retried.
    predicted = predictions(all_cells())
    expected_red = {cell for cell, p in predicted.items() if p.envoy and p.envoy["attempts"] > 1}
    assert expected_red, "no 503 rule names retries: this test could not go red"
    red = run_matrix_with("no_retries", tmp_path, MATRIX_AND_SCOPE)
    assert set(red) == expected_red
    for message in red.values():
        assert "503 for another reason" in message and "reported URX,UF" not in message, message
        assert "open 3 connection(s) to the server, the capture shows 1" in message, message


def test_strict_compiled_as_permissive_turns_exactly_the_ports_and_destinations_cells_red_that_strict_decides(
        tmp_path):
    # TCP, server-first and app-TLS ports, headless Services and pod IPs: STRICT's own chains must decide there too.
    from suites.cells import as_scenarios
    from suites.destinations import destinations_cells
    from suites.ports import ports_cells

    expected_red = set()
    for cell, scn in as_scenarios(ports_cells() + destinations_cells()):
        permissive = [_strict_to_permissive(m) for m in scn.get("resources", [])]
        as_permissive = expect(scenario_from_dict({**scn, "resources": permissive}, cell))
        predicted = expect(scenario_from_dict(scn, cell))
        if ((predicted.outcome, predicted.wire, predicted.peer_identity, predicted.envoy)
                != (as_permissive.outcome, as_permissive.wire, as_permissive.peer_identity, as_permissive.envoy)):
            expected_red.add(cell)
    assert any(c.startswith("ports/") for c in expected_red) and any(c.startswith("destinations/")
                                                                      for c in expected_red)
    red = run_matrix_with("strict_as_permissive", tmp_path, ("suites/test_ports.py", "suites/test_destinations.py"))
    assert set(red) == expected_red
    assert all(UNEXPECTED_OUTCOME in message or PLAINTEXT_LEAK in message for message in red.values()), red


def test_a_route_without_the_service_vip_is_caught_by_the_cluster_ip_cells(tmp_path):
    # A Host of VIP:port then meets no virtual host but allow_any: PassthroughCluster in cleartext, what the oracle
    # predicts for a Host no virtual host names (a pod IP's, on the same port in these cells). Only the client
    # sidecar's HTTP route reads the Host: the TCP cell and the cells without a client sidecar stay green.
    from suites.cells import as_scenarios
    from suites.destinations import destinations_cells

    cells = [(cell, scn) for cell, scn in as_scenarios(destinations_cells()) if cell.startswith("destinations/cluster-ip/")]
    expected_red = set()
    for cell, scn in cells:
        predicted = expect(scenario_from_dict(scn, cell))
        unnamed = expect(scenario_from_dict({**scn, "request": {"to": "pod-ip"}}, cell))
        http_route = scn["client"]["sidecar"] and scn["server"].get("app", "httpbin") == "httpbin"
        if http_route and (predicted.outcome, predicted.wire) != (unnamed.outcome, unnamed.wire):
            expected_red.add(cell)
    assert {c.split("/")[3] for c in expected_red} == {"pa-strict", "pa-permissive"}, expected_red
    red = run_matrix_with("vip_not_in_domains", tmp_path, ("suites/test_destinations.py",), only="cluster-ip")
    assert set(red) == expected_red
    assert all(UNEXPECTED_OUTCOME in message or PLAINTEXT_LEAK in message for message in red.values()), red


def test_a_control_plane_that_ignores_app_protocol_is_caught_by_the_app_protocol_cells(tmp_path):
    # Red exactly where the port's name alone means another outcome or wire than its appProtocol; the cell where
    # both hang (a client without a sidecar behind PERMISSIVE's TLS detection) stays green.
    from suites.cells import as_scenarios
    from suites.ports import with_app_protocol

    expected_red = set()
    for cell, scn in as_scenarios(with_app_protocol()):
        by_name = {**scn, "server": {k: v for k, v in scn["server"].items() if k != "app_protocol"}}
        predicted, named = expect(scenario_from_dict(scn, cell)), expect(scenario_from_dict(by_name, cell))
        if (predicted.outcome, predicted.wire) != (named.outcome, named.wire):
            expected_red.add(cell)
    assert 0 < len(expected_red) < len(with_app_protocol()), expected_red
    red = run_matrix_with("app_protocol_ignored", tmp_path, ("suites/test_ports.py",), only="web+ or http+")
    assert set(red) == expected_red
    assert all(UNEXPECTED_OUTCOME in message or PLAINTEXT_LEAK in message for message in red.values()), red
