"""Run one conformance cell: predict, deploy and apply, probe (with capture), compare, report.

Every cell is one declarative scenario (suites/matrix.py); this runner is the only code that executes them,
so every cell gets the same steps, attachments and failure line.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import allure
import pytest
import yaml

from meshproof.scenario import scenario_from_dict
from suites.expectations import expect
from suites.interpret import compare


def run_cell(mesh, options, cell_id: str, scenario_dict: dict, tags: tuple[str, ...] = ()) -> None:
    scenario = scenario_from_dict(scenario_dict, source=f"cell {cell_id}")
    version = options.istio_version or mesh.istio_minor()
    if version:
        scenario = replace(scenario, istio_version=version)
    _describe(cell_id, scenario, tags, mesh)

    started = time.perf_counter()
    with allure.step(f"deploy in run namespaces and apply {len(scenario.manifests)} manifest(s)"):
        handle = mesh.deploy(scenario)
    try:
        names, run_scenario, prediction = predict_for_run(mesh, handle, scenario)
        allure.dynamic.description(f"{prediction.reason}\n\nRule `{prediction.rule}`: {prediction.source}")
        allure.attach(yaml.safe_dump_all(list(run_scenario.manifests)) or "# no manifests\n", "manifests.yaml",
                      allure.attachment_type.YAML)
        with allure.step("probe sleep -> httpbin" + (" with capture" if options.capture else "")):
            result = mesh.probe(handle, capture=options.capture)
            allure.attach(json.dumps(result.to_json(), indent=1), "probe.json", allure.attachment_type.JSON)
        with allure.step("classify the wire and compare with the oracle"):
            _attach_wire(result.wire)
            verdict = compare(prediction, result, captured=options.capture)
        if not verdict and hasattr(mesh, "diagnostics"):
            with allure.step("collect diagnostics"):
                _attach_diagnostics(mesh.diagnostics(handle))
    finally:
        mesh.teardown(handle)
    duration_ms = (time.perf_counter() - started) * 1000
    _record(cell_id, tags, scenario, prediction, result, verdict, duration_ms, mesh, names)
    if not verdict:
        pytest.fail(verdict.message, pytrace=False)


def predict_for_run(mesh, handle, scenario):
    """(mapping, scenario as deployed, prediction): the workloads run in <ns>-<run>, so the oracle predicts
    for the scenario rewritten by the run's mapping, identities and all, and the comparison happens there."""
    names = mesh.run_namespaces(handle)
    run_scenario = names.rewrite_scenario(scenario)
    return names, run_scenario, expect(run_scenario)


def _describe(cell_id, scenario, tags, mesh) -> None:
    allure.dynamic.title(cell_id)
    # Stable parameters: the same cell lines up across runs and versions in Allure's history (the suites
    # parametrize by cell id only, so a cell's history key is its id, the mesh and the version).
    allure.dynamic.parameter("mesh", mesh.name)
    allure.dynamic.parameter("istio_version", scenario.istio_version)
    allure.dynamic.tag(*tags)


def _attach_wire(wire: dict | None) -> None:
    if not wire:
        return
    pcap = wire.get("pcap")
    if pcap and Path(pcap).exists():
        allure.attach.file(pcap, "probe.pcap", "application/vnd.tcpdump.pcap", "pcap")
    allure.attach(json.dumps({k: v for k, v in wire.items() if k != "pcap"}, indent=1), "wire-flows.json",
                  allure.attachment_type.JSON)


def _attach_diagnostics(folder: Path) -> None:
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            allure.attach.file(str(path), path.name, allure.attachment_type.TEXT)


def _record(cell_id, tags, scenario, prediction, result, verdict, duration_ms, mesh, names) -> None:
    """Identities are recorded in the scenario's namespaces, so cells of different runs (and upgrade-check
    legs) compare; the run's own names go along in observed.run."""
    from reports.cells import record_cell

    wire = result.wire or {}
    record_cell(
        cell=cell_id, tags=list(tags), mesh=mesh.name, istio_version=scenario.istio_version,
        expected={"outcome": prediction.outcome, "wire": prediction.wire,
                  "peer_identity": names.normalise_identity(prediction.peer_identity)},
        observed={"outcome": result.outcome, "wire": wire.get("verdict"),
                  "peer_identity": names.normalise_identity(result.peer_identity),
                  "http_status": result.http_status, "failure_detail": result.failure_detail,
                  "run": {"run_id": names.run_id, "namespaces": names.run_namespaces(),
                          "peer_identity": result.peer_identity}},
        rule=prediction.rule, passed=verdict.passed, category=verdict.category, message=verdict.message,
        duration_ms=round(duration_ms, 1), pcap=wire.get("pcap"),
    )


def cell_marks(scenario_dict: dict) -> list:
    """Marks from a cell's content: root-namespace objects make it mesh-wide."""
    root = scenario_dict.get("root_namespace", "istio-system")
    mesh_wide = any((m.get("metadata") or {}).get("namespace") == root for m in scenario_dict.get("resources") or [])
    return [pytest.mark.mesh_wide] if mesh_wide else []
