"""reports/out/conformance-report.yaml: one run against one mesh, small enough to commit and diff, in the spirit
of Gateway API's conformance reports. It records meshproof's version, the mesh (local reference mesh or kube,
with the Istio version and revisions found), the date, pass / fail / skip counts per suite (from the Allure
results) and every cell's expected and observed outcome, wire verdict and wire class. The format is
reports/conformance_report.schema.json; `write_report` validates against it before writing.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
import yaml

from reports.allure_cell import hierarchy
from reports.allure_env import meshproof_version
from reports.cells import CellRecord, CellsError
from reports.wire_classes import classify, counts

SCHEMA_PATH = Path(__file__).resolve().parent / "conformance_report.schema.json"
REPORT_NAME = "conformance-report.yaml"
# environment facts (reports.allure_env, the backends' environment()) -> the report's mesh fields
_MESH_FACTS = {"istio_control_planes": "istioControlPlanes", "istio_revisions": "istioRevisions",
               "kubernetes_version": "kubernetesVersion", "implementation": "implementation", "envoy": "envoy"}
_STATUS = {"passed": "passed", "failed": "failed", "broken": "failed", "skipped": "skipped"}


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def suite_counts(results_dir: Path) -> dict[str, dict[str, int]]:
    """passed / failed / skipped per Allure epic; a test retried keeps its last result."""
    latest: dict[str, dict] = {}
    for path in sorted(Path(results_dir).glob("*-result.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        key = result.get("historyId") or result.get("uuid") or path.name
        if key not in latest or result.get("stop", 0) >= latest[key].get("stop", 0):
            latest[key] = result
    suites: dict[str, dict[str, int]] = {}
    for result in latest.values():
        labels = {label["name"]: label["value"] for label in result.get("labels", [])}
        suite = labels.get("epic") or labels.get("suite") or "other"
        entry = suites.setdefault(suite, {"passed": 0, "failed": 0, "skipped": 0})
        entry[_STATUS.get(result.get("status"), "failed")] += 1
    return dict(sorted(suites.items()))


def _side(values: dict, with_status: bool) -> dict:
    side = {"outcome": values.get("outcome"), "wire": values.get("wire"),
            "class": classify(values.get("outcome"), values.get("wire")).key,
            "peerIdentity": values.get("peer_identity")}
    if with_status:
        side["httpStatus"] = values.get("http_status")
    return side


def cell_entry(record: CellRecord) -> dict:
    entry = {"id": record.cell, "suite": hierarchy(record.cell, tuple(record.tags), "")[0], "passed": record.passed,
             "rule": record.rule, "expected": _side(record.expected, False), "observed": _side(record.observed, True)}
    if record.category:
        entry["category"] = record.category
    return entry


def build_report(records: list[CellRecord], facts: dict[str, str], results_dir: Path | None,
                 now: dt.datetime | None = None) -> dict:
    c = counts(records)
    mesh = {"target": facts.get("mesh") or ", ".join(sorted({r.mesh for r in records if r.mesh})) or "unknown",
            "istioVersion": facts.get("oracle_istio_version")
            or ", ".join(sorted({r.istio_version for r in records if r.istio_version})) or "unknown"}
    mesh.update({field: facts[key] for key, field in _MESH_FACTS.items() if facts.get(key)})
    return {
        "apiVersion": "meshproof/v1", "kind": "ConformanceReport",
        "meshproofVersion": facts.get("meshproof") or meshproof_version(),
        "date": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "mesh": mesh,
        "summary": {"cells": c["cells"], "passed": sum(r.passed for r in records),
                    "failed": sum(not r.passed for r in records), "encrypted": c["encrypted"], "mtls": c["mtls"],
                    "otherTls": c["other_tls"], "cleartext": c["cleartext"], "refused": c["refused"],
                    "mismatched": c["mismatched"]},
        "suites": suite_counts(results_dir) if results_dir is not None else {},
        "cells": [cell_entry(r) for r in records],
    }


def validate(report: dict, where: str = REPORT_NAME) -> None:
    """Raise CellsError naming the field when report does not match the schema."""
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(report), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        field = "/".join(map(str, first.absolute_path)) or "(top)"
        raise CellsError(f"{where}: field {field}: {first.message} (schema {SCHEMA_PATH.name})")


def write_report(report: dict, path: Path) -> Path:
    validate(report, str(path))
    path.write_text(yaml.safe_dump(report, sort_keys=False, allow_unicode=True, width=120, default_flow_style=None),
                    encoding="utf-8")
    return path


def read_report(path: str | Path) -> dict:
    """A conformance report file, validated; CellsError names the file and field when it is not one."""
    path = Path(path)
    try:
        report = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise CellsError(f"{path}: not a readable YAML conformance report: {err}") from err
    if not isinstance(report, dict):
        raise CellsError(f"{path}: a conformance report is a YAML mapping, got {type(report).__name__}")
    validate(report, str(path))
    return report


def records_of(report: dict) -> list[CellRecord]:
    """The report's cells as cell records, so `meshproof diff` compares reports and result folders alike."""
    def side(values: dict) -> dict:
        return {"outcome": values.get("outcome"), "wire": values.get("wire"),
                "peer_identity": values.get("peerIdentity"), "http_status": values.get("httpStatus")}

    return [CellRecord(cell=c["id"], passed=c["passed"], expected=side(c["expected"]), observed=side(c["observed"]),
                       rule=c["rule"], category=c.get("category", ""), mesh=report["mesh"]["target"],
                       istio_version=report["mesh"]["istioVersion"]) for c in report["cells"]]
