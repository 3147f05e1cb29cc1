"""The matrix picture and the cell records it is drawn from: a cell is filled with what crossed the wire, and a
mismatch carries a ✗ and a heavy border."""

import json

import pytest
from matplotlib.image import imread

from reports.cells import CellsError, read_cells, record_cell
from reports.matrix import Position, build_matrix, position_of, to_html, to_markdown, write_matrix
from reports.wire_classes import CLEARTEXT, NOT_RUN, OTHER_TLS, REFUSED, classify
from reports.wire_classes import MTLS as MTLS_CLASS

MTLS = {"outcome": "mtls", "wire": "mtls", "peer_identity": "spiffe://cluster.local/ns/sleep/sa/sleep"}
STRICT_ISTIO_MUTUAL = "client-sidecar/server-sidecar/pa-strict/dr-istio-mutual"
STRICT_DISABLE = "client-sidecar/server-sidecar/pa-strict/dr-disable"


def record(directory, cell, passed=True, observed=None, **fields):
    return record_cell(cell=cell, tags=cell.split("/"), passed=passed, expected=MTLS, observed=observed or MTLS,
                       directory=directory, rule="test-rule", mesh="local", istio_version="1.30", **fields)


@pytest.fixture
def two_cells(tmp_path):
    """One cell as expected, one where the mesh answered in plaintext instead of mTLS."""
    record(tmp_path, STRICT_ISTIO_MUTUAL, duration_ms=120.0)
    record(tmp_path, STRICT_DISABLE, passed=False, observed={**MTLS, "outcome": "plaintext", "wire": "plaintext",
                                                            "wire_facts": {"canary_in_clear": True}},
           message="PLAINTEXT LEAK: canary seen in cleartext")
    return read_cells(tmp_path)


def test_position_of_reads_the_four_axes_from_tags():
    assert position_of(STRICT_ISTIO_MUTUAL.split("/")).row == ("sidecar", "sidecar", "strict")
    assert position_of(["client-no-sidecar", "server-sidecar", "pa-none", "dr-none"]).dr == "none"
    aliased = position_of(["naked-client", "server-sidecar", "pa-UNSET", "dr-ISTIO_MUTUAL"])
    assert aliased == Position("no-sidecar", "sidecar", "unset", "istio-mutual")
    assert position_of(["client-sidecar", "server-sidecar", "pa-strict"]) is None  # no DR axis
    assert position_of(["client-sidecar", "server-sidecar", "pa-bogus", "dr-none"]) is None


def test_html_fills_each_cell_with_its_observed_wire_class_and_marks_the_mismatch(two_cells):
    page = to_html(build_matrix(two_cells), links={STRICT_DISABLE: "allure-report/index.html#/abc"})
    assert page.count('class="cell mtls"') == 1  # the passing STRICT/ISTIO_MUTUAL cell
    mismatch = page.split('class="cell cleartext mismatch"', 1)[1].split("</td>", 1)[0]
    assert f'data-cell="{STRICT_DISABLE}"' in mismatch and 'data-expected-class="mtls"' in mismatch
    assert "✗ expected ● Istio mTLS<br>observed ○ cleartext" in mismatch
    assert 'href="allure-report/index.html#/abc"' in mismatch  # a click opens its Allure page
    tip = mismatch.split('<div class="tip">', 1)[1]
    assert "rule: test-rule" in tip and "PLAINTEXT LEAK" in tip and "canary_in_clear: True" in tip
    assert page.count('class="cell not-run"') == 98  # the other cells of the 100 were not run
    assert "<b>1</b> encrypted (1 Istio mTLS, 0 other TLS) · <b>1</b> cleartext · <b>0</b> refused · <b>1</b> " \
           "mismatched" in page
    for label in ("● Istio mTLS", "◐ other TLS", "○ cleartext", "⊘ refused"):
        assert label in page.split('class="legend"', 1)[1].split("</p>", 1)[0]


