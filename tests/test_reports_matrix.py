"""The matrix picture and the cell records it is drawn from: a red cell renders red, with an X."""

import json

import pytest
from matplotlib.image import imread

from reports.cells import CellsError, read_cells, record_cell
from reports.matrix import Position, build_matrix, position_of, to_html, to_markdown, write_matrix

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
    record(tmp_path, STRICT_DISABLE, passed=False, observed={**MTLS, "outcome": "plaintext", "wire": "plaintext"},
           message="PLAINTEXT LEAK: canary seen in cleartext")
    return read_cells(tmp_path)


def test_position_of_reads_the_four_axes_from_tags():
    assert position_of(STRICT_ISTIO_MUTUAL.split("/")).row == ("sidecar", "sidecar", "strict")
    assert position_of(["client-no-sidecar", "server-sidecar", "pa-none", "dr-none"]).dr == "none"
    aliased = position_of(["naked-client", "server-sidecar", "pa-UNSET", "dr-ISTIO_MUTUAL"])
    assert aliased == Position("no-sidecar", "sidecar", "unset", "istio-mutual")
    assert position_of(["client-sidecar", "server-sidecar", "pa-strict"]) is None  # no DR axis
    assert position_of(["client-sidecar", "server-sidecar", "pa-bogus", "dr-none"]) is None


def test_html_marks_the_different_cell_red_with_x(two_cells):
    page = to_html(build_matrix(two_cells))
    assert '<td class="bad"' in page and page.count('<td class="bad"') == 1
    bad_cell = page.split('<td class="bad"', 1)[1].split("</td>", 1)[0]
    assert '<span class="marker">X</span>' in bad_cell
    assert "mtls-&gt;plaintext" in bad_cell and STRICT_DISABLE in bad_cell
    assert page.count('<td class="ok"') == 1
    assert page.count('<td class="missing"') == 98  # the other cells of the 100 were not run
    assert "2 matrix cells: 1 as expected, 1 different, 98 not run" in page


def test_all_passing_cells_render_no_red(tmp_path):
    record(tmp_path, STRICT_ISTIO_MUTUAL)
    page = to_html(build_matrix(read_cells(tmp_path)))
    assert '<td class="bad"' not in page and '<span class="marker">X</span>' not in page


def test_markdown_has_x_in_the_right_row_and_column(two_cells):
    lines = to_markdown(build_matrix(two_cells)).splitlines()
    header = next(line for line in lines if line.startswith("| client -> server"))
    row = next(line for line in lines if line.startswith("| client sidecar -> server sidecar, PA strict |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[columns.index("DR disable")] == "**X mtls->plaintext**"
    assert cells[columns.index("DR istio-mutual")] == ". mtls"


def test_cells_outside_the_matrix_are_listed_separately(tmp_path):
    record(tmp_path, "scope/workload-over-namespace", passed=False, observed={**MTLS, "outcome": "503"},
           message="UNEXPECTED OUTCOME: outcome differ")
    matrix = build_matrix(read_cells(tmp_path))
    assert matrix.cells == {} and [r.cell for r in matrix.others] == ["scope/workload-over-namespace"]
    assert "`scope/workload-over-namespace`: UNEXPECTED OUTCOME" in to_markdown(matrix)


def _red_pixels(png) -> int:
    image = imread(png)[:, :, :3]
    red = (image[:, :, 0] > 0.75) & (image[:, :, 1] < 0.3) & (image[:, :, 2] < 0.3)
    return int(red.sum())


def test_png_heatmap_is_red_only_where_a_cell_differs(two_cells, tmp_path):
    paths = write_matrix(two_cells, tmp_path / "with-red")
    assert set(paths) == {"html", "png", "md"} and all(p.exists() for p in paths.values())
    assert _red_pixels(paths["png"]) > 1000  # one whole cell

    passing = [r for r in two_cells if r.passed]
    assert _red_pixels(write_matrix(passing, tmp_path / "all-green")["png"]) == 0


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
