"""Run one conformance cell: predict, deploy and apply, probe (with capture), compare, report.

Every cell is one declarative record (suites/cells.py `Cell`: id, why, scenario fields, manifests); this
runner is the only code that executes them, so every cell gets the same steps, attachments and failure line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import allure
import pytest
import yaml

from meshproof.scenario import NotSupportedYet, scenario_from_dict
from reports import allure_cell
from reports.categories import NOT_SUPPORTED_YET
from suites.cells import Cell
from suites.expectations import expect
from suites.interpret import compare


def run_cell(mesh, options, cell: Cell, deployment=None) -> None:
    """`cell.why` (the question the cell asks) reaches the report as the scenario's `why`. With `deployment`
    (suites/codeployed.py) holding the cell, its probe is the co-deployment's. A cell that the oracle or the
    mesh does not handle yet fails as NOT SUPPORTED YET before anything is deployed (or as the backend refuses)."""
    with refused_loudly():
        _run_cell(mesh, options, cell, deployment)


@contextmanager
def refused_loudly() -> Iterator[None]:
    """NotSupportedYet becomes a failure with its own category: a valid cell nobody handles yet is neither a pass
    nor a skip."""
    try:
        yield
    except NotSupportedYet as err:
        pytest.fail(f"{NOT_SUPPORTED_YET} {err}", pytrace=False)


def _run_cell(mesh, options, cell: Cell, deployment) -> None:
    cell_id, tags = cell.id, cell.tags
    scenario = scenario_from_dict(cell.scenario(), source=f"cell {cell_id}")
    version = options.istio_version or mesh.istio_minor()
    if version:
        scenario = replace(scenario, istio_version=version)
    allure_cell.describe(cell_id, scenario, tags, mesh.name)
    if deployment is not None and deployment.holds(cell_id):
        return _run_codeployed(deployment, options, cell_id, scenario, tags)
    expect(scenario)  # the oracle refuses what it cannot predict before a pod starts

    started = time.perf_counter()
    with allure.step(f"deploy in run namespaces and apply {len(scenario.manifests)} manifest(s)"):
        handle = mesh.deploy(scenario)
    try:
        names, run_scenario, prediction = predict_for_run(mesh, handle, scenario)
        allure_cell.predicted(cell_id, scenario, tags, prediction)
        allure.attach(yaml.safe_dump_all(list(run_scenario.manifests)) or "# no manifests\n", "manifests.yaml",
                      allure.attachment_type.YAML)
        with allure.step("probe sleep -> httpbin" + (" with capture" if options.capture else "")):
            result = mesh.probe(handle, capture=options.capture)
            allure.attach(json.dumps(result.to_json(), indent=1), "probe.json", allure.attachment_type.JSON)
        with allure.step("classify the wire and compare with the oracle"):
            allure_cell.attach_wire(result.wire)
            verdict = compare(prediction, result, captured=options.capture)
        allure_cell.conclude(cell_id, prediction, result, verdict, allure_cell.question_of(scenario))
        if not verdict and hasattr(mesh, "diagnostics"):
            with allure.step("collect diagnostics"):
                allure_cell.attach_diagnostics(mesh.diagnostics(handle))
    finally:
        mesh.teardown(handle)
    duration_ms = (time.perf_counter() - started) * 1000
    allure_cell.record(cell_id, tags, scenario, prediction, result, verdict, duration_ms, mesh.name, names)
    if not verdict:
        pytest.fail(verdict.message, pytrace=False)


def _run_codeployed(deployment, options, cell_id: str, scenario, tags: tuple[str, ...]) -> None:
    mesh = deployment.mesh
    with allure.step("probe sleep -> httpbin in the co-deployment (every cell at once)"
                     + (" with capture" if options.capture else "")):
        result = deployment.result(cell_id)
        allure.attach(json.dumps(result.to_json(), indent=1), "probe.json", allure.attachment_type.JSON)
    names, deployed, prediction = deployment.predict(cell_id)
    allure_cell.predicted(cell_id, scenario, tags, prediction)
    allure.attach(yaml.safe_dump_all(deployment.own_manifests(deployed)) or "# no manifests\n", "manifests.yaml",
                  allure.attachment_type.YAML)
    with allure.step("classify the wire and compare with the oracle (predicted from every deployed object)"):
        allure_cell.attach_wire(result.wire)
        verdict = compare(prediction, result, captured=options.capture)
    allure_cell.conclude(cell_id, prediction, result, verdict, allure_cell.question_of(scenario))
    if not verdict and (folder := deployment.diagnostics(cell_id)) is not None:
        with allure.step("collect diagnostics"):
            allure_cell.attach_diagnostics(folder)
    deployment.reported_on(cell_id)
    allure_cell.record(cell_id, tags, replace(scenario, istio_version=deployed.istio_version), prediction, result,
                       verdict, result.elapsed_ms, mesh.name, names)
    if not verdict:
        pytest.fail(verdict.message, pytrace=False)


def predict_for_run(mesh, handle, scenario):
    """(mapping, scenario as deployed, prediction): the workloads run in <ns>-<run>, so the oracle predicts
    for the scenario rewritten by the run's mapping, identities and all, and the comparison happens there."""
    names = mesh.run_namespaces(handle)
    run_scenario = names.rewrite_scenario(scenario)
    return names, run_scenario, expect(run_scenario)


def co_deployed_params(cells, group: str) -> list:
    """One pytest param per cell, all in one xdist group: the cells share a deployment, so one worker runs them."""
    return cell_params(cells, pytest.mark.xdist_group(group))


def cell_params(cells, *marks) -> list:
    """One pytest param per cell, each deployed on its own (any worker): marks from its content, plus `marks`."""
    return [pytest.param(c.id, id=c.id, marks=[*cell_marks(c.scenario()), *marks]) for c in cells]


def cell_marks(scenario_dict: dict) -> list:
    """Marks from a cell's content: root-namespace objects make it mesh-wide."""
    root = scenario_dict.get("root_namespace", "istio-system")
    mesh_wide = any((m.get("metadata") or {}).get("namespace") == root for m in scenario_dict.get("resources") or [])
    return [pytest.mark.mesh_wide] if mesh_wide else []