def test_all_passing_cells_have_no_mismatch_mark(tmp_path):
    record(tmp_path, STRICT_ISTIO_MUTUAL)
    page = to_html(build_matrix(read_cells(tmp_path)))
    table = page.split('<table class="matrix"', 1)[1]
    assert " mismatch" not in table and "✗" not in table


@pytest.mark.parametrize("outcome,wire,expected", [
    ("mtls", "mtls", MTLS_CLASS), ("mtls", "app-tls", OTHER_TLS), ("200-app-tls", "app-tls", OTHER_TLS),
    ("plaintext", "plaintext", CLEARTEXT), ("mtls", "plaintext", CLEARTEXT), ("503", "plaintext", REFUSED),
    ("reset", "plaintext", REFUSED), ("timeout", None, REFUSED), ("503", "", REFUSED), ("mtls", None, MTLS_CLASS),
    ("error", None, NOT_RUN)])
def test_outcome_and_wire_map_to_one_class(outcome, wire, expected):
    assert classify(outcome, wire) is expected


def test_markdown_has_both_classes_in_the_right_row_and_column(two_cells):
    lines = to_markdown(build_matrix(two_cells)).splitlines()
    header = next(line for line in lines if line.startswith("| client → server"))
    strict_rows = [line for line in lines if "| STRICT |" in line]
    row = strict_rows[0]  # the first group: sidecar -> sidecar
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[columns.index("DISABLE")] == "**✗ expected ● Istio mTLS / observed ○ cleartext**"
    assert cells[columns.index("ISTIO_MUTUAL")] == "● Istio mTLS"


def test_cells_outside_the_matrix_are_listed_separately(tmp_path):
    record(tmp_path, "scope/workload-over-namespace", passed=False, observed={**MTLS, "outcome": "503"},
           message="UNEXPECTED OUTCOME: outcome differ")
    matrix = build_matrix(read_cells(tmp_path))
    assert matrix.cells == {} and [r.cell for r in matrix.others] == ["scope/workload-over-namespace"]
    assert "`scope/workload-over-namespace`: UNEXPECTED OUTCOME" in to_markdown(matrix)


def _pixels_of(png, colour: str) -> int:
    image = imread(png)[:, :, :3]
    want = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    close = abs(image[:, :, 0] - want[0]) + abs(image[:, :, 1] - want[1]) + abs(image[:, :, 2] - want[2]) < 0.05
    return int(close.sum())


def _black_pixels(png) -> int:
    image = imread(png)[:, :, :3]
    return int((image.sum(axis=2) < 0.1).sum())


def test_png_colours_cells_by_wire_class_and_borders_the_mismatch(two_cells, tmp_path):
    paths = write_matrix(two_cells, tmp_path / "with-leak")
    assert set(paths) == {"html", "png", "md"} and all(p.exists() for p in paths.values())
    assert _pixels_of(paths["png"], MTLS_CLASS.colour) > 2000  # one whole cell
    assert _pixels_of(paths["png"], CLEARTEXT.colour) > 1000  # the leak, hatched
    passing = write_matrix([r for r in two_cells if r.passed], tmp_path / "no-leak")["png"]
    # The cleartext cell and its heavy border are gone: only the legend's swatch stays orange.
    assert _pixels_of(passing, CLEARTEXT.colour) < _pixels_of(paths["png"], CLEARTEXT.colour) / 4
    assert _black_pixels(passing) < _black_pixels(paths["png"]) - 500


def test_each_worker_writes_its_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    path = record(tmp_path, STRICT_ISTIO_MUTUAL)
    assert path.name == "gw3.jsonl"
    assert json.loads(path.read_text())["worker"] == "gw3"


def test_a_rerun_cell_keeps_its_latest_record(tmp_path):
    record(tmp_path, STRICT_DISABLE, passed=False)
    record(tmp_path, STRICT_DISABLE, passed=True)
    (cell,) = read_cells(tmp_path)
    assert cell.passed


