"""conformance-report.yaml: built from a run's cells and Allure results, valid against the schema in the repo,
refused with the field named when it is not, and comparable with `meshproof diff` like a result folder."""

import datetime as dt
import json

import pytest
import yaml

from reports import diff
from reports.cells import CellsError, read_cells, record_cell
from reports.conformance_report import build_report, read_report, suite_counts, validate, write_report

MTLS = {"outcome": "mtls", "wire": "mtls", "peer_identity": "spiffe://cluster.local/ns/sleep/sa/sleep"}
LEAK = {"outcome": "plaintext", "wire": "plaintext", "peer_identity": None, "http_status": 200}
STRICT = "client-sidecar/server-sidecar/pa-strict/dr-none"
SCOPE = "scope/pa-mesh-strict"
NOW = dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.UTC)


def _result(path, name, epic, status, stop, history="h"):
    path.write_text(json.dumps({"uuid": name, "historyId": history, "name": name, "status": status, "stop": stop,
                                "labels": [{"name": "epic", "value": epic}]}))


@pytest.fixture
def run(tmp_path):
    """Cells of a run (one as expected, one leak) and its Allure results (with a retry and a skip)."""
    cells = tmp_path / "cells"
    record_cell(cell=STRICT, tags=STRICT.split("/"), passed=True, expected=MTLS, observed={**MTLS, "http_status": 200},
                rule="istio-mutual-accepted", mesh="local", istio_version="1.30", directory=cells)
    record_cell(cell=SCOPE, tags=["scope", "pa"], passed=False, expected=MTLS, observed=LEAK, rule="r",
                category="PLAINTEXT LEAK:", mesh="local", istio_version="1.30", directory=cells)
    results = tmp_path / "allure-results"
    results.mkdir()
    _result(results / "a-result.json", "a", "Matrix", "failed", 1, history="m")
    _result(results / "b-result.json", "b", "Matrix", "passed", 2, history="m")  # the retry of a: it passed
    _result(results / "c-result.json", "c", "Scope", "failed", 3, history="s")
    _result(results / "d-result.json", "d", "Chaos", "skipped", 4, history="c")
    facts = {"mesh": "local", "oracle_istio_version": "1.30", "meshproof": "0.1.0", "envoy": "1.40.0"}
    return read_cells(cells), facts, results, cells


def test_report_counts_suites_and_cells_and_validates(run, tmp_path):
    records, facts, results, _ = run
    report = build_report(records, facts, results, now=NOW)
    assert report["suites"] == {"Chaos": {"passed": 0, "failed": 0, "skipped": 1},
                                "Matrix": {"passed": 1, "failed": 0, "skipped": 0},
                                "Scope": {"passed": 0, "failed": 1, "skipped": 0}}
    assert report["mesh"] == {"target": "local", "istioVersion": "1.30", "envoy": "1.40.0"}
    assert report["summary"] == {"cells": 2, "passed": 1, "failed": 1, "encrypted": 1, "mtls": 1, "otherTls": 0,
                                 "cleartext": 1, "refused": 0, "mismatched": 1}
    leak = next(c for c in report["cells"] if c["id"] == SCOPE)
    assert leak["suite"] == "Scope" and leak["category"] == "PLAINTEXT LEAK:"
    assert (leak["expected"]["class"], leak["observed"]["class"]) == ("mtls", "cleartext")
    path = write_report(report, tmp_path / "conformance-report.yaml")
    assert yaml.safe_load(path.read_text()) == report == read_report(path)
    assert report["date"] == "2026-11-30T06:00:00+00:00"


def test_suite_counts_keep_the_last_try_of_a_retried_test(run):
    _, _, results, _ = run
    assert suite_counts(results)["Matrix"] == {"passed": 1, "failed": 0, "skipped": 0}


@pytest.mark.parametrize("path,value,field", [
    (("cells", 0, "expected", "class"), "green", "cells/0/expected/class"),
    (("summary", "cleartext"), -1, "summary/cleartext"),
    (("kind",), "Report", "kind"),
])
def test_a_report_off_the_schema_is_refused_with_the_field_named(run, path, value, field):
    records, facts, results, _ = run
    report = build_report(records, facts, results, now=NOW)
    target = report
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(CellsError, match=f"field {field}:"):
        validate(report)


def test_diff_compares_two_reports_and_a_report_with_a_result_folder(run, tmp_path, capsys):
    records, facts, results, cells = run
    old = write_report(build_report(records, facts, results, now=NOW), tmp_path / "old.yaml")
    fixed = [r if r.cell != SCOPE else type(r)(**{**r.to_json(), "passed": True, "observed": {**MTLS, "http_status": 200},
                                                  "category": ""}) for r in records]
    new = write_report(build_report(fixed, facts, results, now=NOW), tmp_path / "new.yaml")
    assert diff.main([str(old), str(new)]) == diff.EXIT_DIFFERENT
    out = capsys.readouterr().out
    assert SCOPE in out and "observed outcome plaintext -> mtls" in out and STRICT not in out.split("what changed")[1]
    assert diff.main([str(old), str(cells)]) == diff.EXIT_SAME  # the same run, as a report and as records
    (tmp_path / "bad.yaml").write_text("kind: ConformanceReport\n")
    assert diff.main([str(tmp_path / "bad.yaml"), str(old)]) == diff.EXIT_USAGE
    assert "bad.yaml: field (top): 'apiVersion' is a required property" in capsys.readouterr().err


def test_ports_and_destinations_cells_enter_the_report_under_their_suite(tmp_path):
    banner = ("ports", "banner", "web", "sidecars-both", "pa-permissive", "dr-none")
    timeout = {"outcome": "timeout", "wire": "none", "peer_identity": None}
    record_cell(cell="/".join(banner), tags=list(banner), passed=True, expected=timeout, observed=timeout,
                rule="outbound-sniffing-waits-timeout", mesh="local", istio_version="1.30", directory=tmp_path)
    pod_ip = ("destinations", "pod-ip", "sidecars-both", "pa-permissive")
    record_cell(cell="/".join(pod_ip), tags=list(pod_ip), passed=True, expected=LEAK, observed=LEAK,
                rule="plaintext-accepted", mesh="local", istio_version="1.30", directory=tmp_path)
    report = build_report(read_cells(tmp_path), {"mesh": "local"}, None, now=NOW)
    validate(report)
    entries = {c["id"]: c for c in report["cells"]}
    assert entries["/".join(banner)]["suite"] == "Ports" and entries["/".join(pod_ip)]["suite"] == "Destinations"
    assert entries["/".join(banner)]["observed"]["class"] == "refused"
    assert entries["/".join(pod_ip)]["observed"]["class"] == "cleartext"