def test_results_dir_with_cells_subdir_is_read(tmp_path):
    record(tmp_path / "cells", STRICT_DISABLE)
    assert [r.cell for r in read_cells(tmp_path)] == [STRICT_DISABLE]


def test_malformed_cell_line_names_file_line_and_field(tmp_path):
    path = record(tmp_path, STRICT_DISABLE)
    with path.open("a") as out:
        out.write(json.dumps({"cell": "x", "passed": "yes", "expected": {}, "observed": {}}) + "\n")
    with pytest.raises(CellsError, match=rf"{path.name}:2: field 'passed' must be bool, got str"):
        read_cells(tmp_path)


def test_record_cell_refuses_unknown_fields(tmp_path):
    with pytest.raises(TypeError, match="unknown field"):
        record(tmp_path, STRICT_DISABLE, outcome="mtls")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_png_draws_cells_outside_the_matrix_below_it(two_cells, tmp_path):
    record(tmp_path / "scope", "scope/dr-istio-mutual-custom-sni", observed={**MTLS, "wire": "app-tls"})
    others = read_cells(tmp_path / "scope")
    with_other = write_matrix([*two_cells, *others], tmp_path / "with-other")["png"]
    without = write_matrix(two_cells, tmp_path / "without")["png"]
    # The scope cell's tile is other TLS's sky blue; only the legend's swatch has that colour otherwise.
    assert _pixels_of(with_other, OTHER_TLS.colour) > _pixels_of(without, OTHER_TLS.colour) + 2000


PORT_CELL = "ports/banner/web/sidecars-both/pa-permissive/dr-none"
DESTINATION_CELL = "destinations/headless/sidecars-both/pa-strict"


def test_ports_and_destinations_get_a_section_each_by_wire_class(two_cells, tmp_path):
    record(tmp_path / "suites", PORT_CELL, passed=False, observed={**MTLS, "outcome": "timeout", "wire": "none"},
           message="UNEXPECTED OUTCOME: outcome differ")
    record(tmp_path / "suites", DESTINATION_CELL, observed={**MTLS, "wire": "app-tls"})
    record(tmp_path / "suites", "scope/pa-mesh-strict")
    suites = read_cells(tmp_path / "suites")
    matrix = build_matrix([*two_cells, *suites])
    assert [g.grid.suite for g in matrix.grids] == ["ports", "destinations"]
    ports = matrix.grids[0]
    assert ports.rows == [("banner", "web")] and ports.columns == [("sidecars-both", "pa-permissive", "dr-none")]
    assert [r.cell for r in matrix.others] == ["scope/pa-mesh-strict"] and len(matrix.cells) == 2
    page = to_html(matrix)
    section = page.split('data-suite="ports"')[1].split("</table>")[0]
    assert f'data-cell="{PORT_CELL}"' in section and 'class="cell refused mismatch"' in section
    assert 'data-suite="destinations"' in page and f'data-cell="{DESTINATION_CELL}" data-class="tls"' in page
    markdown = to_markdown(matrix)
    assert "#### Ports" in markdown and "| banner · web | **✗ expected ● Istio mTLS / observed ⊘ refused timeout** |" \
        in markdown
    assert "ports: 1 cells: 0 encrypted" in markdown and "sidecar → sidecar · PERMISSIVE · no DR" in markdown
    with_suites = write_matrix([*two_cells, *suites], tmp_path / "with-suites")["png"]
    without = write_matrix(two_cells, tmp_path / "without")["png"]
    # The headless cell's tile is other TLS's sky blue; the timeout's is refused's yellow.
    assert _pixels_of(with_suites, OTHER_TLS.colour) > _pixels_of(without, OTHER_TLS.colour) + 1000
    assert _pixels_of(with_suites, REFUSED.colour) > _pixels_of(without, REFUSED.colour) + 1000
    # A run of those suites alone draws their grids, not a matrix of 100 cells "not run".
    assert _pixels_of(write_matrix(suites, tmp_path / "alone")["png"], NOT_RUN.colour) < 1000 < \
        _pixels_of(without, NOT_RUN.colour)
